//! The statistics' tables (共享效益评价), computed from facts the node holds: catalogue entries
//! and their latest versions, pull receipts, and applications with their timelines. Pure: the
//! page gathers the facts, these functions count them.

use std::collections::{BTreeMap, BTreeSet};

/// A catalogue entry, as counted.
#[derive(Clone, Debug)]
pub(crate) struct EntryFact {
    pub(crate) dept: String,
    pub(crate) code: String,
    pub(crate) title: String,
    /// Versions published (the latest version's number).
    pub(crate) versions: u64,
    /// Rows of the latest version (tables).
    pub(crate) rows: u64,
}

/// A pull, from its receipt.
#[derive(Clone, Debug)]
pub(crate) struct PullFact {
    pub(crate) provider: String,
    pub(crate) consumer: String,
    pub(crate) code: String,
    pub(crate) bytes: u64,
    pub(crate) at_ms: u64,
}

/// An application, from its timeline.
#[derive(Clone, Debug)]
pub(crate) struct AppFact {
    pub(crate) provider: String,
    pub(crate) code: String,
    pub(crate) state: String,
    pub(crate) submitted_ms: u64,
    /// When the provider approved it, if it did.
    pub(crate) approved_ms: Option<u64>,
}

/// A table cell: its text, and its number for a spreadsheet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cell {
    pub(crate) text: String,
    pub(crate) number: Option<f64>,
}

impl Cell {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Self {
            text: s.into(),
            number: None,
        }
    }

    pub(crate) fn count(n: u64) -> Self {
        Self {
            text: super::super::format::number(n),
            number: Some(n as f64),
        }
    }

    fn bytes(n: u64) -> Self {
        Self {
            text: super::super::format::size(n),
            number: Some(n as f64),
        }
    }
}

/// One table of the page, exported as it is shown.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    /// Its name in the export's URL and file name.
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) headers: Vec<String>,
    pub(crate) rows: Vec<Vec<Cell>>,
}

/// Hours as text ("3.5 h" / "2.1 d"), for the median approval time.
fn duration_text(ms: u64, en: bool) -> String {
    let hours = ms as f64 / 3_600_000.0;
    if hours < 48.0 {
        format!("{hours:.1} {}", if en { "h" } else { "小时" })
    } else {
        format!("{:.1} {}", hours / 24.0, if en { "d" } else { "天" })
    }
}

/// The median of `v` (sorted in place), `None` when empty.
fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        v[mid - 1] / 2 + v[mid] / 2 + (v[mid - 1] % 2 + v[mid] % 2) / 2
    } else {
        v[mid]
    })
}

/// Per department: entries, versions, rows, pulls and bytes served and received, applications
/// received by outcome, and the median time from submission to approval.
pub(crate) fn departments(
    entries: &[EntryFact],
    pulls: &[PullFact],
    apps: &[AppFact],
    en: bool,
) -> Table {
    #[derive(Default)]
    struct Dept {
        entries: u64,
        versions: u64,
        rows: u64,
        served: (u64, u64),
        received: (u64, u64),
        apps: u64,
        granted: u64,
        rejected: u64,
        waits: Vec<u64>,
    }
    let mut by: BTreeMap<&str, Dept> = BTreeMap::new();
    for e in entries {
        let d = by.entry(&e.dept).or_default();
        d.entries += 1;
        d.versions = d.versions.saturating_add(e.versions);
        d.rows = d.rows.saturating_add(e.rows);
    }
    for p in pulls {
        let d = by.entry(&p.provider).or_default();
        d.served.0 += 1;
        d.served.1 = d.served.1.saturating_add(p.bytes);
        let d = by.entry(&p.consumer).or_default();
        d.received.0 += 1;
        d.received.1 = d.received.1.saturating_add(p.bytes);
    }
    for a in apps {
        let d = by.entry(&a.provider).or_default();
        d.apps += 1;
        match a.state.as_str() {
            "granted" | "expired" | "revoked" => d.granted += 1,
            "rejected" => d.rejected += 1,
            _ => {}
        }
        if let Some(at) = a.approved_ms {
            d.waits.push(at.saturating_sub(a.submitted_ms));
        }
    }
    let t = |zh: &str, e: &str| if en { e.to_string() } else { zh.to_string() };
    Table {
        id: "departments",
        title: t("按部门", "By department"),
        headers: vec![
            t("部门", "Department"),
            t("目录数", "Entries"),
            t("数据版本", "Versions"),
            t("数据行数", "Rows"),
            t("提供次数", "Pulls served"),
            t("提供数据量", "Bytes served"),
            t("获取次数", "Pulls received"),
            t("获取数据量", "Bytes received"),
            t("收到申请", "Applications received"),
            t("已授权", "Granted"),
            t("已驳回", "Rejected"),
            t("审批用时中位数", "Median time to approve"),
        ],
        rows: by
            .into_iter()
            .map(|(name, mut d)| {
                let wait = median(&mut d.waits);
                vec![
                    Cell::text(name),
                    Cell::count(d.entries),
                    Cell::count(d.versions),
                    Cell::count(d.rows),
                    Cell::count(d.served.0),
                    Cell::bytes(d.served.1),
                    Cell::count(d.received.0),
                    Cell::bytes(d.received.1),
                    Cell::count(d.apps),
                    Cell::count(d.granted),
                    Cell::count(d.rejected),
                    Cell {
                        text: wait.map_or_else(|| "—".into(), |w| duration_text(w, en)),
                        number: wait.map(|w| w as f64 / 3_600_000.0),
                    },
                ]
            })
            .collect(),
    }
}

