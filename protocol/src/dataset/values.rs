//! The value rules of a 信息项: what text a cell of each 数据类型 may hold, and its 数据长度.
//!
//! Cells travel as text (exactly as published); an empty cell is a null and always allowed.
//! 数据长度 counts characters for text types and digits for numbers.

use crate::catalogue::DataType;

/// Why a value breaks its item's rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct ValueError {
    /// The rule, in words (e.g. `整型 (I): an integer such as -42`).
    pub rule: String,
}

fn fail(rule: impl Into<String>) -> Result<(), ValueError> {
    Err(ValueError { rule: rule.into() })
}

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.ends_with('.'))
}

fn is_integer(s: &str) -> bool {
    let d = s.strip_prefix(['-', '+']).unwrap_or(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && s.parse::<i64>().is_ok()
}

fn digits(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 0,
    }
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    // ASCII digits only (`u32::from_str` alone would take "+9").
    if !b
        .iter()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok());
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => y >= 1 && d >= 1 && d <= days_in_month(y, m),
        _ => false,
    }
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`).
fn is_datetime(s: &str) -> bool {
    if s.len() != 19 || !s.is_char_boundary(10) {
        return false;
    }
    let (date, rest) = s.split_at(10);
    let b = rest.as_bytes();
    if !(b[0] == b' ' || b[0] == b'T') || b[3] != b':' || b[6] != b':' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| rest.get(r).and_then(|t| t.parse::<u32>().ok());
    is_date(date)
        && matches!((num(1..3), num(4..6), num(7..9)), (Some(h), Some(m), Some(sec)) if h < 24 && m < 60 && sec < 60)
}

/// Checks one cell against its item's type and length. Empty cells (nulls) always pass.
pub fn check_value(
    data_type: DataType,
    length: Option<u32>,
    value: &str,
) -> Result<(), ValueError> {
    if value.is_empty() {
        return Ok(());
    }
    let max = length.map(|l| l as usize);
    match data_type {
        DataType::C | DataType::M | DataType::G => {
            let n = value.chars().count();
            if let Some(max) = max.filter(|m| n > *m) {
                return fail(format!("{} characters, more than the 数据长度 {max}", n));
            }
        }
        DataType::N | DataType::Y => {
            if !is_decimal(value) {
                return fail(format!(
                    "{} ({}): a decimal number such as -12.50",
                    data_type.label(),
                    data_type.key()
                ));
            }
            if let Some(max) = max.filter(|m| digits(value) > *m) {
                return fail(format!(
                    "{} digits, more than the 数据长度 {max}",
                    digits(value)
                ));
            }
        }
        DataType::I => {
            if !is_integer(value) {
                return fail("整型 (I): a 64-bit integer such as -42");
            }
            if let Some(max) = max.filter(|m| digits(value) > *m) {
                return fail(format!(
                    "{} digits, more than the 数据长度 {max}",
                    digits(value)
                ));
            }
        }
        DataType::B | DataType::F => {
            if value.parse::<f64>().map(|f| !f.is_finite()).unwrap_or(true) {
                return fail(format!(
                    "{} ({}): a finite number such as 3.14",
                    data_type.label(),
                    data_type.key()
                ));
            }
        }
        DataType::D => {
            if !is_date(value) {
                return fail("日期 (D): a date YYYY-MM-DD");
            }
        }
        DataType::T => {
            if !is_datetime(value) {
                return fail("日期时间 (T): YYYY-MM-DD HH:MM:SS");
            }
        }
        DataType::L => {
            if !matches!(value, "true" | "false" | "1" | "0" | "是" | "否") {
                return fail("逻辑 (L): true, false, 1, 0, 是 or 否");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check_value(DataType::C, Some(2), "海门").is_ok());
        assert!(check_value(DataType::C, Some(2), "海门区").is_err());
        assert!(check_value(DataType::I, None, "-42").is_ok());
        assert!(check_value(DataType::I, None, "4.2").is_err());
        assert!(check_value(DataType::N, Some(4), "12.50").is_ok());
        assert!(check_value(DataType::N, Some(3), "12.50").is_err());
        assert!(check_value(DataType::N, None, "1.").is_err());
        assert!(check_value(DataType::D, None, "2024-02-29").is_ok());
        assert!(check_value(DataType::D, None, "2023-02-29").is_err());
        assert!(check_value(DataType::T, None, "2024-01-01 23:59:59").is_ok());
        assert!(check_value(DataType::T, None, "2024-01-01 24:00:00").is_err());
        assert!(check_value(DataType::L, None, "是").is_ok());
        assert!(check_value(DataType::L, None, "yes").is_err());
        assert!(check_value(DataType::F, None, "NaN").is_err());
        assert!(check_value(DataType::F, None, "").is_ok());
    }
}
