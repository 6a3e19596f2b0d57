//! A member's questions to the hub about the audit log, over the data protocol
//! (`/huitong/data/1`, [`DataRequest::Audit`]), relayed through the hub like any stream.

use huitong_protocol::audit::note::MAX_NOTE_BYTES;
use huitong_protocol::wire::{AuditRequest, AuditResponse, DataRequest, DataResponse};
use huitong_protocol::NodeId;
use tlog_tiles::Hash;

use crate::link::{request_once, Transport};

/// Largest answer: a page of entries (256 of at most 1 KiB), a note, proofs or indexes.
const MAX_ANSWER: usize = MAX_NOTE_BYTES + 320 * 1024;

/// Why a question was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The hub could not be reached (or the stream broke).
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The hub answered with a refusal (or an answer of the wrong kind).
    #[error("the hub refused: {0}")]
    Refused(String),
}

/// Asks the hub one question.
pub async fn ask(
    t: &Transport,
    hub: &NodeId,
    req: AuditRequest,
) -> Result<AuditResponse, AskError> {
    let peer = crate::net::peer_id(hub)
        .ok_or_else(|| AskError::Unreachable("the hub key is not a libp2p key".into()))?;
    let response = request_once(t, peer, &DataRequest::Audit(req), MAX_ANSWER)
        .await
        .map_err(AskError::Unreachable)?;
    match response {
        DataResponse::Audit(a) => Ok(a),
        DataResponse::Refused { message, .. } => Err(AskError::Refused(message)),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}

/// Decodes proof hashes.
pub fn hashes(raw: &[serde_bytes::ByteBuf]) -> Result<Vec<Hash>, AskError> {
    raw.iter()
        .map(|h| {
            <[u8; 32]>::try_from(h.as_slice())
                .map(Hash)
                .map_err(|_| AskError::Refused("a proof hash is not 32 bytes".into()))
        })
        .collect()
}

/// The hub's latest checkpoint note.
pub async fn checkpoint(t: &Transport, hub: &NodeId) -> Result<Option<Vec<u8>>, AskError> {
    match ask(t, hub, AuditRequest::Checkpoint).await? {
        AuditResponse::Checkpoint(n) => Ok(n.map(|b| b.into_vec())),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}

/// A consistency proof from `old` to `new`.
pub async fn consistency(
    t: &Transport,
    hub: &NodeId,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, AskError> {
    match ask(t, hub, AuditRequest::Consistency { old, new }).await? {
        AuditResponse::Proof(p) => hashes(&p),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}

/// Indexes of the entries with a record id.
pub async fn find(t: &Transport, hub: &NodeId, id: &str) -> Result<Vec<u64>, AskError> {
    match ask(t, hub, AuditRequest::Find { id: id.to_owned() }).await? {
        AuditResponse::Found(i) => Ok(i),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}

/// Entry `index` and its inclusion proof in the tree of `size`.
pub async fn inclusion(
    t: &Transport,
    hub: &NodeId,
    index: u64,
    size: u64,
) -> Result<(Vec<u8>, Vec<Hash>), AskError> {
    match ask(t, hub, AuditRequest::Inclusion { index, size }).await? {
        AuditResponse::Entry { entry, proof } => Ok((entry.into_vec(), hashes(&proof)?)),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}

/// Up to `count` entries from `from`.
pub async fn entries(
    t: &Transport,
    hub: &NodeId,
    from: u64,
    count: u64,
) -> Result<Vec<Vec<u8>>, AskError> {
    match ask(t, hub, AuditRequest::Entries { from, count }).await? {
        AuditResponse::Entries(e) => Ok(e.into_iter().map(|b| b.into_vec()).collect()),
        _ => Err(AskError::Refused("an answer of the wrong kind".into())),
    }
}
