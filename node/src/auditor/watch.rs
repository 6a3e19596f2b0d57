//! Every node's watch over the audit log: each checkpoint it sees (gossip, a poll of the hub
//! every few seconds, the hub's own log, an operator's import) must carry the hub's signature;
//! it is then compared with the checkpoints seen before ([`crate::audit::checkpoints`]). Two
//! different trees of the same size, or a tree the hub cannot prove extends an earlier one
//! (RFC 6962 consistency proof, asked of the hub here), is a **split view**: both notes are kept
//! as evidence, logged on `huitong::audit`, shown by `status` and `huitong audit verify`, and
//! passed on so every member learns of it.
//!
//! A consistency proof the hub does not serve within [`crate::audit_log::Deadlines::proof`] while
//! it keeps answering polls is evidence too (**withheld consistency proof**), kept and flagged the
//! same way.
//!
//! After each checkpoint it stores, a member updates its mirror of the log ([`super::mirror`]).
//! The charter's witnesses (by default the cascade node) cosign (`cosignature/v1`) each
//! checkpoint they have checked to be consistent with everything they saw, and gossip the
//! cosigned note. Every node also gossips its latest checkpoint (and both notes of its newest
//! split-view evidence) again every [`REGOSSIP_POLLS`] polls, and vouches for the same notes in
//! every anti-entropy summary it sends its peers (`Summary::audit`), so a lost gossip message
//! hides neither a split view nor a cosignature: gossipsub drops a repeat of a note for a minute,
//! a summary reaches each peer every sync interval. Every hub-signed checkpoint is stored and checked (the
//! witness needs that before it cosigns), but only one with the charter's witness quorum is
//! **final** ([`latest_final`]); a newer one without it is *pending witness*. Every poll also
//! runs the omission check ([`crate::audit::omission`]) and gossips what it finds missing.
//!
//! The notes to check wait in the inbox ([`crate::audit_log::inbox`]), each source in its own
//! bounded share. Notes vouched for in summaries are verified here, not on the network's task;
//! one that does not open is counted (`rejected.vouched_note`) and logged naming the peer, as a
//! warning at most once a minute per peer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::audit::note::{cosign, open_checkpoint, CheckpointError, SignedCheckpoint};
use huitong_protocol::wire::Gossip;
use huitong_protocol::NodeId;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client;
use crate::audit::checkpoints::{
    held, latest, latest_final, newest_evidence, offer, proved, settle, withheld, Offer,
};
use crate::audit::{keys, omission, service};
use crate::audit_log::{Inbound, Source};
use crate::link::Transport;
use crate::net::Command;
use crate::state::{now_ms, NodeState};
use crate::store::StoreError;

/// How often a member asks the hub for its latest checkpoint.
pub const POLL: Duration = Duration::from_secs(3);

/// Every this many polls a node gossips its latest checkpoint again, so a split view is found
/// even when the gossip that carried one of the two notes was lost (gossipsub drops repeats of
/// the same note for a minute, which bounds the traffic).
const REGOSSIP_POLLS: u32 = 10;

/// How many of the newest split-view evidence rows are gossiped again with it.
const REGOSSIP_EVIDENCE: usize = 4;

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
    proved(state, old.size);
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
    handle_opened(state, t, cp, source, &hub, &witnesses).await
}

/// Compares and (if needed) proves one opened checkpoint; passes it on as needed.
async fn handle_opened(
    state: &Arc<NodeState>,
    t: &Transport,
    cp: SignedCheckpoint,
    source: Source,
    hub: &NodeId,
    witnesses: &[NodeId],
) -> Result<Offer, String> {
    let outcome = match offer(state, &cp).map_err(|e| e.to_string())? {
        Offer::NeedsProof { old, new } => prove(state, t, hub, &old, &new, &cp).await?,
        other => other,
    };
    match &outcome {
        Offer::Stored | Offer::Cosigned if source == Source::Local => {
            gossip(state, t, cp.note.clone()).await;
            vouched(state);
        }
        Offer::Stored | Offer::Cosigned => {
            vouched(state);
        }
        // Both notes of the evidence, at once: a member that saw only one tree needs the other.
        Offer::Conflict(_) => regossip(state, t).await,
        Offer::Known | Offer::NeedsProof { .. } => {}
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
            if state.audit.inbox.push(cosigned, Source::Local).is_err() {
                debug!(target: "huitong::audit", size, "cosignature not queued (the watcher's local share is full); made again when the checkpoint is seen next");
            }
        }
        Err(e) => warn!(error = %e, "cannot cosign a checkpoint"),
    }
    Ok(())
}

/// The notes this node vouches for: the latest checkpoint held and both notes of each of the
/// newest split-view evidence rows. Also kept in `state.audit.vouched` for the anti-entropy
/// summary, which reaches every peer even when gossip is lost.
fn vouched(state: &NodeState) -> Vec<Vec<u8>> {
    let mut notes = Vec::new();
    match latest(state) {
        Ok(Some(cp)) => notes.push(cp.note),
        Ok(None) => {}
        Err(e) => warn!(target: "huitong::audit", error = %e, "cannot read the latest checkpoint"),
    }
    // Evidence notes that no longer open (the charter changed the hub's key) would only be
    // refused by every peer.
    let opens = |n: &[u8]| {
        keys(state).is_some_and(|(origin, hub, witnesses)| {
            open_checkpoint(n, &origin, &hub, &witnesses).is_ok()
        })
    };
    for ev in newest_evidence(state, REGOSSIP_EVIDENCE) {
        notes.extend([ev.held, ev.offered].into_iter().filter(|n| opens(n)));
    }
    notes.truncate(huitong_protocol::wire::MAX_SUMMARY_NOTES);
    *state
        .audit
        .vouched
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = notes.clone();
    notes
}

