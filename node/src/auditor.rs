//! The audit services: every node's auditing of the hub over the network.
//!
//! - [`watch`]: checks each checkpoint it sees (gossip, a poll of the hub every few seconds, the
//!   hub's own log, an operator's import), asks the hub for consistency proofs, keeps split-view
//!   evidence, cosigns as a witness, and runs the omission check.
//! - [`client`]: a member's questions to the hub on the data protocol.
//! - [`mirror`]: a member's copy of the log, checked against the hub's checkpoints.
//! - [`verify`]: `huitong audit verify` and `export-proof`.
//! - [`calls`]: `huitong audit verify --record` for one API call, through its call log anchor.
//! - [`GossipJudge`]: judges the checkpoint notes and omission reports the network event loop
//!   receives by gossip, and queues the notes peers vouch for in their summaries for the
//!   watcher, unchecked, in each peer's share of its inbox ([`crate::audit_log::inbox`]) (the
//!   daemon wires it in, so the network never names the audit).
//!
//! Layering: above the audit view ([`crate::audit`]), the network ([`crate::net`]) and the
//! data-stream requests ([`crate::link`]); only the daemon and the admin API name it.

pub mod calls;
pub mod client;
pub mod mirror;
pub mod verify;
pub mod watch;

use std::sync::Arc;

use huitong_protocol::audit::note::open_checkpoint;
use huitong_protocol::NodeId;
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::audit::{keys, omission};
use crate::audit_log::Source;
use crate::feeds::Feeds;
use crate::state::now_ms;

/// Judges audit gossip for the network event loop (inline, as entry gossip is).
pub struct GossipJudge {
    feeds: Arc<Feeds>,
}

impl GossipJudge {
    /// A judge that ingests reported entries into `feeds`.
    pub fn new(feeds: Arc<Feeds>) -> Self {
        Self { feeds }
    }
}

fn hash(note: &[u8]) -> [u8; 32] {
    *blake3::hash(note).as_bytes()
}

impl crate::net::AuditGossip for GossipJudge {
    /// Accepts (for propagation) a checkpoint note signed by the hub and hands it, in canonical
    /// form, to the watcher, which compares it with what this node saw. A note queued or
    /// handled recently is not handed over again: an exact copy is still passed on (a regossip
    /// reaches members that missed it), a copy with other signature lines is not.
    fn checkpoint(&self, from: Option<NodeId>, note: Vec<u8>) -> MessageAcceptance {
        let state = self.feeds.state();
        let Some((origin, hub, witnesses)) = keys(state) else {
            return MessageAcceptance::Ignore;
        };
        let cp = match open_checkpoint(&note, &origin, &hub, &witnesses) {
            Ok(cp) => cp,
            Err(e) => {
                warn!(target: "huitong::audit", peer = ?from, error = %e, "refused checkpoint gossip");
                state.reject("checkpoint");
                return MessageAcceptance::Reject;
            }
        };
        let inbox = &state.audit.inbox;
        let now = now_ms();
        let (exact, canonical) = (hash(&note), hash(&cp.note));
        if inbox.recent(&exact, now) || inbox.recent(&canonical, now) {
            return if exact == canonical {
                MessageAcceptance::Accept
            } else {
                MessageAcceptance::Ignore
            };
        }
        match inbox.push(cp.note, Source::Gossip(from)) {
            Ok(()) => {
                inbox.remember(exact, now);
                inbox.remember(canonical, now);
                MessageAcceptance::Accept
            }
            Err(_) => {
                // Not passed on either; peers' summaries carry it again.
                debug!(target: "huitong::audit", peer = ?from, "this peer's share of the checkpoint watcher's inbox is full; note left for the next summary");
                MessageAcceptance::Ignore
            }
        }
    }

    fn vouched_by(&self, peer: NodeId, notes: Vec<Vec<u8>>) -> bool {
        let inbox = &self.feeds.state().audit.inbox;
        let now = now_ms();
        let mut all_taken = true;
        for note in notes {
            let exact = hash(&note);
            if inbox.recent(&exact, now) {
                continue;
            }
            match inbox.push(note, Source::Summary(peer)) {
                Ok(()) => inbox.remember(exact, now),
                Err(_) => all_taken = false,
            }
        }
        if !all_taken {
            debug!(target: "huitong::audit", %peer, "this peer's share of the checkpoint watcher's inbox is full; the rest of its notes wait for its next summary");
        }
        all_taken
    }

