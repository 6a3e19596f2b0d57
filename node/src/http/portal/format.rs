//! How the portal writes values people read: dates as `2026-12-01` and times in the
//! federation's time zone, sizes in KB/MB/GB, numbers with thousands separators, and the
//! colour class of each share type and 开放属性 badge (always with its text, never colour alone).

use huitong_protocol::catalogue::{OpenType, ShareType};

/// `ms` since the epoch as `YYYY-MM-DD HH:MM` in time zone `tz`.
pub(crate) fn time(tz: chrono_tz::Tz, ms: u64) -> String {
    use chrono::TimeZone;
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match tz.timestamp_opt(secs, 0) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        _ => String::new(),
    }
}

/// A byte count in B, KB, MB or GB (powers of 1024, one decimal above KB).
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `n` with thousands separators.
pub(crate) fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The badge class of a share type.
pub(crate) fn share_class(s: ShareType) -> &'static str {
    match s {
        ShareType::Unconditional => "ok",
        ShareType::Conditional => "warn",
        ShareType::None => "off",
    }
}

/// The badge class of an 开放属性.
pub(crate) fn open_class(o: OpenType) -> &'static str {
    match o {
        OpenType::Open => "ok",
        OpenType::Conditional => "warn",
        OpenType::Closed => "off",
    }
}

/// The badge class of an application state.
pub(crate) fn state_class(state: &str) -> &'static str {
    match state {
        "granted" | "approved" => "ok",
        "submitted" | "accepted" => "warn",
        _ => "off",
    }
}

/// An application state in Chinese.
pub(crate) fn state_label(state: &str) -> &'static str {
    match state {
        "submitted" => "已提交",
        "accepted" => "已受理",
        "approved" => "已批准",
        "granted" => "已授权",
        "rejected" => "已驳回",
        "revoked" => "已撤销",
        "expired" => "已过期",
        _ => "未知",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_000), "1,000");
        assert_eq!(number(12_345_678), "12,345,678");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(2048), "2 KB");
        assert_eq!(size(5 * 1024 * 1024 + 512 * 1024), "5.5 MB");
        // 2026-12-01 00:00 in Beijing is 2026-11-30 16:00 UTC.
        assert_eq!(
            time(chrono_tz::Asia::Shanghai, 1_796_054_400_000),
            "2026-12-01 00:00"
        );
    }
}