/// Gossips a checkpoint note (unless the test-only fault `no-checkpoint-gossip` is on, which
/// leaves the anti-entropy summary as the only way out).
async fn gossip(state: &NodeState, t: &Transport, note: Vec<u8>) {
    if crate::faults::on(&state.dir, "no-checkpoint-gossip") {
        return;
    }
    let msg = Gossip::Checkpoint(serde_bytes::ByteBuf::from(note));
    t.net.send(Command::Gossip(msg)).await;
}

/// Gossips again the latest checkpoint held and the notes of the newest split-view evidence
/// (and refreshes what the summary vouches for).
async fn regossip(state: &NodeState, t: &Transport) {
    for note in vouched(state) {
        gossip(state, t, note).await;
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

/// How often the invalid notes one peer vouches for are logged as warnings (the others at
/// debug level; all are counted in `rejected.vouched_note`).
const WARN_REFUSED_EVERY_MS: u64 = 60_000;

/// Most peers whose invalid notes are remembered at once.
const MAX_REFUSING_PEERS: usize = 1024;

/// Per peer, how many notes it vouched for did not open, and when that was last logged as a
/// warning (ms).
#[derive(Default)]
struct Refused(HashMap<NodeId, (u64, u64)>);

impl Refused {
    fn vouched(&mut self, state: &NodeState, peer: NodeId, error: &CheckpointError) {
        state.reject("vouched_note");
        if self.0.len() >= MAX_REFUSING_PEERS && !self.0.contains_key(&peer) {
            self.0.clear();
        }
        let now = now_ms();
        let (refused, warned) = self.0.entry(peer).or_insert((0, 0));
        *refused += 1;
        if *refused == 1 || now.saturating_sub(*warned) >= WARN_REFUSED_EVERY_MS {
            *warned = now;
            warn!(target: "huitong::audit", %peer, refused = *refused, error = %error, "a peer's summary vouched for a checkpoint note that does not open: it is not signed by the hub key of this node's charter, or malformed (check that the peer has the latest charter; counted in status as rejected.vouched_note, logged at most once a minute per peer)");
        } else {
            debug!(target: "huitong::audit", %peer, refused = *refused, error = %error, "a peer vouched for a checkpoint note that does not open");
        }
    }
}

/// Checks one note from the inbox. A note vouched for in a summary is verified here, off the
/// network's task: one that does not open is counted against the peer that sent it. A copy of
/// a checkpoint queued or handled recently that differs only in its signature lines is dropped.
async fn take(state: &Arc<NodeState>, t: &Transport, inbound: Inbound, refused: &mut Refused) {
    let (note, source) = inbound;
    let Some((origin, hub, witnesses)) = keys(state) else {
        debug!(target: "huitong::audit", "no charter naming a hub: checkpoint dropped");
        return;
    };
    let cp = match open_checkpoint(&note, &origin, &hub, &witnesses) {
        Ok(cp) => cp,
        Err(e) => {
            match source {
                Source::Summary(peer) => refused.vouched(state, peer, &e),
                Source::Gossip(_) | Source::Local => {
                    state.reject("checkpoint");
                    warn!(target: "huitong::audit", ?source, error = %e, "refused checkpoint");
                }
            }
            return;
        }
    };
    let inbox = &state.audit.inbox;
    let now = now_ms();
    let exact = *blake3::hash(&note).as_bytes();
    let canonical = *blake3::hash(&cp.note).as_bytes();
    if canonical != exact && inbox.recent(&canonical, now) {
        debug!(target: "huitong::audit", size = cp.size, ?source, "a copy of a checkpoint seen recently, with other signature lines: dropped");
        return;
    }
    inbox.remember(canonical, now);
    if let Err(e) = handle_opened(state, t, cp, source, &hub, &witnesses).await {
        // Not checked: a later copy is checked again.
        inbox.forget(&exact);
        inbox.forget(&canonical);
        warn!(target: "huitong::audit", error = %e, "checkpoint not checked");
    }
}

/// Runs until `shutdown`.
pub async fn run(state: Arc<NodeState>, t: Transport, shutdown: CancellationToken) {
    if let Ok(Some(fin)) = latest_final(&state) {
        state
            .audit
            .final_size
            .fetch_max(fin.size, Ordering::Relaxed);
    }
    vouched(&state);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls: u32 = 0;
    let mut refused = Refused::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            next = state.audit.inbox.next() => take(&state, &t, next, &mut refused).await,
            _ = tick.tick() => {
                if let Err(e) = poll(&state, &t).await {
                    tracing::debug!(error = %e, "audit poll");
                }
                omissions(&state, &t).await;
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(REGOSSIP_POLLS) {
                    regossip(&state, &t).await;
                }
            }
        }
    }
}

/// One pass of [`omission::check`] off the async threads; gossips what it newly found missing.
async fn omissions(state: &Arc<NodeState>, t: &Transport) {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || omission::check(&s)).await {
        Ok(Ok(missing)) => {
            for entry in missing {
                let msg = Gossip::Omission(serde_bytes::ByteBuf::from(entry));
                t.net.send(Command::Gossip(msg)).await;
            }
        }
        Ok(Err(e)) => debug!(target: "huitong::audit", error = %e, "omission check"),
        Err(e) => warn!(error = %e, "omission check panicked"),
    }
}
