//! The audit subsystem: the hub's transparency log of every application, decision, grant,
//! revocation, transfer receipt and charter version, and every node's watch over the log's
//! checkpoints.
//!
//! - [`log`]: the hub's C2SP tlog-tiles log on disk (batched, durable appends; proofs).
//! - [`appender`]: on the hub, moves queued records into the log and publishes checkpoints.
//! - [`watch`]: on every node, checks each checkpoint it sees (hub signature, witness
//!   cosignatures, consistency with what it saw before) and keeps split-view evidence; the
//!   cascade node cosigns as a witness.
//! - [`service`]: the hub's answers to members' audit requests (checkpoint, proofs, lookups).
//! - [`client`]: a member's requests to the hub.
//! - [`mirror`]: a member's copy of the log, checked against the hub's checkpoints.
//! - [`verify`]: `huitong audit verify` and `export-proof`.
//! - [`fault`]: test-only faults of the hub (feature `fault-injection`; no-ops without it).
//!
//! The hub queues a record in `audit_pending` in the same `WriteBatch` that stores the feed
//! entry it stands for, so no event is lost between the feed and the log.

pub mod appender;
pub mod client;
pub mod fault;
pub mod log;
pub mod mirror;
pub mod service;
pub mod verify;
pub mod watch;

use std::path::PathBuf;
use std::sync::Mutex;

use huitong_protocol::application::GrantEvent;
use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::receipt::SignedReceipt;
use huitong_protocol::{Charter, Event, NodeId};
use rocksdb::WriteBatch;
use tokio::sync::mpsc;

use crate::state::NodeState;
use crate::store::CF_AUDIT_PENDING;

/// Checkpoint notes waiting for the watcher.
const INBOX: usize = 256;

/// Where a checkpoint came from (decides whether the watcher passes it on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Gossip: gossipsub already passes it on.
    Gossip,
    /// The hub's own log, a poll of the hub, or an operator's import: pass it on.
    Local,
}

/// A checkpoint note on its way to the watcher.
pub type Inbound = (Vec<u8>, Source);

/// The audit parts of the node state.
pub struct AuditState {
    /// The log directory (`<node dir>/audit`).
    pub dir: PathBuf,
    /// The hub's log, or a member's mirror of it, opened on first use.
    pub log: Mutex<Option<log::TileLog>>,
    /// Serialises mirror updates.
    pub mirror_lock: tokio::sync::Mutex<()>,
    /// The charter version known to be in the hub's log (0: none yet).
    pub charter_logged: std::sync::atomic::AtomicU64,
    /// Checkpoints for the watcher.
    pub inbox: mpsc::Sender<Inbound>,
    /// The watcher's end, taken once when it starts.
    pub inbox_rx: Mutex<Option<mpsc::Receiver<Inbound>>>,
}

impl AuditState {
    /// Audit state for a node directory.
    pub fn new(dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel(INBOX);
        Self {
            dir,
            log: Mutex::new(None),
            mirror_lock: tokio::sync::Mutex::new(()),
            charter_logged: std::sync::atomic::AtomicU64::new(0),
            inbox: tx,
            inbox_rx: Mutex::new(Some(rx)),
        }
    }
}

/// The record a feed entry stands for, if it is an auditable event.
pub fn record_of(v: &VerifiedEntry) -> Option<Record> {
    let e = &v.entry;
    let (kind, id) = match &e.event {
        Event::Grant(g) => match g {
            GrantEvent::Submitted(a) => (RecordKind::Application, a.id.clone()),
            GrantEvent::Accepted { id }
            | GrantEvent::Approved { id }
            | GrantEvent::Rejected { id, .. } => (RecordKind::Decision, id.clone()),
            GrantEvent::Issued { id, .. } | GrantEvent::Endorsed { id, .. } => {
                (RecordKind::Grant, id.clone())
            }
            GrantEvent::Revoked { id, .. } => (RecordKind::Revocation, id.clone()),
        },
        Event::Receipt(bytes) => (RecordKind::Receipt, SignedReceipt::open(bytes).ok()?.id),
        _ => return None,
    };
    Some(Record {
        kind,
        id,
        signer: e.feed,
        seq: e.seq,
        hash: v.hash.0,
        at_ms: e.timestamp_ms,
    })
}

/// The record of a charter version: BLAKE3 of its signed payload.
pub fn charter_record(charter: &Charter, payload: &[u8]) -> Record {
    Record {
        kind: RecordKind::Charter,
        id: format!("charter-{}", charter.version),
        signer: charter.authority,
        seq: charter.version,
        hash: *blake3::hash(payload).as_bytes(),
        at_ms: charter.issued_at_ms,
    }
}

/// On the hub, queues the record of an auditable entry in the batch that stores the entry.
pub fn queue(state: &NodeState, batch: &mut WriteBatch, v: &VerifiedEntry) {
    if !state.is_hub() {
        return;
    }
    if let Some(r) = record_of(v) {
        batch.put_cf(state.store.cf(CF_AUDIT_PENDING), r.key(), r.encode());
    }
}

/// The log's origin and the keys that sign its checkpoints: `(origin, hub, witnesses)`.
pub fn keys(state: &NodeState) -> Option<(String, NodeId, Vec<NodeId>)> {
    let hub = state.hub_key()?;
    state.with_charter(|c| {
        let c = c?;
        let witnesses = c
            .members
            .iter()
            .filter(|m| {
                m.role == huitong_protocol::Role::Cascade
                    && m.status == huitong_protocol::MemberStatus::Active
            })
            .map(|m| m.node_key)
            .collect();
        Some((
            huitong_protocol::audit::origin(&c.federation),
            hub,
            witnesses,
        ))
    })
}
