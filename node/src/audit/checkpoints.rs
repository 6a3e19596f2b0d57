//! The checkpoints this node has seen, and the evidence against the hub: every hub-signed
//! checkpoint it checked is stored (CF `audit_checkpoints`, by tree size) and compared with those
//! held before ([`offer`]). Two different trees of the same size, or a tree the hub cannot prove
//! extends an earlier one (RFC 6962 consistency proof, checked in [`settle`]), is a **split
//! view**: both notes are kept as evidence (CF `audit_evidence`), logged on `huitong::audit` and
//! counted in `status`. Notes are stored in canonical form (only the signatures that verified,
//! [`SignedCheckpoint::note`]), and evidence is keyed by the two trees, not by the notes' bytes:
//! a contradiction replayed with other signature lines is the same row. At most
//! [`MAX_EVIDENCE`] rows are kept (the first for each pair of trees); `status` reads a count
//! kept in memory ([`evidence_count`]), not the rows. A consistency proof the hub does not serve within
//! [`crate::audit_log::Deadlines::proof`] while it keeps answering polls is evidence too
//! (**withheld consistency proof**, [`withheld`]).
//!
//! Only a checkpoint with the charter's witness quorum is **final** ([`latest_final`]); a newer
//! one without it is *pending witness* ([`pending`]).
//!
//! Layering: part of the audit view (no network); the watcher that feeds it checkpoints and asks
//! the hub for proofs is `auditor::watch`, above the network.

use std::sync::atomic::Ordering;

use huitong_protocol::audit::note::{open_checkpoint, SignedCheckpoint};
use huitong_protocol::codec;
use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;
use tracing::error;

use super::keys;
use crate::state::{now_ms, NodeState};
use crate::store::{StoreError, CF_AUDIT_CHECKPOINTS, CF_AUDIT_EVIDENCE};

/// Most checkpoints looked at (newest first) to find the latest final one.
const MAX_FINAL_SCAN: usize = 4096;

/// Most consistency proofs remembered as owed by the hub.
const MAX_OWED: usize = 64;

/// Most rows of split-view evidence kept. A contradiction found once the store holds this many
/// is still logged and counted (`rejected.split_view`), and gossiped, but not stored: any
/// one row is enough to show the hub lied, and only the hub can sign new contradictions.
pub const MAX_EVIDENCE: u64 = 1_000;

/// Split-view evidence: two hub-signed checkpoints that cannot both be true.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evidence {
    /// When this node found it (ms).
    pub detected_at_ms: u64,
    /// What is wrong.
    pub reason: String,
    /// The checkpoint held before.
    #[serde(with = "serde_bytes")]
    pub held: Vec<u8>,
    /// The checkpoint that contradicts it.
    #[serde(with = "serde_bytes")]
    pub offered: Vec<u8>,
}

/// What became of an offered checkpoint.
#[derive(Debug)]
pub enum Offer {
    /// Already held (with at least these cosignatures).
    Known,
    /// New and consistent with everything seen: stored.
    Stored,
    /// Same tree as one held, with more witness cosignatures: stored in its place.
    Cosigned,
    /// A split view: evidence stored.
    Conflict(String),
    /// A consistency proof from `old` to `new` is needed first.
    NeedsProof {
        /// Smaller tree.
        old: SignedCheckpoint,
        /// Larger tree.
        new: SignedCheckpoint,
    },
}

fn reopen(state: &NodeState, note: &[u8]) -> Option<SignedCheckpoint> {
    let (origin, hub, witnesses) = keys(state)?;
    open_checkpoint(note, &origin, &hub, &witnesses).ok()
}

/// The checkpoint held for a tree size.
pub fn held(state: &NodeState, size: u64) -> Result<Option<SignedCheckpoint>, StoreError> {
    let s = &state.store;
    Ok(s.db()
        .get_cf(s.cf(CF_AUDIT_CHECKPOINTS), size.to_be_bytes())?
        .and_then(|note| reopen(state, &note)))
}

/// The largest checkpoint held.
pub fn latest(state: &NodeState) -> Result<Option<SignedCheckpoint>, StoreError> {
    let s = &state.store;
    let Some(kv) = s
        .db()
        .iterator_cf(s.cf(CF_AUDIT_CHECKPOINTS), IteratorMode::End)
        .next()
    else {
        return Ok(None);
    };
    Ok(reopen(state, &kv?.1))
}

