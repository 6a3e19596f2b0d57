//! The statistics page (共享效益评价): per department and per resource — entries, versions,
//! rows, pulls and bytes served and received, applications by state, the median time to
//! approve, the most used resources — and pulls and applications over time (day, week or
//! month) as bar charts, and, for auditors (as on the API), the API calls of this node's call
//! log (接口调用, per resource and member, with latency) over the window shown; every table
//! downloads as CSV or XLSX. Counted from what this node
//! holds: a department's node sees its own pulls and applications, the hub the federation's;
//! applications are those the person may see on the API (a data user counts their own).

mod calls;
mod chart;
mod export;
mod tables;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Extension;
use chrono::TimeZone;
use serde::Deserialize;

use super::format;
use super::guard::Viewer;
use super::page::{show, Chrome, PageError, PageResult};
use crate::catalogue::{self, Filter};
use crate::http::Ctx;
use chart::Chart;
use tables::{AppFact, EntryFact, PullFact, Table};

/// The longest window of the API-calls table (days), as on the API.
const MAX_CALL_DAYS: i64 = 90;

/// Resources in the "most used" table.
const TOP_RESOURCES: usize = 20;

/// The period of the over-time table and charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    fn parse(s: &str) -> Self {
        match s {
            "day" => Period::Day,
            "week" => Period::Week,
            _ => Period::Month,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// How many periods are shown, and the days they span at most.
    fn span(self) -> (usize, i64) {
        match self {
            Period::Day => (14, 14),
            Period::Week => (12, 84),
            Period::Month => (12, 366),
        }
    }

    /// How a day is written as its period.
    fn pattern(self) -> &'static str {
        match self {
            Period::Day => "%Y-%m-%d",
            Period::Week => "%G-W%V",
            Period::Month => "%Y-%m",
        }
    }

    /// The period `ms` falls in, in time zone `tz`.
    fn label(self, tz: chrono_tz::Tz, ms: u64) -> String {
        let Some(t) = tz
            .timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX))
            .single()
        else {
            return String::new();
        };
        t.format(self.pattern()).to_string()
    }

    /// The last periods up to `now_ms`, oldest first (stepping by calendar days, so a day of
    /// daylight-saving change is not skipped).
    fn labels(self, tz: chrono_tz::Tz, now_ms: u64) -> Vec<String> {
        let (n, days) = self.span();
        let Some(mut day) = tz
            .timestamp_millis_opt(i64::try_from(now_ms).unwrap_or(i64::MAX))
            .single()
            .map(|t| t.date_naive())
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for _ in 0..=days {
            let l = day.format(self.pattern()).to_string();
            if !out.contains(&l) {
                out.push(l);
            }
            if out.len() == n {
                break;
            }
            match day.pred_opt() {
                Some(d) => day = d,
                None => break,
            }
        }
        out.reverse();
        out
    }
}

/// The page's query.
#[derive(Deserialize, Default)]
pub(crate) struct StatsQuery {
    #[serde(default)]
    period: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    format: String,
}

/// The facts this node holds, counted by [`tables`].
struct Facts {
    entries: Vec<EntryFact>,
    pulls: Vec<PullFact>,
    apps: Vec<AppFact>,
    /// The call log's statistics, for auditors (as on the API); `None` for others.
    calls: Option<calls::CallFacts>,
}

