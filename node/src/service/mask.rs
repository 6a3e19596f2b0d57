//! 脱敏: how a masked 信息项's value is returned, chosen by the item's name — ID numbers
//! (身份证, 身份号码 as in 公民身份号码, 证件号) keep their first 6 and last 4 characters, phone numbers (电话, 手机) their
//! first 3 and last 4, names (姓名) their first character; anything else keeps its first and last
//! quarter. At least a third of a value is always masked (a value too short for its kind's rule
//! keeps its first and last quarter). Masked characters become `*`; a value of 2 characters or
//! fewer is all `*`.

/// `value` of 信息项 `item`, masked.
pub fn mask(item: &str, value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    if n <= 2 {
        return "*".repeat(n);
    }
    let (head, tail) = if ["身份证", "身份号码", "证件号"]
        .iter()
        .any(|k| item.contains(k))
    {
        (6, 4)
    } else if item.contains("电话") || item.contains("手机") {
        (3, 4)
    } else if item.contains("姓名") {
        (1, 0)
    } else {
        (n / 4, n / 4)
    };
    // At least a third of the characters are masked: a value too short for its kind's rule
    // (a 9-character passport number under 6 + 4) keeps only its first and last quarter.
    let (head, tail) = if (head + tail) * 3 > n * 2 {
        (n / 4, n / 4)
    } else {
        (head, tail)
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < head || i >= n - tail { *c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_by_their_kind() {
        assert_eq!(mask("身份证号", "320684199001011234"), "320684********1234");
        // GB/T 21063's name for the same number, used by the demo population table.
        assert_eq!(
            mask("公民身份号码", "32068419900101123X"),
            "320684********123X"
        );
        // Too short for 6 + 4: its first and last quarter only.
        assert_eq!(mask("证件号码", "G12345678"), "G1*****78");
        assert_eq!(mask("联系电话", "13912345678"), "139****5678");
        assert_eq!(mask("姓名", "张三丰"), "张**");
        assert_eq!(mask("地址", "江苏省海门市北京路1号"), "江苏*******1号");
        assert_eq!(mask("姓名", "张三"), "**");
        assert_eq!(mask("x", ""), "");
        // Short ID numbers still hide something.
        assert_eq!(mask("身份证号", "1234567"), "1*****7");
        assert_eq!(mask("地址", "abc"), "***");
    }
}
