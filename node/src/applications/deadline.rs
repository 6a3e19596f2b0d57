//! 办理时限: the day by which an approver decides an application, counted in working days
//! (Monday to Friday) from the day the hub accepted it, in federation time. Public holidays
//! and make-up working days (调休) are not known to the node and are not counted apart.

use chrono::{Datelike, Duration, NaiveDate, Weekday};

fn is_working_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn parse(date: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// The day `n` working days after `start` (`YYYY-MM-DD`): accepted on a Monday with 5 days,
/// due the next Monday.
pub fn due(start: &str, n: u32) -> Option<String> {
    let mut d = parse(start)?;
    let mut left = n;
    while left > 0 {
        d = d.checked_add_signed(Duration::days(1))?;
        if is_working_day(d) {
            left -= 1;
        }
    }
    Some(d.format("%Y-%m-%d").to_string())
}

/// Working days from `today` until `due` (0 on the day itself, negative once past it).
pub fn working_days_left(today: &str, due: &str) -> Option<i64> {
    let (today, due) = (parse(today)?, parse(due)?);
    let (from, to, sign) = if today <= due {
        (today, due, 1)
    } else {
        (due, today, -1)
    };
    let mut n = 0i64;
    let mut d = from;
    while d < to {
        d = d.checked_add_signed(Duration::days(1))?;
        if is_working_day(d) {
            n += 1;
        }
    }
    Some(sign * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_days_skip_weekends() {
        // 2026-12-07 is a Monday.
        assert_eq!(due("2026-12-07", 5).as_deref(), Some("2026-12-14"));
        // Accepted on a Friday: due the next Friday.
        assert_eq!(due("2026-12-04", 5).as_deref(), Some("2026-12-11"));
        // Accepted on a Saturday: Monday is the first working day.
        assert_eq!(due("2026-12-05", 1).as_deref(), Some("2026-12-07"));
        assert_eq!(due("not a date", 5), None);
        assert_eq!(working_days_left("2026-12-07", "2026-12-14"), Some(5));
        assert_eq!(working_days_left("2026-12-14", "2026-12-14"), Some(0));
        assert_eq!(working_days_left("2026-12-15", "2026-12-14"), Some(-1));
        // Over a weekend only the working days count.
        assert_eq!(working_days_left("2026-12-11", "2026-12-14"), Some(1));
    }
}
