//! Every node's watch over the audit log: each checkpoint it sees (gossip, a poll of the hub
//! every few seconds, the hub's own log, an operator's import) must carry the hub's signature;
//! it is then compared with the checkpoints seen before. Two different trees of the same size,
//! or a tree the hub cannot prove extends an earlier one (RFC 6962 consistency proof, checked
//! here), is a **split view**: both notes are kept as evidence, logged on `huitong::audit`, shown
//! by `status` and `huitong audit verify`, and passed on so every member learns of it.
//!
//! A consistency proof the hub does not serve within [`crate::audit_log::Deadlines::proof`] while it keeps
//! answering polls is evidence too (**withheld consistency proof**), kept and flagged the same
//! way.
//!
//! After each checkpoint it stores, a member updates its mirror of the log ([`super::mirror`]).
//! The charter's witnesses (by default the cascade node) cosign (`cosignature/v1`) each
//! checkpoint they have checked to be consistent with everything they saw, and gossip the
//! cosigned note. Every node also gossips its latest checkpoint (and the notes of its newest
//! split-view evidence) again every [`REGOSSIP_POLLS`] polls, so a lost gossip message hides
//! neither a split view nor a cosignature. Every hub-signed checkpoint is stored and checked (the witness needs that
//! before it cosigns), but only one with the charter's witness quorum is **final**
//! ([`latest_final`]); a newer one without it is *pending witness*.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::audit::note::{cosign, open_checkpoint, SignedCheckpoint};
use huitong_protocol::codec;
use huitong_protocol::wire::Gossip;
use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{client, keys, service};
use crate::audit_log::Source;
use crate::link::Transport;
use crate::net::Command;
use crate::state::{now_ms, NodeState};
use crate::store::{StoreError, CF_AUDIT_CHECKPOINTS, CF_AUDIT_EVIDENCE};

/// How often a member asks the hub for its latest checkpoint.
pub const POLL: Duration = Duration::from_secs(3);

/// Every this many polls a node gossips its latest checkpoint again, so a split view is found
/// even when the gossip that carried one of the two notes was lost (gossipsub drops repeats of
/// the same note for a minute, which bounds the traffic).
const REGOSSIP_POLLS: u32 = 10;

/// How many of the newest split-view evidence rows are gossiped again with it.
const REGOSSIP_EVIDENCE: usize = 4;

/// Most checkpoints looked at (newest first) to find the latest final one.
const MAX_FINAL_SCAN: usize = 4096;

/// Most consistency proofs remembered as owed by the hub.
const MAX_OWED: usize = 64;

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

