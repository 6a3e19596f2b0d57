//! Every node's watch over the audit log: each checkpoint it sees (gossip, a poll of the hub
//! every few seconds, the hub's own log, an operator's import) must carry the hub's signature;
//! it is then compared with the checkpoints seen before. Two different trees of the same size,
//! or a tree the hub cannot prove extends an earlier one (RFC 6962 consistency proof, checked
//! here), is a **split view**: both notes are kept as evidence, logged on `huitong::audit`, shown
//! by `status` and `huitong audit verify`, and passed on so every member learns of it.
//!
//! After each checkpoint it stores, a member updates its mirror of the log ([`super::mirror`]).
//! The cascade node is the log's witness: it cosigns (`cosignature/v1`) each checkpoint that it
//! has checked to be consistent with everything it saw, and gossips the cosigned note.

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

use super::{client, keys, service, Source};
use crate::net::Command;
use crate::state::{now_ms, NodeState};
use crate::store::{StoreError, CF_AUDIT_CHECKPOINTS, CF_AUDIT_EVIDENCE};
use crate::transfer::client::Transport;

/// How often a member asks the hub for its latest checkpoint.
pub const POLL: Duration = Duration::from_secs(3);

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
    let mut outcome = offer(state, &cp).map_err(|e| e.to_string())?;
    if let Offer::NeedsProof { old, new } = &outcome {
        let proof = if state.is_hub() {
            let s = state.clone();
            let (o, n) = (old.size, new.size);
            tokio::task::spawn_blocking(move || service::consistency(&s, o, n))
                .await
                .map_err(|e| e.to_string())?
        } else {
            match client::consistency(t, &hub, old.size, new.size).await {
                Ok(p) => Ok(p),
                Err(client::AskError::Refused(m)) => Err(format!("the hub refused: {m}")),
                Err(client::AskError::Unreachable(m)) => {
                    return Err(format!("cannot reach the hub for a consistency proof: {m}"))
                }
            }
        };
        outcome = settle(state, old, new, &cp, proof).map_err(|e| e.to_string())?;
    }
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
    if matches!(outcome, Offer::Stored)
        && state.role_of(&state.id()) == Some(huitong_protocol::Role::Cascade)
        && !cp.cosigned_by.iter().any(|(w, _)| *w == state.id())
    {
        match cosign(note, &state.key, now_ms() / 1000) {
            Ok(cosigned) => {
                info!(target: "huitong::audit", size = cp.size, "cosigned the audit checkpoint as witness");
                let _ = state.audit.inbox.try_send((cosigned, Source::Local));
            }
            Err(e) => warn!(error = %e, "cannot cosign a checkpoint"),
        }
    }
    Ok(outcome)
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
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            }
        }
    }
}