/// The largest checkpoint held that carries the witness quorum (among the newest
/// [`MAX_FINAL_SCAN`]).
pub fn latest_final(state: &NodeState) -> Result<Option<SignedCheckpoint>, StoreError> {
    let s = &state.store;
    for kv in s
        .db()
        .iterator_cf(s.cf(CF_AUDIT_CHECKPOINTS), IteratorMode::End)
        .take(MAX_FINAL_SCAN)
    {
        if let Some(cp) = reopen(state, &kv?.1).filter(|c| super::is_final(state, c)) {
            return Ok(Some(cp));
        }
    }
    Ok(None)
}

/// The largest checkpoint held if it is still waiting for witness cosignatures.
pub fn pending(state: &NodeState) -> Result<Option<SignedCheckpoint>, StoreError> {
    Ok(latest(state)?.filter(|c| !super::is_final(state, c)))
}

/// How many final checkpoints larger than `size` are held, counting up to `cap`.
pub fn finals_after(state: &NodeState, size: u64, cap: u64) -> Result<u64, StoreError> {
    let s = &state.store;
    let from = size.saturating_add(1).to_be_bytes();
    let mut n = 0;
    for kv in s.db().iterator_cf(
        s.cf(CF_AUDIT_CHECKPOINTS),
        IteratorMode::From(&from, rocksdb::Direction::Forward),
    ) {
        if reopen(state, &kv?.1).is_some_and(|c| super::is_final(state, &c)) {
            n += 1;
            if n >= cap {
                break;
            }
        }
    }
    Ok(n)
}

/// How many checkpoints are held.
pub fn count(state: &NodeState) -> u64 {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(CF_AUDIT_CHECKPOINTS), IteratorMode::Start)
        .count() as u64
}

/// How many rows of split-view evidence are stored (counted on first use, then kept up to
/// date in memory; no row is decoded).
pub fn evidence_count(state: &NodeState) -> Result<u64, StoreError> {
    count_rows(state, &mut evidence_rows(state))
}

fn evidence_rows(state: &NodeState) -> std::sync::MutexGuard<'_, Option<u64>> {
    state
        .audit
        .evidence_rows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn count_rows(state: &NodeState, rows: &mut Option<u64>) -> Result<u64, StoreError> {
    if let Some(n) = *rows {
        return Ok(n);
    }
    let s = &state.store;
    let mut n = 0;
    for kv in s
        .db()
        .iterator_cf(s.cf(CF_AUDIT_EVIDENCE), IteratorMode::Start)
    {
        kv?;
        n += 1;
    }
    *rows = Some(n);
    Ok(n)
}

/// The key of the evidence that `offered` contradicts `held`: the offered size first (so the
/// largest sizes are the last rows, [`newest_evidence`]), then the held size and both roots.
/// The notes' bytes are not part of it: signature lines do not make another contradiction.
fn evidence_key(held: &SignedCheckpoint, offered: &SignedCheckpoint) -> Vec<u8> {
    let mut key = Vec::with_capacity(80);
    key.extend_from_slice(&offered.size.to_be_bytes());
    key.extend_from_slice(&held.size.to_be_bytes());
    key.extend_from_slice(&held.root.0);
    key.extend_from_slice(&offered.root.0);
    key
}

/// All split-view evidence found so far (at most [`MAX_EVIDENCE`] rows).
pub fn evidence(state: &NodeState) -> Result<Vec<Evidence>, StoreError> {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(CF_AUDIT_EVIDENCE), IteratorMode::Start)
        .map(|kv| {
            let (_, v) = kv?;
            codec::decode(&v, usize::MAX).map_err(|e| StoreError::Corrupt {
                cf: CF_AUDIT_EVIDENCE,
                detail: e.to_string(),
            })
        })
        .collect()
}

fn store(state: &NodeState, cp: &SignedCheckpoint) -> Result<(), StoreError> {
    let s = &state.store;
    s.db()
        .put_cf(s.cf(CF_AUDIT_CHECKPOINTS), cp.size.to_be_bytes(), &cp.note)?;
    if super::is_final(state, cp) {
        state.audit.final_size.fetch_max(cp.size, Ordering::Relaxed);
    }
    Ok(())
}

/// Stores split-view evidence (also used by the mirror when the hub's entries do not match).
pub fn record_conflict(
    state: &NodeState,
    held: &SignedCheckpoint,
    offered: &SignedCheckpoint,
    reason: String,
) -> Result<(), StoreError> {
    conflict(state, held, offered, reason).map(|_| ())
}