/// The most used resources: pulls, bytes, distinct consumers and applications, most pulled
/// first (at most `top`).
pub(crate) fn resources(
    entries: &[EntryFact],
    pulls: &[PullFact],
    apps: &[AppFact],
    top: usize,
    en: bool,
) -> Table {
    #[derive(Default)]
    struct Use<'a> {
        pulls: u64,
        bytes: u64,
        consumers: BTreeSet<&'a str>,
        apps: u64,
    }
    let mut by: BTreeMap<(&str, &str), Use> = BTreeMap::new();
    for p in pulls {
        let u = by.entry((&p.provider, &p.code)).or_default();
        u.pulls += 1;
        u.bytes = u.bytes.saturating_add(p.bytes);
        u.consumers.insert(&p.consumer);
    }
    for a in apps {
        by.entry((&a.provider, &a.code)).or_default().apps += 1;
    }
    let mut rows: Vec<((&str, &str), Use)> = by.into_iter().collect();
    rows.sort_by_key(|(k, u)| (std::cmp::Reverse((u.pulls, u.apps, u.bytes)), *k));
    let title = |dept: &str, code: &str| {
        entries
            .iter()
            .find(|e| e.dept == dept && e.code == code)
            .map_or_else(String::new, |e| e.title.clone())
    };
    let t = |zh: &str, e: &str| if en { e.to_string() } else { zh.to_string() };
    Table {
        id: "resources",
        title: t("最常用的资源", "Most used resources"),
        headers: vec![
            t("资源代码", "Code"),
            t("资源名称", "Title"),
            t("提供部门", "Provider"),
            t("拉取次数", "Pulls"),
            t("数据量", "Bytes"),
            t("使用部门数", "Consumers"),
            t("申请数", "Applications"),
        ],
        rows: rows
            .into_iter()
            .take(top)
            .map(|((dept, code), u)| {
                vec![
                    Cell::text(code),
                    Cell::text(title(dept, code)),
                    Cell::text(dept),
                    Cell::count(u.pulls),
                    Cell::bytes(u.bytes),
                    Cell::count(u.consumers.len() as u64),
                    Cell::count(u.apps),
                ]
            })
            .collect(),
    }
}

/// Applications by state.
pub(crate) fn application_states(apps: &[AppFact], en: bool) -> Table {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for a in apps {
        *by.entry(&a.state).or_default() += 1;
    }
    let t = |zh: &str, e: &str| if en { e.to_string() } else { zh.to_string() };
    Table {
        id: "applications",
        title: t("申请按状态", "Applications by state"),
        headers: vec![t("状态", "State"), t("数量", "Count")],
        rows: by
            .into_iter()
            .map(|(state, n)| {
                let label = if en {
                    state.to_string()
                } else {
                    super::super::format::state_label(state).to_string()
                };
                vec![Cell::text(label), Cell::count(n)]
            })
            .collect(),
    }
}

