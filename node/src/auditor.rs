//! The audit services: every node's auditing of the hub over the network.
//!
//! - [`watch`]: checks each checkpoint it sees (gossip, a poll of the hub every few seconds, the
//!   hub's own log, an operator's import), asks the hub for consistency proofs, keeps split-view
//!   evidence, cosigns as a witness, and runs the omission check.
//! - [`client`]: a member's questions to the hub on the data protocol.
//! - [`mirror`]: a member's copy of the log, checked against the hub's checkpoints.
//! - [`verify`]: `huitong audit verify` and `export-proof`.
//! - [`GossipJudge`]: judges the checkpoint notes and omission reports the network event loop
//!   receives by gossip (the daemon wires it in, so the network never names the audit).
//!
//! Layering: above the audit view ([`crate::audit`]), the network ([`crate::net`]) and the
//! data-stream requests ([`crate::link`]); only the daemon and the admin API name it.

pub mod client;
pub mod mirror;
pub mod verify;
pub mod watch;

use std::sync::Arc;

use huitong_protocol::audit::note::open_checkpoint;
use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::audit::{keys, omission};
use crate::audit_log::Source;
use crate::feeds::Feeds;

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

impl crate::net::AuditGossip for GossipJudge {
    /// Accepts (for propagation) a checkpoint note signed by the hub and hands it to the
    /// watcher, which compares it with what this node saw.
    fn checkpoint(&self, note: Vec<u8>) -> MessageAcceptance {
        let state = self.feeds.state();
        let Some((origin, hub, witnesses)) = keys(state) else {
            return MessageAcceptance::Ignore;
        };
        match open_checkpoint(&note, &origin, &hub, &witnesses) {
            Ok(_) => match state.audit.inbox.try_send((note, Source::Gossip)) {
                Ok(()) => MessageAcceptance::Accept,
                Err(e) => {
                    // Not passed on either; peers' summaries carry it again.
                    debug!(target: "huitong::audit", error = %e, "checkpoint watcher busy; note left for the next summary");
                    MessageAcceptance::Ignore
                }
            },
            Err(e) => {
                warn!(target: "huitong::audit", error = %e, "refused checkpoint gossip");
                state.reject("checkpoint");
                MessageAcceptance::Reject
            }
        }
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
