//! When a source's runs start: its `schedule` — a cron expression (5 fields, in the federation's
//! time zone), `manual`, or `update_cycle` (the default), which follows the entry's 更新周期:
//!
//! | 更新周期 | runs |
//! |---|---|
//! | 实时 | every minute (unchanged data makes no version) |
//! | 每日 | 02:00 every day |
//! | 每周 | 02:00 on Mondays |
//! | 每月 | 02:00 on the 1st |
//! | 每季度 | 02:00 on 1 January, April, July, October |
//! | 每半年 | 02:00 on 1 January and July |
//! | 每年 | 02:00 on 1 January |
//! | 不定期 | by hand only |
//!
//! A folder source also takes `watch` (its default): it is looked at every [`WATCH_EVERY`], and
//! a complete file is taken at once.
//!
//! Layering: a leaf.

use chrono::TimeZone as _;
use croner::Cron;
use huitong_protocol::catalogue::UpdateCycle;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum When {
    /// At the times the expression gives.
    Cron(Box<Cron>),
    /// Only by hand.
    Manual,
    /// A folder looked at every [`WATCH_EVERY`].
    Watch,
}

/// How often a watched folder is looked at.
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The cron expression a 更新周期 stands for (`None`: by hand only).
pub fn of_cycle(cycle: UpdateCycle) -> Option<&'static str> {
    Some(match cycle {
        UpdateCycle::Realtime => "* * * * *",
        UpdateCycle::Daily => "0 2 * * *",
        UpdateCycle::Weekly => "0 2 * * 1",
        UpdateCycle::Monthly => "0 2 1 * *",
        UpdateCycle::Quarterly => "0 2 1 1,4,7,10 *",
        UpdateCycle::HalfYearly => "0 2 1 1,7 *",
        UpdateCycle::Yearly => "0 2 1 1 *",
        UpdateCycle::Irregular => return None,
    })
}

/// Parses `schedule` for an entry updated every `cycle`; the error says what is wrong.
pub fn parse(schedule: &str, cycle: UpdateCycle) -> Result<When, String> {
    let expr = match schedule {
        "manual" => return Ok(When::Manual),
        "watch" => return Ok(When::Watch),
        "update_cycle" => match of_cycle(cycle) {
            Some(e) => e,
            None => return Ok(When::Manual),
        },
        other => other,
    };
    if expr.split_whitespace().count() != 5 {
        return Err(format!(
            "schedule {expr:?} must have 5 fields: minute hour day month weekday"
        ));
    }
    expr.parse::<Cron>()
        .map(|c| When::Cron(Box::new(c)))
        .map_err(|e| format!("schedule {expr:?} is not a cron expression: {e}"))
}

/// The first start after `after_ms` (ms since the epoch) in zone `tz`; `None` for by hand only
/// or an expression that never fires.
pub fn next_after(when: &When, tz: chrono_tz::Tz, after_ms: u64) -> Option<u64> {
    let cron = match when {
        When::Cron(cron) => cron,
        When::Manual => return None,
        When::Watch => return after_ms.checked_add(WATCH_EVERY.as_millis() as u64),
    };
    let after = tz
        .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
        .single()?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_cycle_and_cron_give_the_next_start_in_the_federation_zone() {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        // 2026-12-03 10:00:00 +08:00.
        let now = tz
            .with_ymd_and_hms(2026, 12, 3, 10, 0, 0)
            .unwrap()
            .timestamp_millis() as u64;
        let daily = parse("update_cycle", UpdateCycle::Daily).unwrap();
        let next = tz.timestamp_millis_opt(next_after(&daily, tz, now).unwrap() as i64);
        assert_eq!(next.unwrap().to_rfc3339(), "2026-12-04T02:00:00+08:00");
        let minute = parse("*/5 * * * *", UpdateCycle::Yearly).unwrap();
        assert_eq!(next_after(&minute, tz, now), Some(now + 5 * 60_000));
        assert!(matches!(
            parse("update_cycle", UpdateCycle::Irregular).unwrap(),
            When::Manual
        ));
        assert!(parse("61 * * * *", UpdateCycle::Daily).is_err());
        assert!(parse("0 2 * *", UpdateCycle::Daily).is_err());
    }
}
