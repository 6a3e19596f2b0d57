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
//! - [`omission`]: on every member, checks that its own events (and events others report
//!   missing) reach the log within a bounded number of checkpoints; raises OMISSION otherwise.
//! - [`fault`]: the hub's test-only audit faults (through [`crate::faults`]).
//!
//! The hub queues a record in `audit_pending` in the same `WriteBatch` that stores the feed
//! entry it stands for, so no event is lost between the feed and the log.
//!
//! A checkpoint is **final** once it carries at least the charter's witness quorum of valid
//! cosignatures ([`quorum`]); until then it is stored (the witness must still check it) but
//! shown as *pending witness* and not used to prove records.

pub mod appender;
pub mod client;
pub mod fault;
pub mod log;
pub mod mirror;
pub mod omission;
pub mod service;
pub mod verify;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use huitong_protocol::application::GrantEvent;
use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::{Charter, NodeId};
use rocksdb::WriteBatch;
use tokio::sync::mpsc;

use crate::applications::Judged;
use crate::state::NodeState;
use crate::store::CF_AUDIT_PENDING;

/// Checkpoint notes waiting for the watcher.
const INBOX: usize = 256;

/// The environment variable that overrides the audit deadlines (read once at start), e.g.
/// `checkpoints=2,omission_secs=5,proof_secs=3`.
pub const DEADLINES_ENV: &str = "HUITONG_AUDIT_DEADLINES";

/// How long the watch waits before raising an alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// An own event is overdue once this many newer final checkpoints were accepted without
    /// it (and [`Self::omission`] has passed).
    pub checkpoints: u64,
    /// The least time an event is given to reach the log.
    pub omission: Duration,
    /// How long a consistency proof may be withheld while the hub answers other questions.
    pub proof: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            checkpoints: 3,
            omission: Duration::from_secs(60),
            proof: Duration::from_secs(15),
        }
    }
}

impl Deadlines {
    /// Parses `name=value` pairs over the defaults; unknown names and bad values are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut d = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected name=value"))?;
            let n: u64 = value
                .parse()
                .ok()
                .filter(|&n| (1..=86_400).contains(&n))
                .ok_or_else(|| format!("{pair:?}: expected a number from 1 to 86400"))?;
            match name {
                "checkpoints" => d.checkpoints = n,
                "omission_secs" => d.omission = Duration::from_secs(n),
                "proof_secs" => d.proof = Duration::from_secs(n),
                _ => {
                    return Err(format!(
                        "{name:?}: expected checkpoints, omission_secs or proof_secs"
                    ))
                }
            }
        }
        Ok(d)
    }

    /// The deadlines from [`DEADLINES_ENV`], or the defaults (with a warning if it is invalid).
    pub fn from_env() -> Self {
        let Ok(text) = std::env::var(DEADLINES_ENV) else {
            return Self::default();
        };
        Self::parse(&text).unwrap_or_else(|e| {
            tracing::warn!(target: "huitong::audit", error = %e, "{DEADLINES_ENV} ignored");
            Self::default()
        })
    }
}

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
    /// Alarm deadlines (from the environment at start).
    pub deadlines: Deadlines,
    /// Size of the latest final checkpoint held (kept by the watcher).
    pub final_size: AtomicU64,
    /// When the hub last answered a checkpoint poll (ms; 0: never).
    pub hub_answered_ms: AtomicU64,
    /// Consistency proofs asked of the hub and not served: old size → first failure (ms).
    pub proofs_owed: Mutex<HashMap<u64, u64>>,
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
            deadlines: Deadlines::from_env(),
            final_size: AtomicU64::new(0),
            hub_answered_ms: AtomicU64::new(0),
            proofs_owed: Mutex::new(HashMap::new()),
        }
    }
}

/// The record of a feed entry under `kind` and `id`.
pub fn entry_record(v: &VerifiedEntry, kind: RecordKind, id: String) -> Record {
    let e = &v.entry;
    Record {
        kind,
        id,
        signer: e.feed,
        seq: e.seq,
        hash: v.hash.0,
        at_ms: e.timestamp_ms,
    }
}

/// The record of a grant event as the applications view judged it: its official kind when
/// applied, [`RecordKind::Refused`] when refused (a "revocation" signed by someone who may not
/// revoke is logged as refused, never as a revocation).
pub fn judged_record(j: &Judged) -> Record {
    let kind = match (&j.event, j.refused) {
        (_, Some(_)) => RecordKind::Refused,
        (GrantEvent::Submitted(_), None) => RecordKind::Application,
        (
            GrantEvent::Accepted { .. } | GrantEvent::Approved { .. } | GrantEvent::Rejected { .. },
            None,
        ) => RecordKind::Decision,
        (GrantEvent::Issued { .. } | GrantEvent::Endorsed { .. }, None) => RecordKind::Grant,
        (GrantEvent::Revoked { .. }, None) => RecordKind::Revocation,
    };
    Record {
        kind,
        id: j.event.id().to_owned(),
        signer: j.signer,
        seq: j.seq,
        hash: j.hash,
        at_ms: j.at_ms,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse() {
        let d = Deadlines::parse("checkpoints=2, omission_secs=5,proof_secs=3").unwrap();
        assert_eq!(d.checkpoints, 2);
        assert_eq!(d.omission, Duration::from_secs(5));
        assert_eq!(d.proof, Duration::from_secs(3));
        assert_eq!(Deadlines::parse("").unwrap(), Deadlines::default());
        assert!(Deadlines::parse("checkpoints=0").is_err());
        assert!(Deadlines::parse("proof=3").is_err());
        assert!(Deadlines::parse("proof_secs").is_err());
    }
}
