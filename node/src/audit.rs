//! The audit view: the hub's transparency log of every application, decision, grant,
//! revocation, transfer receipt and charter version as records staged with the feeds, and what
//! every node keeps of the log — with no network. The services that talk to the hub (the
//! checkpoint watcher, the mirror, `audit verify`) are `auditor`'s, above the network.
//!
//! - [`View`]: the audit's view over the feeds. The hub queues a record in `audit_pending` in the
//!   same `WriteBatch` that stores the feed entry it stands for (as the other views judged it),
//!   so no event is lost between the feed and the log; a member remembers its own auditable
//!   events ([`omission::expect`]).
//! - [`appender`]: on the hub, moves queued records into the log ([`crate::audit_log::tiles`])
//!   and hands each new checkpoint to the watcher.
//! - [`checkpoints`]: the checkpoints this node has checked, split-view and withheld-proof
//!   evidence, which are final.
//! - [`service`]: the hub's answers to members' audit requests (checkpoint, proofs, lookups),
//!   served on the data streams by `transfer::server`.
//! - [`omission`]: on every member, checks that its own events (and events others report
//!   missing) reach the log within a bounded number of checkpoints; raises OMISSION otherwise.
//! - [`fault`]: the hub's test-only audit faults (through [`crate::faults`]).
//!
//! A checkpoint is **final** once it carries at least the charter's witness quorum of valid
//! cosignatures ([`quorum`]); until then it is stored (the witness must still check it) but
//! shown as *pending witness* and not used to prove records.
//!
//! Layering: a view over [`crate::feeds`], above the applications view (it logs grant events as
//! [`crate::applications::Judged`]) and [`crate::audit_log`]; below the network, the transfers
//! and the audit services, which use it.

pub mod appender;
pub mod checkpoints;
pub mod fault;
pub mod omission;
pub mod service;

use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::{Charter, NodeId};
use rocksdb::WriteBatch;

use crate::state::NodeState;
use crate::store::CF_AUDIT_PENDING;

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

/// The audit's view over the feeds: on the hub it queues the records the other views judged,
/// and on a member it remembers each auditable event this node appends ([`omission::expect`]),
/// both in the batch that stores the entry.
pub struct View;

impl crate::feeds::View for View {
    fn judged(&self, state: &NodeState, batch: &mut WriteBatch, records: &[Record]) {
        queue(state, batch, records);
    }

    fn appended(&self, state: &NodeState, batch: &mut WriteBatch, entry: &VerifiedEntry) {
        omission::expect(state, batch, entry);
    }
}

/// On the hub, queues the audit records of one feed entry (as its views judged it) in the
/// batch that stores the entry.
pub fn queue(state: &NodeState, batch: &mut WriteBatch, records: &[Record]) {
    if !state.is_hub() {
        return;
    }
    for r in records {
        batch.put_cf(state.store.cf(CF_AUDIT_PENDING), r.key(), r.encode());
    }
}

/// The log's origin and the keys that sign its checkpoints: `(origin, hub, witnesses)`; the
/// witnesses are the charter's witness policy ([`Charter::witness_keys`]).
pub fn keys(state: &NodeState) -> Option<(String, NodeId, Vec<NodeId>)> {
    let hub = state.hub_key()?;
    state.with_charter(|c| {
        let c = c?;
        Some((
            huitong_protocol::audit::origin(&c.federation),
            hub,
            c.witness_keys(),
        ))
    })
}

/// How many witness cosignatures make a checkpoint final (the charter's quorum).
pub fn quorum(state: &NodeState) -> usize {
    state.with_charter(|c| c.map_or(0, Charter::witness_quorum))
}

/// Whether a checkpoint carries the witness quorum.
pub fn is_final(state: &NodeState, cp: &huitong_protocol::audit::note::SignedCheckpoint) -> bool {
    cp.cosigned_by.len() >= quorum(state)
}
