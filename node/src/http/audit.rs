//! Audit routes: the log check, record proofs, proof files and checkpoint imports.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{fail, Ctx, Res};
use crate::api::{ImportOutcome, ProofFile, ReceiptView, TextBody, TransferView};
use crate::audit::checkpoints::Offer;
use crate::audit_log::Source;
use crate::auditor::verify::{self, LogReport, RecordReport};
use crate::auditor::watch;

/// `?index=N`: one entry of a record id.
#[derive(Debug, Deserialize)]
pub(super) struct IndexQuery {
    index: Option<u64>,
}

fn unprocessable(m: String) -> super::Fail {
    fail(StatusCode::UNPROCESSABLE_ENTITY, m)
}

pub(super) async fn check_log(State(ctx): State<Ctx>) -> Res<LogReport> {
    verify::log(&ctx.state, &ctx.transport)
        .await
        .map(Json)
        .map_err(unprocessable)
}

pub(super) async fn records(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<IndexQuery>,
) -> Res<Vec<RecordReport>> {
    // An API call of this node's call log: proved through the anchor that covers it.
    if q.index.is_none() {
        if let Some(found) = crate::auditor::calls::prove(&ctx.state, &ctx.transport, &id)
            .await
            .map_err(unprocessable)?
        {
            return Ok(Json(found));
        }
    }
    let found = verify::records(&ctx.state, &ctx.transport, &id, q.index)
        .await
        .map_err(unprocessable)?;
    Ok(Json(found.into_iter().map(|(r, _)| r).collect()))
}

pub(super) async fn proof(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<IndexQuery>,
) -> Res<ProofFile> {
    let mut found = verify::records(&ctx.state, &ctx.transport, &id, q.index)
        .await
        .map_err(unprocessable)?;
    if found.len() > 1 {
        let indexes: Vec<String> = found
            .iter()
            .map(|(r, _)| format!("{} ({})", r.index, r.kind))
            .collect();
        return Err(unprocessable(format!(
            "record {id} has {} entries: {}; choose one with --index",
            found.len(),
            indexes.join(", ")
        )));
    }
    let (report, proof) = found.remove(0);
    let proof = String::from_utf8(proof.to_bytes()).map_err(super::internal)?;
    Ok(Json(ProofFile { report, proof }))
}

pub(super) async fn check_proof(
    State(ctx): State<Ctx>,
    Json(body): Json<TextBody>,
) -> Res<RecordReport> {
    verify::proof_file(&ctx.state, body.text.as_bytes())
        .map(Json)
        .map_err(unprocessable)
}

pub(super) async fn import_checkpoint(
    State(ctx): State<Ctx>,
    Json(body): Json<TextBody>,
) -> Res<ImportOutcome> {
    let outcome = watch::handle(
        &ctx.state,
        &ctx.transport,
        body.text.as_bytes(),
        Source::Local,
    )
    .await
    .map_err(unprocessable)?;
    let outcome = match outcome {
        Offer::Stored => "stored".into(),
        Offer::Known => "known".into(),
        Offer::Cosigned => "cosigned".into(),
        Offer::Conflict(why) => format!("split view: {why}"),
        Offer::NeedsProof { .. } => "not checked".into(),
    };
    Ok(Json(ImportOutcome { outcome }))
}

/// `?grant=ID&code=CODE`: which receipts.
#[derive(Debug, Deserialize)]
pub(super) struct ReceiptQuery {
    pub(super) grant: Option<String>,
    pub(super) code: Option<String>,
}

fn member_name(ctx: &Ctx, k: &huitong_protocol::NodeId) -> String {
    ctx.state
        .with_charter(|c| c.and_then(|c| c.member(k)).map(|m| m.name.clone()))
        .unwrap_or_else(|| k.to_hex())
}

/// Whether a listed item passes `?grant=&code=`.
fn wanted(q: &ReceiptQuery, grant: Option<&String>, code: &str) -> bool {
    (q.grant.is_none() || grant == q.grant.as_ref()) && q.code.as_deref().is_none_or(|c| code == c)
}

pub(super) async fn transfers(
    State(ctx): State<Ctx>,
    Query(q): Query<ReceiptQuery>,
) -> Res<Vec<TransferView>> {
    let all = crate::receipts::transfers(&ctx.state).map_err(super::internal)?;
    Ok(Json(
        all.into_iter()
            .filter(|t| wanted(&q, t.record.grant.as_ref(), t.record.code.as_str()))
            .map(|t| {
                let r = t.record;
                TransferView {
                    provider: member_name(&ctx, &t.provider),
                    consumer: member_name(&ctx, &r.consumer),
                    consumer_key: r.consumer.to_hex(),
                    id: r.id,
                    code: r.code.to_string(),
                    version: r.version,
                    fields: r.fields,
                    bytes: r.bytes,
                    chunks: r.chunks,
                    outcome: r.outcome.as_str().into(),
                    receipt: r.receipt,
                    grant: r.grant,
                    started_ms: r.started_ms,
                    ended_ms: r.ended_ms,
                }
            })
            .collect(),
    ))
}