/// Over time: pulls, bytes and applications submitted in each period `labels` names (oldest
/// first); `label_of` gives a time's period.
pub(crate) fn over_time(
    pulls: &[PullFact],
    apps: &[AppFact],
    labels: &[String],
    label_of: impl Fn(u64) -> String,
    en: bool,
) -> Table {
    let mut by: BTreeMap<String, (u64, u64, u64)> =
        labels.iter().map(|l| (l.clone(), (0, 0, 0))).collect();
    for p in pulls {
        if let Some(b) = by.get_mut(&label_of(p.at_ms)) {
            b.0 += 1;
            b.1 = b.1.saturating_add(p.bytes);
        }
    }
    for a in apps {
        if let Some(b) = by.get_mut(&label_of(a.submitted_ms)) {
            b.2 += 1;
        }
    }
    let t = |zh: &str, e: &str| if en { e.to_string() } else { zh.to_string() };
    Table {
        id: "over_time",
        title: t("按时间", "Over time"),
        headers: vec![
            t("时段", "Period"),
            t("拉取次数", "Pulls"),
            t("数据量", "Bytes"),
            t("新申请", "New applications"),
        ],
        rows: labels
            .iter()
            .map(|l| {
                let (n, bytes, a) = by.get(l).copied().unwrap_or_default();
                vec![
                    Cell::text(l.clone()),
                    Cell::count(n),
                    Cell::bytes(bytes),
                    Cell::count(a),
                ]
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(p: &str, c: &str, code: &str, bytes: u64, at: u64) -> PullFact {
        PullFact {
            provider: p.into(),
            consumer: c.into(),
            code: code.into(),
            bytes,
            at_ms: at,
        }
    }

    fn app(p: &str, code: &str, state: &str, sub: u64, ok: Option<u64>) -> AppFact {
        AppFact {
            provider: p.into(),
            code: code.into(),
            state: state.into(),
            submitted_ms: sub,
            approved_ms: ok,
        }
    }

    #[test]
    fn the_median_of_huge_values_does_not_overflow() {
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), Some(u64::MAX));
        assert_eq!(median(&mut [3, 1, 2, 4]), Some(2));
        assert_eq!(median(&mut [1, 2]), Some(1));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn departments_count_both_sides_and_the_median_wait() {
        let entries = vec![EntryFact {
            dept: "公安".into(),
            code: "101001/000001".into(),
            title: "人口".into(),
            versions: 3,
            rows: 1000,
        }];
        let pulls = vec![
            pull("公安", "民政", "101001/000001", 100, 0),
            pull("公安", "民政", "101001/000001", 50, 0),
            pull("公安", "人社", "101001/000001", 10, 0),
        ];
        const H: u64 = 3_600_000;
        let apps = vec![
            app("公安", "101001/000001", "granted", 0, Some(2 * H)),
            app("公安", "101001/000001", "revoked", 0, Some(4 * H)),
            app("公安", "101001/000001", "rejected", 0, None),
            app("公安", "101001/000001", "approved", 0, Some(10 * H)),
        ];
        let t = departments(&entries, &pulls, &apps, true);
        let row = |name: &str| {
            t.rows
                .iter()
                .find(|r| r[0].text == name)
                .cloned()
                .unwrap_or_default()
        };
        let police = row("公安");
        let nums: Vec<Option<f64>> = police.iter().map(|c| c.number).collect();
        assert_eq!(
            nums,
            vec![
                None,
                Some(1.0),
                Some(3.0),
                Some(1000.0),
                Some(3.0),
                Some(160.0),
                Some(0.0),
                Some(0.0),
                Some(4.0),
                Some(2.0),
                Some(1.0),
                Some(4.0)
            ]
        );
        assert_eq!(row("民政")[6].number, Some(2.0));
        assert_eq!(row("民政")[7].number, Some(150.0));
        let r = resources(&entries, &pulls, &apps, 10, true);
        assert_eq!(r.rows[0][1].text, "人口");
        assert_eq!(r.rows[0][5].number, Some(2.0), "two distinct consumers");
    }

    #[test]
    fn over_time_fills_every_period_and_ignores_older_ones() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let pulls = vec![pull("x", "y", "c", 5, 1), pull("x", "y", "c", 7, 9)];
        let apps = vec![app("x", "c", "submitted", 2, None)];
        let t = over_time(
            &pulls,
            &apps,
            &labels,
            |ms| match ms {
                1 | 2 => "b".into(),
                _ => "old".into(),
            },
            true,
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][1].number, Some(0.0));
        assert_eq!(t.rows[1][1].number, Some(1.0));
        assert_eq!(t.rows[1][2].number, Some(5.0));
        assert_eq!(t.rows[1][3].number, Some(1.0));
    }
}
