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
//! A peer's claim counts only while it is backed: a peer that claims more of this node's feed
//! than it then serves — its range answer from the node's head is empty, or the node's head has
//! not reached its claim [`UNBACKED_CLAIM_MS`] after it first claimed more (it does not answer,
//! or keeps raising the claim) — is *refuted*, and its claims are ignored for the rest of the
//! catch-up (it still counts as heard). Claims of peers that are no longer active members do not
//! count either. So a hostile member cannot hold a restored node back by claiming a seq it does
//! not hold; an honest peer serves what it claims within seconds.
//!
//! A federation with no other active member has no one to learn from: nothing is waited for.
//! A brand-new node carries no mark and is never held back.
//!
//! Layering: a leaf (pure bookkeeping, no store or network); the state holds one [`CatchUp`],
//! the network reports summaries to it through the feeds, and the feeds ask it before appending.

use std::collections::{HashMap, HashSet};
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

/// How long a claim above this node's head may stay unmet before it is refuted (ms).
pub const UNBACKED_CLAIM_MS: u64 = 60_000;

#[derive(Debug)]
struct Pending {
    backup_seq: u64,
    /// The seq of this node's own feed in each peer's latest summary.
    heard: HashMap<NodeId, u64>,
    /// Peers that claimed more than they served: heard, their claims ignored.
    refuted: HashSet<NodeId>,
    /// When each peer's claim first went above this node's head (reset once the head reaches
    /// it).
    above_since: HashMap<NodeId, u64>,
}

/// The catch-up of a restored node (nothing pending on any other node).
#[derive(Debug, Default)]
pub struct CatchUp {
    pending: Mutex<Option<Pending>>,
    /// Peers refuted by the deadline since [`CatchUp::take_refuted`] was last called.
    newly_refuted: Mutex<Vec<NodeId>>,
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
            refuted: HashSet::new(),
            above_since: HashMap::new(),
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
                let claim = if p.refuted.contains(&from) { 0 } else { seq };
                p.heard.insert(from, claim);
                true
            }
            None => false,
        }
    }

    /// `from` answered a range request from this node's head `own_seq` with nothing, though it
    /// claimed more: its claims are ignored from now on. Returns whether it had claimed more
    /// (and so was refuted now).
    pub fn refute(&self, from: NodeId, own_seq: u64) -> bool {
        let mut pending = self.lock();
        let Some(p) = pending.as_mut() else {
            return false;
        };
        match p.heard.get_mut(&from) {
            Some(claim) if *claim > own_seq => {
                *claim = 0;
                p.refuted.insert(from);
                true
            }
            _ => false,
        }
    }

    /// Whether the node has caught up, its own head being `own_seq`: `Ok(true)` the moment it
    /// has (the pending state is dropped; the caller removes the stored mark), `Ok(false)` when
    /// nothing was pending, else what it still waits for.
    /// The peers whose claims [`Self::check`] refuted since the last call (to log).
    pub fn take_refuted(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.newly_refuted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Claims above `own_seq` unmet for [`UNBACKED_CLAIM_MS`] at `now_ms` are refuted first.
    pub fn check(&self, own_seq: u64, peers: &Peers, now_ms: u64) -> Result<bool, Behind> {
        let mut pending = self.lock();
        let Some(p) = pending.as_mut() else {
            return Ok(false);
        };
        for (peer, claim) in p.heard.iter_mut() {
            if *claim <= own_seq {
                p.above_since.remove(peer);
                continue;
            }
            let since = *p.above_since.entry(*peer).or_insert(now_ms);
            if now_ms.saturating_sub(since) >= UNBACKED_CLAIM_MS {
                *claim = 0;
                p.refuted.insert(*peer);
                self.newly_refuted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(*peer);
            }
        }
        p.above_since.retain(|k, _| !p.refuted.contains(k));
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
        // Only claims of the current active members (and the hub) count.
        let highest_heard = p
            .heard
            .iter()
            .filter(|(k, _)| peers.others.contains(k) || peers.hub.as_ref() == Some(*k))
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0);
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
            c.check(5, &peers, 0),
            Ok(false),
            "nothing pending on a normal node"
        );
        assert!(!c.heard(key(1), 9), "not recorded when nothing is pending");
        c.begin(5);
        assert!(c.check(5, &peers, 0).is_err(), "no one heard yet");
        c.heard(key(2), 5);
        c.heard(key(3), 5);
        let b = c.check(5, &peers, 0).unwrap_err();
        assert!(
            b.waiting_for_hub && b.heard_from == 2 && b.need == 2,
            "{b:?}"
        );
        c.heard(key(1), 8);
        let b = c.check(5, &peers, 0).unwrap_err();
        assert_eq!(b.entries(), 3);
        assert!(b.to_string().contains("3 entries behind"), "{b}");
        assert_eq!(c.check(8, &peers, 0), Ok(true), "caught up");
        assert!(!c.pending());
        assert_eq!(c.check(8, &peers, 0), Ok(false));
    }

    /// A peer that claims more than it serves, or that is no longer a member, holds nothing up.
    #[test]
    fn unbacked_and_former_members_claims_are_ignored() {
        let c = CatchUp::default();
        let mut peers = Peers {
            others: vec![key(1), key(2), key(3)],
            hub: Some(key(1)),
        };
        c.begin(5);
        c.heard(key(1), 5);
        c.heard(key(2), 5);
        c.heard(key(3), 10_000);
        assert_eq!(c.check(5, &peers, 0).unwrap_err().highest_heard, 10_000);
        assert!(!c.refute(key(2), 5), "an honest claim is not refuted");
        assert!(c.refute(key(3), 5), "served nothing past 5");
        c.heard(key(3), 10_000);
        assert_eq!(
            c.check(5, &peers, 0),
            Ok(true),
            "the refuted claim is ignored"
        );

        c.begin(5);
        c.heard(key(1), 5);
        c.heard(key(2), 5);
        c.heard(key(3), 9);
        assert!(c.check(5, &peers, 0).is_err());
        peers.others.retain(|k| *k != key(3));
        assert_eq!(c.check(5, &peers, 0), Ok(true), "key 3 left the charter");

        // A claim that is never served (or keeps rising) is refuted after the deadline; one
        // that is met in time is not.
        peers.others.push(key(3));
        c.begin(5);
        c.heard(key(1), 5);
        c.heard(key(2), 7);
        c.heard(key(3), 9);
        assert!(c.check(5, &peers, 1_000).is_err());
        c.heard(key(3), 12);
        assert!(c.check(7, &peers, 1_000 + UNBACKED_CLAIM_MS - 1).is_err());
        assert_eq!(
            c.check(7, &peers, 1_000 + UNBACKED_CLAIM_MS),
            Ok(true),
            "key 3's claim refuted; key 2's was met"
        );
    }

    #[test]
    fn nobody_to_wait_for() {
        let c = CatchUp::default();
        c.begin(3);
        assert_eq!(c.check(3, &Peers::default(), 0), Ok(true));
    }
}
