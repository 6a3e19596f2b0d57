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
//! A peer's claim counts only while it is backed. A claim is *refuted* — ignored for the rest
//! of the catch-up, the peer still counting as heard — only on what **that peer** did when it
//! was asked for the seqs it claimed:
//!
//! - it answered a range request from a seq it claimed to hold with nothing, or with something
//!   other than the entries asked for (never a pipelined request beyond its claim, and never
//!   judged against this node's head, which lags while an answer is still being ingested);
//! - or, for a peer other than the hub, [`FAILURES_TO_REFUTE`] such requests in a row failed
//!   (no answer in time, a dropped connection, a refusal or any answer but entries; a peer
//!   whose request still in flight is then answered with entries is believed again). The hub
//!   holds every entry that got out (every member syncs with it), so its claim is never
//!   dropped for slowness: a catch-up then waits.
//!
//! Nothing is refuted by the clock, and a refuted peer is not asked for this node's feed again,
//! so a member that keeps winning the one request of the feed and never answers costs a couple
//! of request timeouts, never a catch-up declared too early (which would fork the feed).
//! Claims of peers that are no longer active members do not count either.
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

/// Failed range requests in a row (no answer in time, a dropped connection) after which a peer
/// other than the hub is refuted.
pub const FAILURES_TO_REFUTE: u32 = 2;

#[derive(Debug)]
struct Pending {
    backup_seq: u64,
    /// The seq of this node's own feed in each peer's latest summary.
    heard: HashMap<NodeId, u64>,
    /// Peers that claimed more than they served: heard, their claims ignored.
    refuted: HashSet<NodeId>,
    /// Range requests of this node's feed that failed in a row, per peer.
    failures: HashMap<NodeId, u32>,
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
            refuted: HashSet::new(),
            failures: HashMap::new(),
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

    /// Whether `from`'s claims are ignored (it is not asked for this node's feed again).
    pub fn refuted(&self, from: &NodeId) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|p| p.refuted.contains(from))
    }

    /// `from` was asked for this node's feed from seq `asked` and answered with nothing, or
    /// with something else than those entries: if it claimed to hold `asked`, its claims are
    /// ignored from now on. Returns whether it was refuted now.
    pub fn refute(&self, from: NodeId, asked: u64) -> bool {
        let mut pending = self.lock();
        let Some(p) = pending.as_mut() else {
            return false;
        };
        match p.heard.get_mut(&from) {
            Some(claim) if *claim >= asked && asked > 0 => {
                *claim = 0;
                p.refuted.insert(from);
                true
            }
            _ => false,
        }
    }

    /// `from` answered a range request of this node's feed with entries: its failures are
    /// forgotten, and a peer refuted for failing (a network blip) is believed again — its next
    /// summary's claim counts.
    pub fn served(&self, from: &NodeId) {
        if let Some(p) = self.lock().as_mut() {
            p.failures.remove(from);
            p.refuted.remove(from);
        }
    }

    /// A range request of this node's feed from seq `asked` to `from` failed (no answer in
    /// time, a dropped connection). After [`FAILURES_TO_REFUTE`] in a row a peer other than
    /// the hub that claims `asked` is refuted. Returns whether it was refuted now.
    pub fn failed(&self, from: NodeId, asked: u64, hub: Option<&NodeId>) -> bool {
        let failures = {
            let mut pending = self.lock();
            let Some(p) = pending.as_mut() else {
                return false;
            };
            let n = p.failures.entry(from).or_default();
            *n = n.saturating_add(1);
            *n
        };
        failures >= FAILURES_TO_REFUTE && hub != Some(&from) && self.refute(from, asked)
    }

    /// Whether the node has caught up, its own head being `own_seq`: `Ok(true)` the moment it
    /// has (the pending state is dropped; the caller removes the stored mark), `Ok(false)` when
    /// nothing was pending, else what it still waits for.
    pub fn check(&self, own_seq: u64, peers: &Peers) -> Result<bool, Behind> {
        let mut pending = self.lock();
        let Some(p) = pending.as_mut() else {
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
        assert_eq!(c.check(5, &peers).unwrap_err().highest_heard, 10_000);
        assert!(!c.refute(key(2), 6), "an honest claim is not refuted");
        assert!(c.refute(key(3), 6), "served nothing from 6");
        c.heard(key(3), 10_000);
        assert_eq!(c.check(5, &peers), Ok(true), "the refuted claim is ignored");

        c.begin(5);
        c.heard(key(1), 5);
        c.heard(key(2), 5);
        c.heard(key(3), 9);
        assert!(c.check(5, &peers).is_err());
        peers.others.retain(|k| *k != key(3));
        assert_eq!(c.check(5, &peers), Ok(true), "key 3 left the charter");

        // A claim is refuted by the peer's own answer to the seq it claimed, never by one
        // beyond it (a pipelined request past its claim), whatever this node's head is.
        peers.others.push(key(3));
        c.begin(5);
        c.heard(key(1), 5);
        c.heard(key(2), 300);
        c.heard(key(3), 9);
        assert!(!c.refute(key(2), 301), "asked beyond its claim");
        assert!(c.refute(key(3), 9), "asked for what it claimed");
        assert_eq!(c.check(5, &peers).unwrap_err().highest_heard, 300);
        assert_eq!(c.check(300, &peers), Ok(true));
    }

    /// Review s7, H1: claims used to be refuted 60 s after they first went above the head, so a
    /// member that kept winning the one range request of the node's feed and never answered
    /// made every honest claim lapse, and the node "caught up" 10,000 entries behind (its next
    /// append forked its feed). Only the silent peer is refuted now, after failing itself, and
    /// the hub never for silence.
    #[test]
    fn silence_refutes_only_the_silent_peer_and_never_the_hub() {
        let c = CatchUp::default();
        let peers = Peers {
            others: vec![key(1), key(2), key(3)],
            hub: Some(key(1)),
        };
        c.begin(5);
        for k in 1..=3 {
            c.heard(key(k), 50_000);
        }
        assert!(c.check(40_000, &peers).is_err());
        // Key 3 wins the request and never answers: refuted after two failures in a row.
        assert!(!c.failed(key(3), 40_001, peers.hub.as_ref()));
        assert!(!c.refuted(&key(3)));
        assert!(c.failed(key(3), 40_001, peers.hub.as_ref()));
        assert!(c.refuted(&key(3)));
        let b = c.check(40_000, &peers).unwrap_err();
        assert_eq!(
            b.highest_heard, 50_000,
            "the honest claims still stand: {b}"
        );
        // The hub is slow: never refuted for it.
        for _ in 0..10 {
            assert!(!c.failed(key(1), 40_001, peers.hub.as_ref()));
        }
        // Key 2 fails once, then serves: its failures are forgotten.
        assert!(!c.failed(key(2), 40_001, peers.hub.as_ref()));
        c.served(&key(2));
        assert!(!c.failed(key(2), 45_001, peers.hub.as_ref()));
        assert!(!c.refuted(&key(2)));
        assert!(c.check(49_999, &peers).is_err());
        // Key 3 serves after all (its failures were blips): believed again.
        c.served(&key(3));
        assert!(!c.refuted(&key(3)));
        c.heard(key(3), 50_001);
        assert_eq!(c.check(50_000, &peers).unwrap_err().highest_heard, 50_001);
        assert_eq!(c.check(50_001, &peers), Ok(true));
    }

    #[test]
    fn nobody_to_wait_for() {
        let c = CatchUp::default();
        c.begin(3);
        assert_eq!(c.check(3, &Peers::default()), Ok(true));
    }
}