/// All split-view evidence found so far.
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
    // One row per pair of notes: a replayed contradiction adds nothing.
    let mut key = offered.size.to_be_bytes().to_vec();
    key.extend_from_slice(&blake3::hash(&held.note).as_bytes()[..12]);
    key.extend_from_slice(&blake3::hash(&offered.note).as_bytes()[..12]);
    let s = &state.store;
    if s.db().get_cf(s.cf(CF_AUDIT_EVIDENCE), &key)?.is_some() {
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

/// Gets (from the hub, or on the hub from its own log) and checks the consistency proof an
/// offer needs; a proof withheld past the deadline is evidence.
async fn prove(
    state: &Arc<NodeState>,
    t: &Transport,
    hub: &huitong_protocol::NodeId,
    old: &SignedCheckpoint,
    new: &SignedCheckpoint,
    offered: &SignedCheckpoint,
) -> Result<Offer, String> {
    let proof = if state.is_hub() {
        let s = state.clone();
        let (o, n) = (old.size, new.size);
        tokio::task::spawn_blocking(move || service::consistency(&s, o, n))
            .await
            .map_err(|e| e.to_string())?
    } else {
        let deadline = state.audit.deadlines.proof;
        let asked = tokio::time::timeout(deadline, client::consistency(t, hub, old.size, new.size))
            .await
            .unwrap_or_else(|_| {
                Err(client::AskError::Unreachable(format!(
                    "no answer within {deadline:?}"
                )))
            });
        match asked {
            Ok(p) => Ok(p),
            Err(client::AskError::Refused(m)) => Err(format!("the hub refused: {m}")),
            Err(client::AskError::Unreachable(m)) => {
                return match withheld(state, old, new).map_err(|e| e.to_string())? {
                    Some(evidence) => Ok(evidence),
                    None => Err(format!("cannot reach the hub for a consistency proof: {m}")),
                };
            }
        }
    };
    owed(state).remove(&old.size);
    settle(state, old, new, offered, proof).map_err(|e| e.to_string())
}

/// Opens, compares and (if needed) proves one checkpoint note; passes it on as needed.
pub async fn handle(
    state: &Arc<NodeState>,
    t: &Transport,
    note: &[u8],
    source: Source,
) -> Result<Offer, String> {
    let (origin, hub, witnesses) =
        keys(state).ok_or("no charter naming a hub: cannot check checkpoints yet")?;
    let cp = open_checkpoint(note, &origin, &hub, &witnesses).map_err(|e| {
        state.reject("checkpoint");
        format!("refused checkpoint: {e}")
    })?;
    let outcome = match offer(state, &cp).map_err(|e| e.to_string())? {
        Offer::NeedsProof { old, new } => prove(state, t, &hub, &old, &new, &cp).await?,
        other => other,
    };
    let pass_on = match &outcome {
        Offer::Stored | Offer::Cosigned => source == Source::Local,
        Offer::Conflict(_) => true,
        _ => false,
    };
    if pass_on {
        let msg = Gossip::Checkpoint(serde_bytes::ByteBuf::from(note.to_vec()));
        t.net.send(Command::Gossip(msg)).await;
    }
    if matches!(outcome, Offer::Stored) && !state.is_hub() {
        if let Err(e) = super::mirror::sync(state, t).await {
            warn!(target: "huitong::audit", error = %e, "audit mirror not updated");
        }
    }
    if matches!(outcome, Offer::Stored | Offer::Known | Offer::Cosigned)
        && witnesses.contains(&state.id())
    {
        witness(state, cp.size).map_err(|e| e.to_string())?;
    }
    Ok(outcome)
}

/// As a witness, cosigns the checkpoint held for `size` (checked to be consistent with
/// everything seen) unless it already carries this node's cosignature. Runs on every sight of
/// that checkpoint, so a cosignature lost on its way (a full inbox) is made again.
fn witness(state: &NodeState, size: u64) -> Result<(), StoreError> {
    let Some(h) = held(state, size)? else {
        return Ok(());
    };
    if h.cosigned_by.iter().any(|(w, _)| *w == state.id()) {
        return Ok(());
    }
    match cosign(&h.note, &state.key, now_ms() / 1000) {
        Ok(cosigned) => {
            info!(target: "huitong::audit", size, "cosigned the audit checkpoint as witness");
            let _ = state.audit.inbox.try_send((cosigned, Source::Local));
        }
        Err(e) => warn!(error = %e, "cannot cosign a checkpoint"),
    }
    Ok(())
}

/// Gossips again the latest checkpoint held and the notes of the newest split-view evidence.
async fn regossip(state: &NodeState, t: &Transport) {
    let mut notes = Vec::new();
    if let Ok(Some(cp)) = latest(state) {
        notes.push(cp.note);
    }
    let s = &state.store;
    for (_, v) in s
        .db()
        .iterator_cf(s.cf(CF_AUDIT_EVIDENCE), IteratorMode::End)
        .take(REGOSSIP_EVIDENCE)
        .flatten()
    {
        if let Ok(ev) = codec::decode::<Evidence>(&v, usize::MAX) {
            notes.extend([ev.held, ev.offered]);
        }
    }
    for note in notes {
        let msg = Gossip::Checkpoint(serde_bytes::ByteBuf::from(note));
        t.net.send(Command::Gossip(msg)).await;
    }
}

/// Asks the hub for its latest checkpoint and handles it.
pub async fn poll(state: &Arc<NodeState>, t: &Transport) -> Result<Option<Offer>, String> {
    let (_, hub, _) = keys(state).ok_or("no charter naming a hub")?;
    if hub == state.id() {
        return Ok(None);
    }
    let note = client::checkpoint(t, &hub)
        .await
        .map_err(|e| e.to_string())?;
    state
        .audit
        .hub_answered_ms
        .store(now_ms(), Ordering::Relaxed);
    match note {
        Some(n) => handle(state, t, &n, Source::Local).await.map(Some),
        None => Ok(None),
    }
}

/// Runs until `shutdown`.
pub async fn run(state: Arc<NodeState>, t: Transport, shutdown: CancellationToken) {
    let Some(mut inbox) = state
        .audit
        .inbox_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    if let Ok(Some(fin)) = latest_final(&state) {
        state
            .audit
            .final_size
            .fetch_max(fin.size, Ordering::Relaxed);
    }
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            next = inbox.recv() => match next {
                Some((note, source)) => {
                    if let Err(e) = handle(&state, &t, &note, source).await {
                        warn!(target: "huitong::audit", error = %e, "checkpoint not checked");
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Err(e) = poll(&state, &t).await {
                    tracing::debug!(error = %e, "audit poll");
                }
                super::omission::tick(&state, &t).await;
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(REGOSSIP_POLLS) {
                    regossip(&state, &t).await;
                }
            }
        }
    }
}
