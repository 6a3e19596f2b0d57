//! Proving one API call from the hub's audit log (`huitong audit verify --record CALL-ID`): the
//! call's record in this node's call log, the chain from the anchor before it through the record
//! to the first anchor that covers it ([`crate::call_anchors`]), and that anchor's inclusion in
//! the log against a final checkpoint ([`super::verify::records`]). A consumer's record also
//! carries the provider's signed answer, checked again here.
//!
//! The anchored head fixes every record before it: a record changed, dropped or inserted after
//! the anchor landed no longer chains to it, and the proof says so.

use std::sync::Arc;

use huitong_protocol::call::SignedAnswer;
use serde::{Deserialize, Serialize};

use super::verify::{self, name_of, RecordReport};
use crate::call_log::{self, CallRecord, Head};
use crate::link::Transport;
use crate::state::NodeState;

/// An API call proved through its anchor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallProof {
    /// The record's position in this node's call log.
    pub seq: u64,
    /// The call's id (both nodes' logs), if the provider answered or signed its refusal.
    pub id: Option<String>,
    /// `consumer` or `provider`: which side this node was.
    pub side: String,
    /// The other node (member name, or key).
    pub peer: String,
    /// The resource.
    pub code: String,
    /// `lookup` or `verify`.
    pub kind: String,
    /// `ok`, `refused` or `failed`.
    pub status: String,
    /// When the call ended (ms).
    pub at_ms: u64,
    /// BLAKE3 of the query (hex).
    pub query: String,
    /// BLAKE3 of the provider's signed answer or refusal (hex), if it gave one.
    pub answer: Option<String>,
    /// The anchored log size the chain starts from (0: the empty log).
    pub from: u64,
    /// The anchored log size the chain reaches (the anchor proved in the log).
    pub anchor: u64,
    /// The anchored head (hex).
    pub anchor_head: String,
    /// On the consumer: whether the provider's signed answer kept with the record verifies and
    /// is the one the record names (`None`: no answer kept).
    pub answer_signed: Option<bool>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the proof failed: {e}"))?
}

/// Whether the kept answer envelope verifies and is the one the record names.
fn answer_signed(r: &CallRecord) -> Option<bool> {
    let env = r.envelope.as_ref()?;
    Some(match SignedAnswer::open(env) {
        Ok(a) => {
            r.answer.as_deref() == Some(hex::encode(a.hash).as_str())
                && r.id.as_deref() == Some(a.answer.id.as_str())
                && hex::encode(a.answer.query) == r.query
        }
        Err(_) => false,
    })
}

/// Proves call `id` of this node's call log: `Ok(None)` when the log holds no such call (the id
/// may name another kind of record).
pub async fn prove(
    state: &Arc<NodeState>,
    t: &Transport,
    id: &str,
) -> Result<Option<Vec<RecordReport>>, String> {
    let found = {
        let (state, id) = (state.clone(), id.to_string());
        blocking(move || call_log::find(&state.store, &id).map_err(|e| e.to_string())).await?
    };
    let Some(record) = found else {
        return Ok(None);
    };
    let every = state.config.services.anchor_every().as_secs();
    let chained = {
        let state = state.clone();
        let seq = record.seq;
        blocking(move || {
            let me = state.id();
            let end = crate::call_anchors::covering(&state, &me, seq).map_err(|e| e.to_string())?;
            let Some(end) = end else {
                return Ok(None);
            };
            let start = crate::call_anchors::before(&state, &me, seq)
                .map_err(|e| e.to_string())?
                .map_or(Head::default(), |a| Head {
                    size: a.head.size,
                    hash: a.head.head,
                });
            let reached = call_log::chain_from(&state.store, start, end.head.size)
                .map_err(|e| e.to_string())?;
            Ok(Some((start, end, reached)))
        })
        .await?
    };
    let Some((start, end, reached)) = chained else {
        return Err(format!(
            "call {id} (record {} of this node's call log) is not anchored in the hub's audit log yet: the node anchors its call log every {every} s; try again in a minute",
            record.seq
        ));
    };
    match reached {
        Ok(h) if h.hash == end.head.head => {}
        Ok(_) => {
            return Err(format!(
                "call {id}: the call log no longer leads to the head anchored at record {} (feed entry {}): a record up to it was changed after the anchor; keep the store and alert the auditor",
                end.head.size, end.seq
            ))
        }
        Err(why) => {
            return Err(format!(
                "call {id}: the call log no longer leads to the head anchored at record {}: {why}; keep the store and alert the auditor",
                end.head.size
            ))
        }
    }
    let proof = CallProof {
        seq: record.seq,
        id: record.id.clone(),
        side: record.side.as_str().to_string(),
        peer: name_of(state, &record.peer),
        code: record.code.clone(),
        kind: record.kind.clone(),
        status: record.status.as_str().to_string(),
        at_ms: record.at_ms,
        query: record.query.clone(),
        answer: record.answer.clone(),
        from: start.size,
        anchor: end.head.size,
        anchor_head: hex::encode(end.head.head),
        answer_signed: answer_signed(&record),
    };
    if proof.answer_signed == Some(false) {
        return Err(format!(
            "call {id}: the provider's signed answer kept with the record does not verify or is not the answer the record names"
        ));
    }
    let reports = verify::records(state, t, &end.head.record_id(), None)
        .await
        .map_err(|e| {
            format!(
                "call {id} is anchored at record {} of the call log, but: {e}",
                end.head.size
            )
        })?;
    // Only this node's own anchor, at its place in this node's feed, proves the call: another
    // member may repeat the (public) head in its own feed.
    let me = name_of(state, &state.id());
    let ours: Vec<RecordReport> = reports
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.kind == "calls" && r.signer == me && r.seq == end.seq)
        .map(|mut r| {
            r.call = Some(proof.clone());
            r
        })
        .collect();
    if ours.is_empty() {
        return Err(format!(
            "call {id}: this node's anchor (feed entry {}) is not in the hub's audit log; only another copy of its head is",
            end.seq
        ));
    }
    Ok(Some(ours))
}