fn conflict(
    state: &NodeState,
    held: &SignedCheckpoint,
    offered: &SignedCheckpoint,
    reason: String,
) -> Result<Offer, StoreError> {
    // One row per pair of trees: a replayed contradiction adds nothing, whatever signature
    // lines it carries.
    let key = evidence_key(held, offered);
    let s = &state.store;
    let mut rows = evidence_rows(state);
    if s.db().get_cf(s.cf(CF_AUDIT_EVIDENCE), &key)?.is_some() {
        return Ok(Offer::Conflict(reason));
    }
    let stored = count_rows(state, &mut rows)?;
    if stored >= MAX_EVIDENCE {
        error!(target: "huitong::audit", %reason, held_size = held.size, offered_size = offered.size, kept = stored, "SPLIT VIEW: the hub signed checkpoints that cannot both be true; evidence not stored, {MAX_EVIDENCE} rows are kept already (any one of them shows the hub lied: keep a copy with `huitong audit verify`)");
        state.reject("split_view");
        return Ok(Offer::Conflict(reason));
    }
    let ev = Evidence {
        detected_at_ms: now_ms(),
        reason: reason.clone(),
        held: held.note.clone(),
        offered: offered.note.clone(),
    };
    s.db()
        .put_cf(s.cf(CF_AUDIT_EVIDENCE), key, codec::encode(&ev))?;
    *rows = Some(stored + 1);
    drop(rows);
    error!(target: "huitong::audit", %reason, held_size = held.size, offered_size = offered.size, "SPLIT VIEW: the hub signed checkpoints that cannot both be true; evidence stored");
    state.reject("split_view");
    Ok(Offer::Conflict(reason))
}

/// Compares a hub-signed checkpoint with those held.
pub fn offer(state: &NodeState, cp: &SignedCheckpoint) -> Result<Offer, StoreError> {
    if let Some(h) = held(state, cp.size)? {
        if h.root != cp.root {
            let reason = format!(
                "two different trees of size {}: root {} and root {}",
                cp.size, h.root, cp.root
            );
            return conflict(state, &h, cp, reason);
        }
        if cp
            .cosigned_by
            .iter()
            .any(|(w, _)| !h.cosigned_by.iter().any(|(x, _)| x == w))
        {
            store(state, cp)?;
            return Ok(Offer::Cosigned);
        }
        return Ok(Offer::Known);
    }
    let Some(latest) = latest(state)? else {
        store(state, cp)?;
        return Ok(Offer::Stored);
    };
    Ok(if cp.size > latest.size {
        Offer::NeedsProof {
            old: latest,
            new: cp.clone(),
        }
    } else {
        Offer::NeedsProof {
            old: cp.clone(),
            new: latest,
        }
    })
}

/// Finishes an offer that needed a consistency proof from `old` to `new`.
pub fn settle(
    state: &NodeState,
    old: &SignedCheckpoint,
    new: &SignedCheckpoint,
    offered: &SignedCheckpoint,
    proof: Result<Vec<Hash>, String>,
) -> Result<Offer, StoreError> {
    let held = if offered.size == new.size { old } else { new };
    let checked = proof.and_then(|p| {
        if p.len() > huitong_protocol::audit::MAX_PROOF_HASHES {
            return Err("the proof is too long".into());
        }
        tlog_tiles::check_tree(&p, new.size, new.root, old.size, old.root)
            .map_err(|e| format!("the consistency proof does not verify ({e})"))
    });
    match checked {
        Ok(()) => {
            store(state, offered)?;
            Ok(Offer::Stored)
        }
        Err(why) => conflict(
            state,
            held,
            offered,
            format!(
                "the tree of size {} (root {}) does not extend the tree of size {} (root {}): {why}",
                new.size, new.root, old.size, old.root
            ),
        ),
    }
}

fn owed(state: &NodeState) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, u64>> {
    state
        .audit
        .proofs_owed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Notes that the hub did not serve a consistency proof from `old` to `new`. Once it has owed
/// a proof that its tree extends `old` (to whatever newer size) for the proof deadline, and
/// answered a checkpoint poll meanwhile (so it is up, not down), the refusal is evidence: stored
/// like a split view. Returns the conflict if so.
pub fn withheld(
    state: &NodeState,
    old: &SignedCheckpoint,
    new: &SignedCheckpoint,
) -> Result<Option<Offer>, StoreError> {
    let now = now_ms();
    let since = {
        let mut owed = owed(state);
        if owed.len() >= MAX_OWED && !owed.contains_key(&old.size) {
            // Bounded: forget the oldest debt.
            if let Some(k) = owed.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                owed.remove(&k);
            }
        }
        *owed.entry(old.size).or_insert(now)
    };
    let deadline = u64::try_from(state.audit.deadlines.proof.as_millis()).unwrap_or(u64::MAX);
    let answered = state.audit.hub_answered_ms.load(Ordering::Relaxed);
    if now.saturating_sub(since) < deadline || answered <= since {
        return Ok(None);
    }
    let reason = format!(
        "withheld consistency proof {}→{}: the hub has not served it for {} s while answering other questions",
        old.size,
        new.size,
        (now - since) / 1000
    );
    conflict(state, old, new, reason).map(Some)
}

