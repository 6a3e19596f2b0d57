//! Every member's check that the hub logs what it should: an **omission** alarm.
//!
//! When a member appends an auditable event to its own feed, it remembers it (CF
//! `audit_expected`, in the batch that stores the entry) with the size of the latest final
//! checkpoint then. At every poll of the watcher (`auditor::watch`) [`check`] looks each
//! remembered event up in this node's mirror of the log (every entry of which hashes to a hub-signed root): found, it is
//! forgotten. Once it is overdue — [`crate::audit_log::Deadlines::checkpoints`] newer final checkpoints
//! accepted without it **and** at least [`crate::audit_log::Deadlines::omission`] since it was appended —
//! it is an omission: kept as evidence (CF `audit_omissions`, with the signed entry), logged with
//! `error!` on `huitong::audit`, counted in `status` (OMISSION) and `audit verify`, and gossiped
//! ([`huitong_protocol::wire::Gossip::Omission`], carrying the signed entry) so every member checks it too.
//!
//! A member receiving that gossip checks the entry's signature, that its signer is a member and
//! that it is an auditable event before storing anything; it then ingests the entry (so an
//! honest hub that never had it logs it now) and remembers it like its own, with its own
//! deadlines: a member cannot raise an alarm elsewhere by sending a fresh entry. Judging waits
//! until the mirror covers the latest final checkpoint, so a mirror that is behind raises
//! nothing. The hub keeps no such list: it queues records in the batch that stores the entry.
//!
//! Layering: part of the audit view (no network): [`expect`] runs as this node appends (through
//! `audit::View`), [`on_gossip`] is called by the auditor's gossip judge, and the watcher above
//! the network runs [`check`] and gossips what it finds.
//!
//! Not caught here: a hub that stops publishing checkpoints altogether (no newer final
//! checkpoint ever arrives); `status` shows the checkpoint size not moving.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::codec;
use huitong_protocol::feed::{FeedError, VerifiedEntry};
use huitong_protocol::Event;
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, warn};

use super::appender::with_log;
use super::checkpoints;
use crate::applications::Judged;
use crate::feeds::{entry_record, Feeds, Outcome};
use crate::state::{now_ms, NodeState};
use crate::store::{StoreError, CF_AUDIT_EXPECTED, CF_AUDIT_OMISSIONS};

/// Version of the stored rows.
const ROW_VERSION: u8 = 1;
/// Most remembered events looked at in one pass.
const MAX_SCAN: usize = 10_000;
/// Most events remembered because others reported them missing.
const MAX_REPORTED: u64 = 100_000;
/// Most omissions listed.
const MAX_LISTED: usize = 10_000;
/// Largest stored row (a signed entry and a few numbers).
const MAX_ROW: usize = huitong_protocol::codec::MAX_ENVELOPE_BYTES + 1024;

/// An event this node expects to find in the log.
#[derive(Debug, Serialize, Deserialize)]
struct Expected {
    version: u8,
    /// When this node appended it, or learnt that it is missing (ms).
    since_ms: u64,
    /// The latest final checkpoint's size then.
    final_size: u64,
    /// Appended by this node (not reported by another).
    own: bool,
    /// The signed feed entry.
    #[serde(with = "serde_bytes")]
    entry: Vec<u8>,
}

/// An event found missing from the hub's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Omission {
    /// Row version.
    pub version: u8,
    /// When this node found it (ms).
    pub detected_at_ms: u64,
    /// What is missing, and since when.
    pub reason: String,
    /// The signed feed entry the log lacks.
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
}

