//! Collection in the portal (数据采集): the node's sources with their schedule, next start, last
//! run and alarm, the runs under way and the history; a cataloguer starts a run now (it goes on
//! in the background; the page shows it under way). Reads through the same functions as the
//! JSON API; never a password or a header (they are only in the secrets file).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Json};
use serde::Deserialize;

use super::form::Form;
use super::format;
use super::guard::Viewer;
use super::page::{show, Chrome, Lang, PageError, PageResult};
use crate::accounts::Role;
use crate::collect::runs::{Outcome, Run, Trigger};
use crate::collect::views::SourceView;
use crate::http::collect as api;
use crate::http::Ctx;

/// Runs the page lists.
const LISTED: usize = 50;

/// A source as the page shows it.
struct SourceRow {
    code: String,
    title: String,
    kind: &'static str,
    location: String,
    schedule: String,
    next: String,
    last: String,
    last_class: &'static str,
    alarm: Option<String>,
    running: bool,
}

/// A run as the page shows it.
struct RunRow {
    code: String,
    started: String,
    trigger: &'static str,
    outcome: String,
    outcome_class: &'static str,
    version: String,
    rows: String,
    bytes: String,
    seconds: String,
    file: String,
    error: String,
}

#[derive(Template)]
#[template(path = "collect.html")]
struct CollectPage {
    c: Chrome,
    sources: Vec<SourceRow>,
    running: Vec<(String, String, String)>,
    runs: Vec<RunRow>,
    can_run: bool,
    started: Option<String>,
}

fn outcome(o: Outcome, lang: Lang) -> (String, &'static str) {
    match o {
        Outcome::Published => (lang.t("已发布新版本", "published").into(), "ok"),
        Outcome::Unchanged => (lang.t("无变化", "unchanged").into(), "ok"),
        Outcome::Failed => (lang.t("失败", "failed").into(), "off"),
    }
}

fn trigger(t: Trigger, lang: Lang) -> &'static str {
    match t {
        Trigger::Manual => lang.t("手动", "by hand"),
        Trigger::Schedule => lang.t("计划", "schedule"),
        Trigger::Retry => lang.t("重试", "retry"),
    }
}

fn kind(k: huitong_config::SourceKind, lang: Lang) -> &'static str {
    use huitong_config::SourceKind;
    match k {
        SourceKind::Postgres => "PostgreSQL",
        SourceKind::Mysql => "MySQL/MariaDB",
        SourceKind::Folder => lang.t("文件夹", "folder"),
        SourceKind::Http => lang.t("HTTP 接口", "HTTP API"),
    }
}

fn source_row(ctx: &Ctx, s: &SourceView, running: bool, lang: Lang) -> SourceRow {
    let tz = ctx.state.timezone();
    let title = crate::catalogue::get_by_provider(
        &ctx.state.store,
        &ctx.state.config.node.org_code,
        &s.code,
    )
    .ok()
    .flatten()
    .map(|r| r.entry.title)
    .unwrap_or_else(|| lang.t("（条目未发布）", "(entry not published)").into());
    let schedule = match (s.schedule.as_str(), &s.cron) {
        ("watch", _) => lang.t("随到随取", "as files arrive").into(),
        ("manual", _) | (_, None) => lang.t("仅手动", "by hand only").into(),
        ("update_cycle", Some(c)) => format!("{} ({c})", lang.t("按更新周期", "update cycle")),
        (_, Some(c)) => c.clone(),
    };
    let (last, last_class) = match &s.last {
        Some(r) => {
            let (o, class) = outcome(r.outcome, lang);
            (
                format!("{o} · {}", format::time(tz, r.started_at_ms)),
                class,
            )
        }
        None => (lang.t("尚未运行", "never").into(), "warn"),
    };
    SourceRow {
        code: s.code.clone(),
        title,
        kind: kind(s.kind, lang),
        location: s.url.clone(),
        schedule,
        next: s
            .next_at_ms
            .map_or_else(|| "—".into(), |t| format::time(tz, t)),
        last,
        last_class,
        alarm: s.alarm.then(|| {
            format!(
                "{} {}",
                s.failures_in_a_row,
                lang.t("次连续失败", "failures in a row")
            )
        }),
        running,
    }
}

fn run_row(ctx: &Ctx, r: &Run, lang: Lang) -> RunRow {
    let (o, class) = outcome(r.outcome, lang);
    RunRow {
        code: r.code.clone(),
        started: format::time(ctx.state.timezone(), r.started_at_ms),
        trigger: trigger(r.trigger, lang),
        outcome: o,
        outcome_class: class,
        version: r.version.map_or_else(|| "—".into(), |v| format!("v{v}")),
        rows: r.rows.map_or_else(|| "—".into(), format::number),
        bytes: format::size(r.source_bytes),
        seconds: format!(
            "{:.1}",
            r.finished_at_ms.saturating_sub(r.started_at_ms) as f64 / 1000.0
        ),
        file: r.file.clone().unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    started: Option<String>,
}

/// `GET /collect`.
pub(crate) async fn page(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let lang = viewer.lang;
    let Json(sources) = api::sources(State(ctx.clone())).await?;
    let Json(runs) = api::runs_of(&ctx, None, LISTED)?;
    let tz = ctx.state.timezone();
    show(&CollectPage {
        c: Chrome::new(&ctx, &viewer, lang.t("数据采集", "Collection")),
        sources: sources
            .iter()
            .map(|s| source_row(&ctx, s, runs.running.iter().any(|r| r.code == s.code), lang))
            .collect(),
        running: runs
            .running
            .iter()
            .map(|r| {
                (
                    r.code.clone(),
                    format::time(tz, r.started_at_ms),
                    format::size(r.source_bytes),
                )
            })
            .collect(),
        runs: runs.runs.iter().map(|r| run_row(&ctx, r, lang)).collect(),
        can_run: viewer.has(Role::Cataloguer),
        started: q
            .started
            .filter(|c| ctx.state.config.collect.source(c).is_some()),
    })
}

/// `POST /collect/run`: starts a run of `code` in the background and comes back to the page.
pub(crate) async fn run(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let code = form.get("code").to_owned();
    if ctx.state.config.collect.source(&code).is_none() {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} {code:?}",
                lang.t("本节点没有该资源的数据源：", "This node has no source for")
            ),
        ));
    }
    if ctx.collector.running().iter().any(|(c, _)| *c == code) {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            lang.t(
                "该资源正在采集，请等待本次运行结束。",
                "A run of this resource is under way; wait for it to end.",
            ),
        ));
    }
    let actor = viewer.acting()?.actor();
    let (collector, started) = (ctx.collector.clone(), code.clone());
    tokio::spawn(async move {
        if let Err(e) = collector
            .run(
                &started,
                crate::collect::runs::Start::by(Trigger::Manual),
                actor,
            )
            .await
        {
            tracing::warn!(code = %started, error = %e, "a collection run started in the portal did not run");
        }
    });
    let q: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
    Ok(Redirect::to(&format!("/collect?started={q}")).into_response())
}
