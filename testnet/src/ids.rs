//! Realistic identifiers for demo data: USCCs of district bodies (GB 32100 with a GB 11714
//! organisation code inside) and 身份证号 (GB 11643 check digit).

use huitong_protocol::uscc::check_character;

/// The administrative division code of 海门区 (Nantong, Jiangsu).
pub const HAIMEN_DIVISION: &str = "320614";
/// The division code of 南通市.
pub const NANTONG_DIVISION: &str = "320600";

/// GB 11714 check character of an 8-character organisation code body.
pub fn org_code_check(body: &str) -> char {
    const W: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(36).unwrap_or(0) * w)
        .sum();
    match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from_digit(n, 10).unwrap_or('0'),
    }
}

/// The USCC of a government organ (登记管理部门 1 机构编制, 类别 1 机关) in `division`, with
/// organisation code body `body` (8 digits).
pub fn government_uscc(division: &str, body: &str) -> String {
    uscc("11", division, body)
}

/// A USCC with the two-character registration prefix (`11` organ, `91` enterprise, …), the
/// division and an 8-digit organisation code body (its GB 11714 check character is added).
pub fn uscc(prefix: &str, division: &str, body: &str) -> String {
    let mut org = body.to_owned();
    let c = org_code_check(body);
    // GB 32100 forbids some letters; an X check digit is allowed (X is in its alphabet).
    org.push(c);
    let first17 = format!("{prefix}{division}{org}");
    let check = check_character(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// GB 11643 check digit of the first 17 digits of a 身份证号.
pub fn id_card_check(first17: &str) -> char {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const C: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = first17
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    C[(sum % 11) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::Uscc;

    #[test]
    fn generated_codes_verify() {
        for i in 0..50u32 {
            let u = government_uscc(HAIMEN_DIVISION, &format!("{:08}", 1_400_000 + i * 7919));
            assert!(Uscc::parse(&u).is_ok(), "{u}");
        }
        // The GB 11643 example number.
        assert_eq!(id_card_check("11010519491231002"), 'X');
    }
}
