//! Catching up on this node's own feed after a restore, before appending to it.
//!
//! A node started from a restored backup may be behind on its **own** feed: entries it signed
//! after the backup reached its peers, not its restored store. Appending at the restored head
//! would sign a second, different entry for a seq its peers hold — a fork of its own feed. So a
//! restored node (its store carries the backup's catch-up mark, see `store/backup.rs`) learns
//! its own feed's head from its peers' sync summaries (`{feed → latest seq}`), fetches the
//! missing entries by anti-entropy like any other feed, and refuses to append until:
//!
//! - it has heard the summaries of a majority of the other active members, the hub among them
//!   when there is another active hub (every member syncs with the hub, so it holds every
//!   entry that got out); and
//! - its own head has reached the highest seq of its own feed that any of them holds.
//!
//! A federation with no other active member has no one to learn from: nothing is waited for.
//! A brand-new node carries no mark and is never held back.
//!
//! Layering: a leaf (pure bookkeeping, no store or network); the state holds one [`CatchUp`],
//! the network reports summaries to it through the feeds, and the feeds ask it before appending.

use std::collections::HashMap;
use std::sync::Mutex;

use huitong_protocol::NodeId;
use serde::{Deserialize, Serialize};

/// What a restored node still waits for, for `status` and the refusal of an append.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Behind {
    /// This node's own feed head.
    pub own_seq: u64,
    /// Its own feed's head in the backup it was restored from.
    pub backup_seq: u64,
    /// The highest seq of its own feed that a peer holds, among the summaries heard.
    pub highest_heard: u64,
    /// Other active members whose summaries were heard.
    pub heard_from: usize,
    /// How many must be heard (a majority of the other active members).
    pub need: usize,
    /// The hub's summary is still awaited.
    pub waiting_for_hub: bool,
}

impl Behind {
    /// Entries of its own feed the node knows it lacks.
    pub fn entries(&self) -> u64 {
        self.highest_heard.saturating_sub(self.own_seq)
    }
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} entries behind (own feed at seq {}, peers hold up to {}; heard {} of the {} members needed{})",
            self.entries(),
            self.own_seq,
            self.highest_heard,
            self.heard_from,
            self.need,
            if self.waiting_for_hub { ", the hub not yet" } else { "" }
        )
    }
}

#[derive(Debug)]
struct Pending {
    backup_seq: u64,
    /// The seq of this node's own feed in each peer's latest summary.
    heard: HashMap<NodeId, u64>,
}

/// The catch-up of a restored node (nothing pending on any other node).
#[derive(Debug, Default)]
pub struct CatchUp {
    pending: Mutex<Option<Pending>>,
}

/// Who must be heard: the other active members, and the hub if it is one of them.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// The other active members.
    pub others: Vec<NodeId>,
    /// The hub, when it is another active member.
    pub hub: Option<NodeId>,
}

impl CatchUp {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts catching up: this store was restored from a backup whose own head was
    /// `backup_seq`.
    pub fn begin(&self, backup_seq: u64) {
        *self.lock() = Some(Pending {
            backup_seq,
            heard: HashMap::new(),
        });
    }

    /// Whether the node is still catching up.
    pub fn pending(&self) -> bool {
        self.lock().is_some()
    }

    /// A peer's summary says it holds this node's own feed up to `seq`. Returns whether the
    /// node is catching up (and so whether to [`Self::check`]).
    pub fn heard(&self, from: NodeId, seq: u64) -> bool {
        match self.lock().as_mut() {
            Some(p) => {
                p.heard.insert(from, seq);
                true
            }
            None => false,
        }
    }

    /// Whether the node has caught up, its own head being `own_seq`: `Ok(true)` the moment it
    /// has (the pending state is dropped; the caller removes the stored mark), `Ok(false)` when
    /// nothing was pending, else what it still waits for.
    pub fn check(&self, own_seq: u64, peers: &Peers) -> Result<bool, Behind> {
        let mut pending = self.lock();
        let Some(p) = pending.as_ref() else {
            return Ok(false);
        };
        let heard_from = peers
            .others
            .iter()
            .filter(|m| p.heard.contains_key(m))
            .count();
        let need = if peers.others.is_empty() {
            0
        } else {
            peers.others.len() / 2 + 1
        };
        let waiting_for_hub = peers.hub.is_some_and(|h| !p.heard.contains_key(&h));
        let highest_heard = p.heard.values().copied().max().unwrap_or(0);
        if heard_from >= need && !waiting_for_hub && own_seq >= highest_heard {
            *pending = None;
            return Ok(true);
        }
        Err(Behind {
            own_seq,
            backup_seq: p.backup_seq,
            highest_heard,
            heard_from,
            need,
            waiting_for_hub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn waits_for_a_majority_with_the_hub_and_their_highest_seq() {
        let c = CatchUp::default();
        let peers = Peers {
            others: vec![key(1), key(2), key(3)],
            hub: Some(key(1)),
        };
        assert_eq!(
            c.check(5, &peers),
            Ok(false),
            "nothing pending on a normal node"
        );
        assert!(!c.heard(key(1), 9), "not recorded when nothing is pending");
        c.begin(5);
        assert!(c.check(5, &peers).is_err(), "no one heard yet");
        c.heard(key(2), 5);
        c.heard(key(3), 5);
        let b = c.check(5, &peers).unwrap_err();
        assert!(
            b.waiting_for_hub && b.heard_from == 2 && b.need == 2,
            "{b:?}"
        );
        c.heard(key(1), 8);
        let b = c.check(5, &peers).unwrap_err();
        assert_eq!(b.entries(), 3);
        assert!(b.to_string().contains("3 entries behind"), "{b}");
        assert_eq!(c.check(8, &peers), Ok(true), "caught up");
        assert!(!c.pending());
        assert_eq!(c.check(8, &peers), Ok(false));
    }

    #[test]
    fn nobody_to_wait_for() {
        let c = CatchUp::default();
        c.begin(3);
        assert_eq!(c.check(3, &Peers::default()), Ok(true));
    }
}