    fn vouched(&self) -> Vec<Vec<u8>> {
        self.feeds
            .state()
            .audit
            .vouched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn omission(&self, source: &PeerId, entry: &[u8]) -> MessageAcceptance {
        match omission::on_gossip(&self.feeds, entry) {
            Ok(true) => MessageAcceptance::Accept,
            Ok(false) => MessageAcceptance::Ignore,
            Err(e) => {
                warn!(target: "huitong::audit", peer = %source, error = %e, "refused omission report");
                self.feeds.state().reject("omission_report");
                MessageAcceptance::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use huitong_protocol::audit::note::sign_checkpoint;
    use huitong_protocol::SecretKey;
    use libp2p::gossipsub::MessageAcceptance::Accept;

    use super::*;
    use crate::net::AuditGossip;
    use crate::state::testing::department;

    /// Review s7, M2: one member's summaries, full of genuine checkpoints it can reorder at
    /// will, filled the watcher's one inbox, and the node then ignored (and stopped passing on)
    /// a gossiped split-view note.
    #[test]
    fn one_peers_summaries_leave_room_for_a_gossiped_split_view() {
        let hub = SecretKey::from_bytes([3; 32]);
        let (_dir, state) = department(&hub.public());
        let judge = GossipJudge::new(Arc::new(Feeds::new(Arc::new(state), Vec::new())));
        let state = judge.feeds.state().clone();
        let (origin, _, _) = keys(&state).expect("a charter naming a hub");
        let root = |i: u64| tlog_tiles::record_hash(&i.to_be_bytes());

        // A rogue member vouches for 300 genuine checkpoints, 9 a summary.
        let rogue = SecretKey::from_bytes([20; 32]).public();
        let genuine: Vec<Vec<u8>> = (1..=300)
            .map(|size| sign_checkpoint(&hub, &origin, size, root(size)))
            .collect();
        for summary in genuine.chunks(9) {
            judge.vouched_by(rogue, summary.to_vec());
        }
        // An honest member gossips a note that contradicts one of them.
        let honest = SecretKey::from_bytes([21; 32]).public();
        let conflicting = sign_checkpoint(&hub, &origin, 5, root(1_000));
        assert_eq!(judge.checkpoint(Some(honest), conflicting.clone()), Accept);

        // The rogue holds no more than its share, and the conflicting note is served next.
        let inbox = &state.audit.inbox;
        assert_eq!(
            inbox.summary_waiting(&rogue),
            crate::audit_log::inbox::PER_PEER_WAITING
        );
        assert_eq!(
            inbox.try_next(),
            Some((conflicting.clone(), Source::Gossip(Some(honest))))
        );
        // Gossiped again (a regossip after gossipsub forgot it), it is passed on, not queued.
        assert_eq!(judge.checkpoint(Some(honest), conflicting), Accept);
        assert!(matches!(inbox.try_next(), Some((_, Source::Summary(p))) if p == rogue));
    }

    /// Notes vouched for again, in another order or by another peer, are not queued again.
    #[test]
    fn repeated_notes_are_queued_once() {
        let hub = SecretKey::from_bytes([3; 32]);
        let (_dir, state) = department(&hub.public());
        let judge = GossipJudge::new(Arc::new(Feeds::new(Arc::new(state), Vec::new())));
        let state = judge.feeds.state().clone();
        let (origin, _, _) = keys(&state).expect("a charter naming a hub");
        let notes: Vec<Vec<u8>> = (1..=3)
            .map(|size| sign_checkpoint(&hub, &origin, size, tlog_tiles::record_hash(b"x")))
            .collect();
        let (a, b) = (
            SecretKey::from_bytes([20; 32]).public(),
            SecretKey::from_bytes([21; 32]).public(),
        );
        assert!(judge.vouched_by(a, notes.clone()));
        let mut reordered = notes.clone();
        reordered.reverse();
        assert!(judge.vouched_by(a, reordered));
        assert!(judge.vouched_by(b, notes.clone()));
        let queued = std::iter::from_fn(|| state.audit.inbox.try_next()).count();
        assert_eq!(queued, 3);
        // Gossip of a note queued from a summary is passed on, not queued again.
        assert_eq!(judge.checkpoint(Some(b), notes[0].clone()), Accept);
        assert_eq!(state.audit.inbox.try_next(), None);
    }
}
