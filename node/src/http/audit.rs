//! Audit routes: the log check, record proofs, proof files and checkpoint imports.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{fail, Ctx, Res};
use crate::audit::verify::{self, LogReport, RecordReport};
use crate::audit::{watch, Source};

/// `?index=N`: one entry of a record id.
#[derive(Debug, Deserialize)]
pub(super) struct IndexQuery {
    index: Option<u64>,
}

/// A proof file or a checkpoint note, as text.
#[derive(Debug, Serialize, Deserialize)]
pub struct TextBody {
    /// The text.
    pub text: String,
}

/// A record's proof file.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProofFile {
    /// What it proves.
    pub report: RecordReport,
    /// The c2sp.org/tlog-proof@v1 text.
    pub proof: String,
}

/// What became of an imported checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// `stored`, `known`, `cosigned` or `split view: …`.
    pub outcome: String,
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
        watch::Offer::Stored => "stored".into(),
        watch::Offer::Known => "known".into(),
        watch::Offer::Cosigned => "cosigned".into(),
        watch::Offer::Conflict(why) => format!("split view: {why}"),
        watch::Offer::NeedsProof { .. } => "not checked".into(),
    };
    Ok(Json(ImportOutcome { outcome }))
}