/// `with_calls`: read the call log too (an auditor's page, or the calls table's export).
fn facts(ctx: &Ctx, viewer: &Viewer, period: Period, with_calls: bool) -> Result<Facts, PageError> {
    let s = &ctx.state;
    let member = |k: &huitong_protocol::NodeId| {
        s.with_charter(|c| c.and_then(|c| c.member(k)).map(|m| m.name.clone()))
    };
    let entries = catalogue::list(&s.store, &Filter::default())
        .map_err(PageError::internal)?
        .into_iter()
        .map(|r| EntryFact {
            dept: member(&r.feed).unwrap_or_else(|| r.entry.provider_name.clone()),
            code: r.entry.code.to_string(),
            title: r.entry.title.clone(),
            versions: r.dataset.as_ref().map_or(0, |d| d.version),
            rows: r.dataset.as_ref().and_then(|d| d.rows).unwrap_or(0),
        })
        .collect();
    let pulls = crate::receipts::all(s)
        .map_err(PageError::internal)?
        .into_iter()
        .map(|r| PullFact {
            provider: member(&r.provider).unwrap_or_else(|| r.provider.to_hex()),
            consumer: member(&r.consumer).unwrap_or_else(|| r.consumer.to_hex()),
            code: r.code,
            bytes: r.bytes,
            at_ms: r.countersigned_at_ms,
        })
        .collect();
    // The applications the person may see on the API (a data user: their own; approvers and
    // auditors: the node's), counted.
    let apps = crate::http::applications::views(ctx, &viewer.acting()?, None)?
        .into_iter()
        .map(|v| AppFact {
            submitted_ms: v.timeline.first().map_or(0, |s| s.at_ms),
            approved_ms: v
                .timeline
                .iter()
                .find(|s| s.state == "approved")
                .map(|s| s.at_ms),
            provider: v.provider,
            code: v.code,
            state: v.state,
        })
        .collect();
    // The call log over the days the page shows (at most 90, as on the API), for auditors.
    let days = period.span().1.clamp(1, MAX_CALL_DAYS) as u64;
    let since_ms = crate::state::now_ms().saturating_sub(days * 86_400_000);
    let calls = if with_calls && viewer.has(crate::accounts::Role::Auditor) {
        Some(calls::facts(
            crate::call_stats::since(&s.store, since_ms).map_err(PageError::internal)?,
            &s.id(),
            |k| member(k).unwrap_or_else(|| k.to_hex()),
        ))
    } else {
        None
    };
    Ok(Facts {
        entries,
        pulls,
        apps,
        calls,
    })
}

/// [`facts`] off the async runtime (it reads the whole catalogue, receipts and applications).
async fn gathered(
    ctx: &Ctx,
    viewer: &Viewer,
    period: Period,
    with_calls: bool,
) -> Result<Facts, PageError> {
    let (ctx, viewer) = (ctx.clone(), viewer.clone());
    tokio::task::spawn_blocking(move || facts(&ctx, &viewer, period, with_calls))
        .await
        .map_err(PageError::internal)?
}

/// Every table of the page, in its order.
fn all_tables(ctx: &Ctx, f: &Facts, period: Period, en: bool) -> Vec<Table> {
    let tz = ctx.state.timezone();
    let labels = period.labels(tz, crate::state::now_ms());
    let mut all = vec![
        tables::over_time(&f.pulls, &f.apps, &labels, |ms| period.label(tz, ms), en),
        tables::departments(&f.entries, &f.pulls, &f.apps, en),
        tables::resources(&f.entries, &f.pulls, &f.apps, TOP_RESOURCES, en),
        tables::application_states(&f.apps, en),
    ];
    if let Some(calls) = &f.calls {
        all.push(calls::table(calls, en));
    }
    all
}

