//! The hub's answers to audit questions, computed from the log's tiles on disk.
//!
//! With the test-only feature `fault-injection`, [`super::fault`] can make these answers lie.

use huitong_protocol::wire::{
    AuditRequest, AuditResponse, DataResponse, RefusalKind, MAX_AUDIT_ENTRIES,
};
use huitong_protocol::NodeId;
use serde_bytes::ByteBuf;
use tlog_tiles::Hash;

use super::appender::with_log;
use crate::state::NodeState;

/// Most indexes returned for one record id.
const MAX_FOUND: usize = 1000;

fn bufs(hashes: Vec<Hash>) -> Vec<ByteBuf> {
    hashes
        .into_iter()
        .map(|h| ByteBuf::from(h.0.to_vec()))
        .collect()
}

/// Answers one question of `requester` (blocking: reads tiles).
pub fn answer(state: &NodeState, requester: &NodeId, req: AuditRequest) -> DataResponse {
    if !state.is_hub() {
        return DataResponse::refused(
            RefusalKind::NotFound,
            "this node is not the hub: ask the hub about the audit log",
        );
    }
    super::fault::stall(state, &req);
    let result = with_log(state, |log| {
        Ok(match req {
            AuditRequest::Checkpoint => AuditResponse::Checkpoint(
                best_note(state, log.checkpoint().map(|c| (c.size, c.note.clone())))
                    .map(|n| ByteBuf::from(super::fault::shown(state, requester, n))),
            ),
            AuditRequest::Consistency { old, new } => {
                AuditResponse::Proof(bufs(log.consistency(old, new)?))
            }
            AuditRequest::Find { id } => {
                let mut found = log.find(&id);
                found.truncate(MAX_FOUND);
                AuditResponse::Found(found)
            }
            AuditRequest::Entries { from, count } => AuditResponse::Entries(
                log.entries(from, count.min(MAX_AUDIT_ENTRIES))?
                    .into_iter()
                    .map(ByteBuf::from)
                    .collect(),
            ),
            AuditRequest::Inclusion { index, size } => {
                let (entry, proof) = log.inclusion(index, size)?;
                AuditResponse::Entry {
                    entry: ByteBuf::from(entry),
                    proof: bufs(proof),
                }
            }
        })
    });
    match result {
        Ok(a) => DataResponse::Audit(a),
        Err(e) => DataResponse::refused(RefusalKind::Unavailable, e.to_string()),
    }
}

/// The hub's note for its latest size, with witness cosignatures once the watcher has them.
fn best_note(state: &NodeState, own: Option<(u64, Vec<u8>)>) -> Option<Vec<u8>> {
    let (size, note) = own?;
    let cosigned = super::checkpoints::held(state, size)
        .ok()
        .flatten()
        .filter(|c| !c.cosigned_by.is_empty())
        .map(|c| c.note);
    Some(cosigned.unwrap_or(note))
}

/// A consistency proof from the hub's own log (for its own watcher).
pub fn consistency(state: &NodeState, old: u64, new: u64) -> Result<Vec<Hash>, String> {
    with_log(state, |log| log.consistency(old, new)).map_err(|e| e.to_string())
}