/// Most calls one `GET /audit/calls` lists (the latest).
const MAX_CALLS_LISTED: usize = 10_000;

pub(super) async fn calls(
    State(ctx): State<Ctx>,
    Query(q): Query<ReceiptQuery>,
) -> Res<crate::api::CallLogView> {
    let state = ctx.state.clone();
    let (records, chain) = tokio::task::spawn_blocking(move || {
        crate::call_log::read(
            &state.store,
            |r| wanted(&q, r.grant.as_ref(), &r.code),
            MAX_CALLS_LISTED,
        )
    })
    .await
    .map_err(super::internal)?
    .map_err(super::internal)?;
    // The head the records were checked up to (or, when the chain is broken, the node's).
    let head = match &chain {
        Ok(h) => *h,
        Err(_) => ctx
            .state
            .calls
            .head(&ctx.state.store)
            .map_err(super::internal)?,
    };
    let calls = records
        .into_iter()
        .map(|r| crate::api::CallView {
            peer: member_name(&ctx, &r.peer),
            peer_key: r.peer.to_hex(),
            side: r.side.as_str().into(),
            status: r.status.as_str().into(),
            seq: r.seq,
            at_ms: r.at_ms,
            code: r.code,
            kind: r.kind,
            grant: r.grant,
            id: r.id,
            query: r.query,
            answer: r.answer,
            detail: r.detail,
            duration_us: r.duration_us,
            client: r.client,
        })
        .collect();
    Ok(Json(crate::api::CallLogView {
        calls,
        size: head.size,
        head: hex::encode(head.hash),
        broken: chain.err(),
    }))
}

/// `?hours=` of the call statistics.
#[derive(Debug, serde::Deserialize)]
pub(super) struct StatsQuery {
    #[serde(default)]
    hours: Option<u64>,
}

/// The longest statistics window (hours): 90 days.
const MAX_STATS_HOURS: u64 = 90 * 24;

pub(super) async fn call_stats(
    State(ctx): State<Ctx>,
    Query(q): Query<StatsQuery>,
) -> Res<crate::api::CallStatsView> {
    let hours = q.hours.unwrap_or(24);
    if !(1..=MAX_STATS_HOURS).contains(&hours) {
        return Err(unprocessable(format!(
            "hours must be 1 to {MAX_STATS_HOURS}, not {hours}"
        )));
    }
    let since_ms = crate::state::now_ms().saturating_sub(hours * 3_600_000);
    let state = ctx.state.clone();
    let st = tokio::task::spawn_blocking(move || crate::call_stats::since(&state.store, since_ms))
        .await
        .map_err(super::internal)?
        .map_err(super::internal)?;
    let row = |side: crate::call_log::Side,
               code: String,
               peer: Option<String>,
               t: crate::call_stats::Tally| crate::api::CallStatsRow {
        side: side.as_str().into(),
        code,
        peer,
        calls: t.calls,
        ok: t.ok,
        refused: t.refused,
        failed: t.failed,
        p50_us: t.p50_us,
        p99_us: t.p99_us,
        max_us: t.max_us,
    };
    Ok(Json(crate::api::CallStatsView {
        since_ms,
        services: st
            .services
            .into_iter()
            .map(|((side, code), t)| row(side, code, None, t))
            .collect(),
        peers: st
            .peers
            .into_iter()
            .map(|((side, code, peer), t)| row(side, code, Some(member_name(&ctx, &peer)), t))
            .collect(),
        scanned: st.scanned,
        cut: st.cut,
    }))
}

pub(super) async fn receipts(
    State(ctx): State<Ctx>,
    Query(q): Query<ReceiptQuery>,
) -> Res<Vec<ReceiptView>> {
    receipt_views(&ctx, &q).map(Json)
}

/// The receipts this node holds that pass `?grant=&code=`.
pub(super) fn receipt_views(ctx: &Ctx, q: &ReceiptQuery) -> Result<Vec<ReceiptView>, super::Fail> {
    let name = |k: &huitong_protocol::NodeId| member_name(ctx, k);
    let all = crate::receipts::all(&ctx.state).map_err(super::internal)?;
    Ok(all
        .into_iter()
        .filter(|r| wanted(q, r.grant.as_ref(), &r.code))
        .map(|r| ReceiptView {
            provider: name(&r.provider),
            consumer: name(&r.consumer),
            id: r.id,
            code: r.code,
            version: r.version,
            fields: r.fields,
            bytes: r.bytes,
            grant: r.grant,
            at_ms: r.countersigned_at_ms,
            by: r.by,
        })
        .collect())
}