#[derive(Template)]
#[template(path = "statistics.html")]
struct StatsPage {
    c: Chrome,
    /// The whole federation (the hub) or this node's share of it.
    federation: bool,
    period: &'static str,
    periods: Vec<(&'static str, &'static str, bool)>,
    charts: Vec<Chart>,
    tables: Vec<Table>,
    totals: Vec<(&'static str, String)>,
}

/// `GET /statistics`.
pub(crate) async fn page(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<StatsQuery>,
) -> PageResult {
    let lang = viewer.lang;
    let en = lang.en();
    let period = Period::parse(&q.period);
    let f = gathered(&ctx, &viewer, period, true).await?;
    let tables = all_tables(&ctx, &f, period, en);
    // The over-time table's columns as charts: pulls, and new applications.
    let over = &tables[0];
    let column = |i: usize| -> Vec<(String, f64, String)> {
        over.rows
            .iter()
            .map(|r| {
                (
                    r[0].text.clone(),
                    r[i].number.unwrap_or(0.0),
                    r[i].text.clone(),
                )
            })
            .collect()
    };
    let charts = vec![
        chart::bars(lang.t("拉取次数", "Pulls").to_string(), &column(1)),
        chart::bars(lang.t("数据量", "Bytes pulled").to_string(), &column(2)),
        chart::bars(lang.t("新申请", "New applications").to_string(), &column(3)),
    ];
    let bytes = f.pulls.iter().fold(0u64, |n, p| n.saturating_add(p.bytes));
    let mut totals = vec![
        (
            lang.t("目录", "Entries"),
            format::number(f.entries.len() as u64),
        ),
        (
            lang.t("拉取", "Pulls"),
            format::number(f.pulls.len() as u64),
        ),
        (lang.t("交换数据量", "Data exchanged"), format::size(bytes)),
        (
            lang.t("申请", "Applications"),
            format::number(f.apps.len() as u64),
        ),
    ];
    if let Some(calls) = &f.calls {
        totals.push((
            lang.t("接口调用", "API calls"),
            format::number(calls.total()),
        ));
    }
    let periods = [
        ("day", lang.t("按日", "Daily")),
        ("week", lang.t("按周", "Weekly")),
        ("month", lang.t("按月", "Monthly")),
    ]
    .into_iter()
    .map(|(k, l)| (k, l, k == period.key()))
    .collect();
    show(&StatsPage {
        c: Chrome::new(&ctx, &viewer, lang.t("统计与评价", "Statistics")),
        federation: ctx.state.is_hub(),
        period: period.key(),
        periods,
        charts,
        tables,
        totals,
    })
}

/// `GET /statistics/export?table=…&format=csv|xlsx&period=…`.
pub(crate) async fn download(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<StatsQuery>,
) -> PageResult {
    let lang = viewer.lang;
    let period = Period::parse(&q.period);
    if !matches!(q.format.as_str(), "csv" | "xlsx") {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            lang.t(
                "导出格式须为 csv 或 xlsx。",
                "The export format is csv or xlsx.",
            ),
        ));
    }
    // The call log is read only for its own table.
    let f = gathered(&ctx, &viewer, period, q.table == "calls").await?;
    let Some(table) = all_tables(&ctx, &f, period, lang.en())
        .into_iter()
        .find(|t| t.id == q.table)
    else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            lang.t(
                "没有这个统计表（departments、resources、applications、over_time、calls）。",
                "No such table (departments, resources, applications, over_time, calls).",
            ),
        ));
    };
    let (body, mime, ext) = match q.format.as_str() {
        "xlsx" => (
            export::xlsx(&table).map_err(PageError::internal)?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        _ => (export::csv(&table), "text/csv; charset=utf-8", "csv"),
    };
    let name = format!("huitong-{}-{}.{ext}", table.id, ctx.state.today());
    Ok(super::page::download(body, mime, &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_consecutive_and_end_now() {
        let tz = chrono_tz::Asia::Shanghai;
        // 2025-12-02 04:00 in Shanghai (2025-12-01 20:00 UTC).
        let now = 1_764_619_200_000;
        let months = Period::Month.labels(tz, now);
        assert_eq!(months.len(), 12);
        assert_eq!(months.last().map(String::as_str), Some("2025-12"));
        assert_eq!(months.first().map(String::as_str), Some("2025-01"));
        let days = Period::Day.labels(tz, now);
        assert_eq!(days.len(), 14);
        assert_eq!(days.last().map(String::as_str), Some("2025-12-02"));
        let weeks = Period::Week.labels(tz, now);
        assert_eq!(weeks.len(), 12);
        assert!(weeks.iter().all(|w| w.contains("-W")));
    }
}