/// Why reported omission gossip was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Not a validly signed feed entry.
    #[error("not a signed feed entry: {0}")]
    Entry(#[from] FeedError),
    /// Signed by a key the charter does not name.
    #[error("the entry's signer is not a federation member")]
    NotMember,
    /// Not an event the log records.
    #[error("the entry is not an auditable event")]
    NotAuditable,
    /// The entry contradicts this node's copy of its feed.
    #[error("the entry was refused: {0}")]
    Refused(&'static str),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Database failure.
    #[error("store: {0}")]
    Db(#[from] rocksdb::Error),
}

/// The record the hub logs for an entry, if it logs one: its own record, or for a grant event
/// the record of the event as applied (a refused one is logged under the same key, the entry's
/// hash).
fn record(v: &VerifiedEntry) -> Option<Record> {
    match &v.entry.event {
        Event::Grant(g) => Some(
            Judged {
                signer: v.entry.feed,
                seq: v.entry.seq,
                hash: v.hash.0,
                at_ms: v.entry.timestamp_ms,
                event: g.clone(),
                refused: None,
            }
            .record(),
        ),
        Event::Receipt(bytes) => huitong_protocol::receipt::SignedReceipt::open(bytes)
            .ok()
            .map(|r| entry_record(v, RecordKind::Receipt, r.id)),
        Event::Transfer(t) => Some(entry_record(v, RecordKind::Transfer, t.id.clone())),
        Event::CallLogHead(h) => Some(entry_record(v, RecordKind::Calls, h.record_id())),
        _ => None,
    }
}

fn row(e: &Expected) -> Vec<u8> {
    codec::encode(e)
}

/// On a member, remembers an auditable event it appends, in the batch that stores it.
pub fn expect(state: &NodeState, batch: &mut WriteBatch, v: &VerifiedEntry) {
    if state.is_hub() {
        return;
    }
    let Some(r) = record(v) else {
        return;
    };
    let e = Expected {
        version: ROW_VERSION,
        since_ms: now_ms(),
        final_size: state.audit.final_size.load(Ordering::Relaxed),
        own: true,
        entry: v.envelope.to_bytes(),
    };
    batch.put_cf(state.store.cf(CF_AUDIT_EXPECTED), r.key(), row(&e));
}

/// Handles omission gossip: checks the entry, ingests it and remembers it. Returns whether it
/// was new here (and so worth passing on).
pub fn on_gossip(feeds: &Feeds, bytes: &[u8]) -> Result<bool, ReportError> {
    let state = feeds.state();
    let v = VerifiedEntry::open(bytes)?;
    if state.role_of(&v.entry.feed).is_none() {
        return Err(ReportError::NotMember);
    }
    let r = record(&v).ok_or(ReportError::NotAuditable)?;
    match feeds.ingest(&v)? {
        Outcome::Fork => return Err(ReportError::Refused("fork")),
        Outcome::Rejected(why) => return Err(ReportError::Refused(why)),
        Outcome::Stored | Outcome::Duplicate | Outcome::Gap { .. } => {}
    }
    if state.is_hub() {
        return Ok(true);
    }
    let s = &state.store;
    let key = r.key();
    if s.db().get_cf(s.cf(CF_AUDIT_OMISSIONS), key)?.is_some()
        || s.db().get_cf(s.cf(CF_AUDIT_EXPECTED), key)?.is_some()
    {
        return Ok(false);
    }
    let remembered = s
        .db()
        .property_int_value_cf(s.cf(CF_AUDIT_EXPECTED), "rocksdb.estimate-num-keys")?
        .unwrap_or(0);
    if remembered >= MAX_REPORTED {
        warn!(target: "huitong::audit", id = %r.id, "too many events awaiting the log; a reported omission is not checked here");
        return Ok(false);
    }
    let e = Expected {
        version: ROW_VERSION,
        since_ms: now_ms(),
        final_size: state.audit.final_size.load(Ordering::Relaxed),
        own: false,
        entry: bytes.to_vec(),
    };
    s.db().put_cf(s.cf(CF_AUDIT_EXPECTED), key, row(&e))?;
    debug!(target: "huitong::audit", id = %r.id, signer = %r.signer, seq = r.seq, "an event reported missing from the audit log; checking it here");
    Ok(true)
}

/// One pass (blocking): forgets events found in the log, raises an alarm for overdue ones, and
/// returns the signed entries newly found missing (to gossip).
pub fn check(state: &NodeState) -> Result<Vec<Vec<u8>>, String> {
    if state.is_hub() {
        return Ok(Vec::new());
    }
    let s = &state.store;
    let cf = s.cf(CF_AUDIT_EXPECTED);
    let mut rows = Vec::new();
    let mut batch = WriteBatch::default();
    for kv in s.db().iterator_cf(cf, IteratorMode::Start).take(MAX_SCAN) {
        let (k, v) = kv.map_err(|e| e.to_string())?;
        match (
            <[u8; 32]>::try_from(&k[..]),
            codec::decode::<Expected>(&v, MAX_ROW),
        ) {
            (Ok(k), Ok(e)) => rows.push((k, e)),
            _ => {
                warn!(target: "huitong::audit", "dropping an undecodable awaited audit record");
                batch.delete_cf(cf, &k);
            }
        }
    }
    let Some(fin) = checkpoints::latest_final(state).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let keys: Vec<[u8; 32]> = rows.iter().map(|(k, _)| *k).collect();
    let (mirrored, found) = with_log(state, move |l| {
        Ok((
            l.size(),
            keys.iter().map(|k| l.contains(k)).collect::<Vec<_>>(),
        ))
    })
    .map_err(|e| e.to_string())?;
    let d = state.audit.deadlines;
    let min_age = u64::try_from(d.omission.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms();
    let mut newer: HashMap<u64, u64> = HashMap::new();
    let mut missing = Vec::new();
    for ((key, e), found) in rows.into_iter().zip(found) {
        if found {
            batch.delete_cf(cf, key);
            continue;
        }
        // A mirror behind the latest final checkpoint cannot tell.
        if mirrored < fin.size || now.saturating_sub(e.since_ms) < min_age {
            continue;
        }
        let n = match newer.get(&e.final_size) {
            Some(&n) => n,
            None => {
                let n = checkpoints::finals_after(state, e.final_size, d.checkpoints)
                    .map_err(|e| e.to_string())?;
                newer.insert(e.final_size, n);
                n
            }
        };
        if n < d.checkpoints {
            continue;
        }
        batch.delete_cf(cf, key);
        if raise(state, &key, &e, n, fin.size, now).map_err(|e| e.to_string())? {
            missing.push(e.entry);
        }
    }
    s.db().write(batch).map_err(|e| e.to_string())?;
    Ok(missing)
}

/// Stores the omission (once); returns whether it is new.
fn raise(
    state: &NodeState,
    key: &[u8; 32],
    e: &Expected,
    newer: u64,
    final_size: u64,
    now: u64,
) -> Result<bool, StoreError> {
    let s = &state.store;
    if s.db().get_cf(s.cf(CF_AUDIT_OMISSIONS), key)?.is_some() {
        return Ok(false);
    }
    let what = VerifiedEntry::open(&e.entry)
        .ok()
        .and_then(|v| record(&v))
        .map(|r| {
            let signer = state
                .with_charter(|c| c.and_then(|c| c.member(&r.signer)).map(|m| m.name.clone()))
                .unwrap_or_else(|| r.signer.to_hex());
            format!("{} {} ({signer}, seq {})", r.kind.as_str(), r.id, r.seq)
        })
        .unwrap_or_else(|| hex::encode(key));
    let reason = format!(
        "{what} is not in the hub's log: {newer} newer final checkpoints (latest size {final_size}) and {} s after this node {}",
        now.saturating_sub(e.since_ms) / 1000,
        if e.own { "appended it" } else { "learnt it was missing" }
    );
    let o = Omission {
        version: ROW_VERSION,
        detected_at_ms: now,
        reason: reason.clone(),
        entry: e.entry.clone(),
    };
    s.db()
        .put_cf(s.cf(CF_AUDIT_OMISSIONS), key, codec::encode(&o))?;
    error!(target: "huitong::audit", %reason, own = e.own, "OMISSION: the hub left an event out of its audit log; evidence stored");
    state.reject("omission");
    Ok(true)
}

/// The omissions found so far (at most [`MAX_LISTED`]).
pub fn list(state: &NodeState) -> Result<Vec<Omission>, StoreError> {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(CF_AUDIT_OMISSIONS), IteratorMode::Start)
        .take(MAX_LISTED)
        .map(|kv| {
            let (_, v) = kv?;
            codec::decode(&v, MAX_ROW).map_err(|e| StoreError::Corrupt {
                cf: CF_AUDIT_OMISSIONS,
                detail: e.to_string(),
            })
        })
        .collect()
}
