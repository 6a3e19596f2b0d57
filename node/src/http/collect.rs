//! Collection routes: run a source now, the run history (with the runs under way), and the
//! sources with their next start. Database passwords never appear (they are only in the
//! secrets file).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use super::authz::Principal;
use super::{fail, internal, Ctx, Res};
use crate::collect::runs::{self, Run, Start, Trigger};
use crate::collect::views::{RunRequest, RunningView, RunsView, SourceView};
use crate::collect::{schedule, CollectError};

pub(super) async fn run(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(req): Json<RunRequest>,
) -> Res<Run> {
    // The run goes on (and is recorded) even if the client goes away.
    let (collector, actor) = (ctx.collector.clone(), who.actor());
    let ran = tokio::spawn(async move {
        let start = Start {
            full: req.full,
            ..Start::by(Trigger::Manual)
        };
        collector.run(&req.code, start, actor).await
    })
    .await
    .map_err(internal)?;
    match ran {
        Ok(run) => Ok(Json(run)),
        Err(e @ (CollectError::NoSource(_) | CollectError::UnknownCode(_))) => {
            Err(fail(StatusCode::NOT_FOUND, e))
        }
        Err(e @ (CollectError::Busy(_) | CollectError::NoFile { .. })) => {
            Err(fail(StatusCode::CONFLICT, e))
        }
        Err(e @ CollectError::Stopping) => Err(fail(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    code: Option<String>,
    limit: Option<usize>,
}

/// Most runs one answer lists.
const MAX_LIMIT: usize = 1000;

pub(super) async fn runs(State(ctx): State<Ctx>, Query(q): Query<RunsQuery>) -> Res<RunsView> {
    runs_of(&ctx, q.code.as_deref(), q.limit.unwrap_or(50))
}

/// The runs of `code` (all sources: none), newest first, at most `limit`, with those under way.
pub(super) fn runs_of(ctx: &Ctx, code: Option<&str>, limit: usize) -> Res<RunsView> {
    let runs = runs::list(&ctx.state.store, code, limit.min(MAX_LIMIT)).map_err(internal)?;
    let running = ctx
        .collector
        .running()
        .into_iter()
        .filter(|(c, _)| code.is_none_or(|q| q == c))
        .map(|(code, r)| RunningView {
            code,
            started_at_ms: r.started_at_ms,
            trigger: r.trigger,
            source_bytes: r.bytes.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect();
    Ok(Json(RunsView { running, runs }))
}

pub(super) async fn sources(State(ctx): State<Ctx>) -> Res<Vec<SourceView>> {
    let state = &ctx.state;
    let cfg = &state.config.collect;
    let now = crate::state::now_ms();
    let mut out = Vec::new();
    for s in &cfg.sources {
        let entry =
            crate::catalogue::get_by_provider(&state.store, &state.config.node.org_code, &s.code)
                .map_err(internal)?
                .filter(|r| r.withdrawn.is_none());
        let cron = match (s.schedule(), &entry) {
            ("manual", _) | (_, None) => None,
            ("update_cycle", Some(r)) => {
                schedule::of_cycle(r.entry.update_cycle).map(str::to_owned)
            }
            (expr, Some(_)) => Some(expr.to_owned()),
        };
        let next_at_ms = entry
            .as_ref()
            .and_then(|r| schedule::parse(s.schedule(), r.entry.update_cycle).ok())
            .and_then(|w| schedule::next_after(&w, state.timezone(), now));
        let alarm_after = cfg.alarm_after() as usize;
        let failures =
            runs::failures_in_a_row(&state.store, &s.code, alarm_after).map_err(internal)?;
        out.push(SourceView {
            code: s.code.clone(),
            kind: s.kind,
            url: s.location(),
            table: s.table.clone(),
            query: s.query.is_some(),
            schedule: s.schedule().to_owned(),
            cron,
            next_at_ms,
            last: runs::list(&state.store, Some(&s.code), 1)
                .map_err(internal)?
                .pop(),
            failures_in_a_row: failures,
            alarm: failures >= alarm_after,
        });
    }
    Ok(Json(out))
}