/// Forgets the consistency proof from `old` the hub owed: it has been served.
pub fn proved(state: &NodeState, old: u64) {
    owed(state).remove(&old);
}

/// The newest `n` rows of split-view evidence (undecodable ones left out).
pub fn newest_evidence(state: &NodeState, n: usize) -> Vec<Evidence> {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(CF_AUDIT_EVIDENCE), IteratorMode::End)
        .take(n)
        .flatten()
        .filter_map(|(_, v)| codec::decode::<Evidence>(&v, usize::MAX).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use huitong_protocol::audit::note::{cosign, sign_checkpoint};
    use huitong_protocol::SecretKey;
    use tlog_tiles::record_hash;

    use super::*;
    use crate::state::testing::department;

    /// The note `note` with one more signature line, from a key no charter names.
    fn padded(note: &[u8], junk: u8) -> Vec<u8> {
        cosign(note, &SecretKey::from_bytes([40 + junk; 32]), 1_800_000_000).expect("cosigns")
    }

    /// Review s7, M3: a genuine conflicting note replayed with different signature lines from
    /// unknown keys made a new evidence row each time, stored as received.
    #[test]
    fn replays_with_unknown_signatures_add_no_evidence() {
        let hub = SecretKey::from_bytes([3; 32]);
        let (_dir, state) = department(&hub.public());
        let (origin, hub_key, witnesses) = keys(&state).expect("a charter naming a hub");
        let open = |n: &[u8]| open_checkpoint(n, &origin, &hub_key, &witnesses).expect("opens");

        let a = sign_checkpoint(&hub, &origin, 10, record_hash(b"R1"));
        assert!(matches!(offer(&state, &open(&a)), Ok(Offer::Stored)));
        let b = sign_checkpoint(&hub, &origin, 10, record_hash(b"R2"));
        for junk in 0..3 {
            let outcome = offer(&state, &open(&padded(&b, junk)));
            assert!(matches!(outcome, Ok(Offer::Conflict(_))), "{outcome:?}");
        }
        let rows = evidence(&state).expect("evidence reads");
        assert_eq!(rows.len(), 1, "one split view, one row");
        assert_eq!(rows[0].held, a);
        assert_eq!(rows[0].offered, b, "stored with the hub's signature only");
        assert_eq!(evidence_count(&state).expect("counts"), 1);
        assert_eq!(state.counters().rejected.get("split_view"), Some(&1));

        // A padded note for a size not held is stored (and vouched for) without the padding.
        let (_dir, state) = department(&hub.public());
        assert!(matches!(
            offer(&state, &open(&padded(&a, 7))),
            Ok(Offer::Stored)
        ));
        let latest = latest(&state).expect("reads").expect("stored");
        assert_eq!(latest.note, a);
    }

    /// At most [`MAX_EVIDENCE`] rows are kept; the count `status` shows follows the store.
    #[test]
    fn evidence_is_capped() {
        let hub = SecretKey::from_bytes([3; 32]);
        let (_dir, state) = department(&hub.public());
        // Storing evidence does not check signatures: unsigned notes keep the test fast.
        let tree = |i: u64| SignedCheckpoint {
            size: 10,
            root: record_hash(&i.to_be_bytes()),
            note: format!("note {i}").into_bytes(),
            cosigned_by: Vec::new(),
        };
        let (held, offered) = (tree(u64::MAX), tree);
        // Rows stored before this process started are counted once.
        record_conflict(&state, &held, &offered(0), "first".into()).expect("stored");
        *evidence_rows(&state) = None;
        for i in 1..MAX_EVIDENCE + 5 {
            record_conflict(&state, &held, &offered(i), format!("row {i}")).expect("handled");
        }
        assert_eq!(evidence_count(&state).expect("counts"), MAX_EVIDENCE);
        assert_eq!(evidence(&state).expect("reads").len() as u64, MAX_EVIDENCE);
        assert_eq!(
            state.counters().rejected.get("split_view"),
            Some(&(MAX_EVIDENCE + 5)),
            "every contradiction is counted, stored or not"
        );
    }
}
