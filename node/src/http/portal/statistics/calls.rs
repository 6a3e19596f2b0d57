//! The statistics page's API-call table (接口调用): per 接口 resource, side and other member —
//! calls, answered, refused, failed and latency (median, 99th percentile) — read from this
//! node's call log over the page's window, at most 90 days ([`crate::call_stats`]).

use super::tables::{Cell, Table};
use crate::call_stats::{Stats, Tally};

/// The calls of one resource with one other member, as counted.
#[derive(Clone, Debug)]
pub(crate) struct CallFact {
    /// `consumer` (this node called) or `provider` (this node answered).
    pub(crate) side: &'static str,
    pub(crate) code: String,
    /// The other member's name.
    pub(crate) peer: String,
    /// The other member is this node (its own systems calling its own service: logged on both
    /// sides here).
    pub(crate) own: bool,
    pub(crate) tally: Tally,
}

/// The calls of the window.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallFacts {
    pub(crate) rows: Vec<CallFact>,
    /// The read stopped at [`crate::call_stats::MAX_SCANNED`] calls before the window's start.
    pub(crate) cut: bool,
}

/// The facts of a statistics read on node `me`, each peer named by `name`.
pub(crate) fn facts(
    st: Stats,
    me: &huitong_protocol::NodeId,
    name: impl Fn(&huitong_protocol::NodeId) -> String,
) -> CallFacts {
    CallFacts {
        rows: st
            .peers
            .into_iter()
            .map(|((side, code, peer), tally)| CallFact {
                side: side.as_str(),
                code,
                peer: name(&peer),
                own: peer == *me,
                tally,
            })
            .collect(),
        cut: st.cut,
    }
}

impl CallFacts {
    /// Calls in all, each once (a call of this node's own systems to its own service is logged
    /// on both sides).
    pub(crate) fn total(&self) -> u64 {
        self.rows
            .iter()
            .filter(|c| !(c.own && c.side == "consumer"))
            .map(|c| c.tally.calls)
            .sum()
    }
}

/// Milliseconds from microseconds, as shown ("0.42").
fn ms(us: u64) -> Cell {
    let v = us as f64 / 1000.0;
    Cell {
        text: format!("{v:.2}"),
        number: Some(v),
    }
}

/// The table: one row per resource, side and peer, busiest first.
pub(crate) fn table(calls: &CallFacts, en: bool) -> Table {
    let t = |zh: &str, e: &str| if en { e.to_string() } else { zh.to_string() };
    let mut rows: Vec<&CallFact> = calls.rows.iter().collect();
    rows.sort_by(|a, b| {
        b.tally
            .calls
            .cmp(&a.tally.calls)
            .then_with(|| (&a.code, a.side, &a.peer).cmp(&(&b.code, b.side, &b.peer)))
    });
    Table {
        id: "calls",
        title: if calls.cut {
            t(
                "接口调用（本节点调用日志，仅计最近 1,000,000 次）",
                "API calls (this node's call log, the latest 1,000,000 only)",
            )
        } else {
            t(
                "接口调用（本节点调用日志）",
                "API calls (this node's call log)",
            )
        },
        headers: vec![
            t("资源代码", "Code"),
            t("本节点为", "This node"),
            t("对方", "Other member"),
            t("调用", "Calls"),
            t("成功", "Answered"),
            t("拒绝", "Refused"),
            t("失败", "Failed"),
            t("中位耗时(ms)", "p50 (ms)"),
            t("P99 耗时(ms)", "p99 (ms)"),
        ],
        rows: rows
            .into_iter()
            .map(|c| {
                let side = match (c.side, en) {
                    ("provider", false) => "提供方",
                    ("provider", true) => "provider",
                    (_, false) => "调用方",
                    (_, true) => "consumer",
                };
                vec![
                    Cell::text(c.code.clone()),
                    Cell::text(side),
                    Cell::text(c.peer.clone()),
                    Cell::count(c.tally.calls),
                    Cell::count(c.tally.ok),
                    Cell::count(c.tally.refused),
                    Cell::count(c.tally.failed),
                    ms(c.tally.p50_us),
                    ms(c.tally.p99_us),
                ]
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_first_with_latency_in_ms() {
        let fact = |code: &str, calls: u64| CallFact {
            side: "consumer",
            code: code.into(),
            peer: "公安局".into(),
            own: false,
            tally: Tally {
                calls,
                ok: calls - 1,
                refused: 1,
                failed: 0,
                p50_us: 420,
                p99_us: 12_345,
                max_us: 20_000,
            },
        };
        let t = table(
            &CallFacts {
                rows: vec![fact("a", 2), fact("b", 9)],
                cut: false,
            },
            false,
        );
        assert_eq!(t.rows.len(), 2);
        let texts: Vec<&str> = t.rows[0].iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            ["b", "调用方", "公安局", "9", "8", "1", "0", "0.42", "12.35"]
        );
        assert_eq!(t.rows[1][0].text, "a");
    }

    #[test]
    fn a_nodes_own_calls_count_once_in_the_total() {
        let fact = |side: &'static str, own: bool, calls: u64| CallFact {
            side,
            code: "a".into(),
            peer: "x".into(),
            own,
            tally: Tally {
                calls,
                ..Tally::default()
            },
        };
        let f = CallFacts {
            rows: vec![
                fact("consumer", true, 3),
                fact("provider", true, 3),
                fact("provider", false, 5),
                fact("consumer", false, 7),
            ],
            cut: false,
        };
        assert_eq!(f.total(), 15);
    }
}
