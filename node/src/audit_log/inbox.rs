//! The checkpoint watcher's inbox: the notes waiting to be checked, in bounded shares so that no
//! one source can keep the others out (review s7, M2).
//!
//! - **Local** notes (the hub's own log, this node's cosignatures) have their own queue, served
//!   first.
//! - **Gossip** (verified on arrival: gossipsub's acceptance depends on it) and **summary** notes
//!   (vouched for in a peer's anti-entropy summary, not verified yet: the watcher verifies
//!   them) each have a queue of [`SHARED_WAITING`] notes, at most [`PER_PEER_WAITING`] of them
//!   from one peer, served one peer after another. The watcher takes a gossip and a summary note
//!   in turn, so a flood on one channel delays a note on the other by one note at most.
//! - Notes whose bytes (or canonical form) were queued or handled in the last [`RECENT_MS`] are
//!   not queued again ([`Inbox::recent`]): repeats and reorderings cost a hash, not a check.
//!
//! Layering: part of [`super`], the audit's in-memory state; knows nothing of the network or the
//! store. A peer is named by its node key.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use huitong_protocol::NodeId;
use tokio::sync::Notify;

/// Local notes waiting at once (the appender waits for room, [`Inbox::push_waiting`]).
pub const LOCAL_WAITING: usize = 64;
/// Gossiped notes, and summary notes, waiting at once (each channel).
pub const SHARED_WAITING: usize = 128;
/// Notes of one peer waiting at once on each channel; more are left for its next summary (or
/// ignored, for gossip: they are not passed on).
pub const PER_PEER_WAITING: usize = 8;
/// Hashes of notes remembered as queued or handled.
pub const RECENT: usize = 4096;
/// How long a note queued or handled is remembered (ms).
pub const RECENT_MS: u64 = 5 * 60 * 1000;

/// Where a checkpoint came from: which share of the inbox it waits in, and whether the watcher
/// passes it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Gossip forwarded by this member (`None`: a peer the roster does not name), verified on
    /// arrival; gossipsub already passes it on.
    Gossip(Option<NodeId>),
    /// Vouched for in this member's anti-entropy summary; not verified yet.
    Summary(NodeId),
    /// The hub's own log, a poll of the hub, an operator's import or this node's cosignature:
    /// pass it on.
    Local,
}

/// A checkpoint note on its way to the watcher.
pub type Inbound = (Vec<u8>, Source);

/// One channel's queue: per peer, the notes waiting, and the peers in the order they are
/// served (round robin).
struct Shared<K> {
    waiting: HashMap<K, VecDeque<Vec<u8>>>,
    turn: VecDeque<K>,
    len: usize,
}

impl<K: Hash + Eq + Copy> Shared<K> {
    fn new() -> Self {
        Self {
            waiting: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
        }
    }

    fn push(&mut self, peer: K, note: Vec<u8>) -> Result<(), Vec<u8>> {
        let queue = self.waiting.entry(peer).or_default();
        if self.len >= SHARED_WAITING || queue.len() >= PER_PEER_WAITING {
            if queue.is_empty() {
                self.waiting.remove(&peer);
            }
            return Err(note);
        }
        if queue.is_empty() {
            self.turn.push_back(peer);
        }
        queue.push_back(note);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<(K, Vec<u8>)> {
        let peer = self.turn.pop_front()?;
        let queue = self.waiting.get_mut(&peer)?;
        let note = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&peer);
        } else {
            self.turn.push_back(peer);
        }
        self.len -= 1;
        Some((peer, note))
    }

    fn waiting(&self, peer: &K) -> usize {
        self.waiting.get(peer).map_or(0, VecDeque::len)
    }
}

/// Hashes remembered for [`RECENT_MS`], at most [`RECENT`] of them (the oldest go first).
struct Recent {
    at: HashMap<[u8; 32], u64>,
    order: VecDeque<([u8; 32], u64)>,
}

impl Recent {
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(h, t)) = self.order.front() {
            let stale = now_ms.saturating_sub(t) >= RECENT_MS
                || self.at.len() > RECENT
                || self.order.len() > 2 * RECENT;
            if !stale {
                break;
            }
            self.order.pop_front();
            if self.at.get(&h) == Some(&t) {
                self.at.remove(&h);
            }
        }
    }
}

struct Queues {
    local: VecDeque<Vec<u8>>,
    gossip: Shared<Option<NodeId>>,
    summary: Shared<NodeId>,
    /// Whether a summary note goes before a gossip note next.
    summary_next: bool,
    recent: Recent,
}

/// The checkpoint watcher's inbox (see the module documentation).
pub struct Inbox {
    queues: Mutex<Queues>,
    /// A note was queued.
    ready: Notify,
    /// A local note was taken (the appender may be waiting for room).
    room: Notify,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            queues: Mutex::new(Queues {
                local: VecDeque::new(),
                gossip: Shared::new(),
                summary: Shared::new(),
                summary_next: false,
                recent: Recent {
                    at: HashMap::new(),
                    order: VecDeque::new(),
                },
            }),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }
}

impl Inbox {
    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a note in its source's share; gives it back when that share is full.
    pub fn push(&self, note: Vec<u8>, source: Source) -> Result<(), Vec<u8>> {
        {
            let mut q = self.queues();
            match source {
                Source::Local if q.local.len() >= LOCAL_WAITING => return Err(note),
                Source::Local => q.local.push_back(note),
                Source::Gossip(peer) => q.gossip.push(peer, note)?,
                Source::Summary(peer) => q.summary.push(peer, note)?,
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a local note, waiting for room if the local share is full.
    pub async fn push_waiting(&self, note: Vec<u8>) {
        let mut note = note;
        loop {
            match self.push(note, Source::Local) {
                Ok(()) => return,
                Err(n) => note = n,
            }
            // `notify_one` keeps a permit: a note taken since the push failed still wakes us.
            self.room.notified().await;
        }
    }

    /// The next note without waiting: local ones first, then gossip and summary notes in
    /// turn, each channel one peer after another.
    pub fn try_next(&self) -> Option<Inbound> {
        let mut q = self.queues();
        if let Some(note) = q.local.pop_front() {
            drop(q);
            self.room.notify_one();
            return Some((note, Source::Local));
        }
        let summary_first = q.summary_next;
        q.summary_next = !summary_first;
        let summary = |q: &mut Queues| q.summary.pop().map(|(p, n)| (n, Source::Summary(p)));
        let gossip = |q: &mut Queues| q.gossip.pop().map(|(p, n)| (n, Source::Gossip(p)));
        if summary_first {
            summary(&mut q).or_else(|| gossip(&mut q))
        } else {
            gossip(&mut q).or_else(|| summary(&mut q))
        }
    }

    /// Waits for the next note ([`Self::try_next`]).
    pub async fn next(&self) -> Inbound {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            // `notify_one` keeps a permit: a note queued since `try_next` still wakes us.
            self.ready.notified().await;
        }
    }

    /// How many notes vouched for by `peer` are waiting.
    pub fn summary_waiting(&self, peer: &NodeId) -> usize {
        self.queues().summary.waiting(peer)
    }

    /// Whether a note with this hash (BLAKE3 of its bytes) was queued or handled in the last
    /// [`RECENT_MS`] at `now_ms`.
    pub fn recent(&self, hash: &[u8; 32], now_ms: u64) -> bool {
        let mut q = self.queues();
        q.recent.expire(now_ms);
        q.recent.at.contains_key(hash)
    }

    /// Remembers a note's hash as queued or handled at `now_ms`.
    pub fn remember(&self, hash: [u8; 32], now_ms: u64) {
        let mut q = self.queues();
        q.recent.at.insert(hash, now_ms);
        q.recent.order.push_back((hash, now_ms));
        q.recent.expire(now_ms);
    }

    /// Forgets a note's hash (its check failed for a reason that may pass later).
    pub fn forget(&self, hash: &[u8; 32]) {
        self.queues().recent.at.remove(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn every_source_keeps_its_share() {
        let inbox = Inbox::default();
        // One peer's summaries take at most its share, whatever it sends.
        let taken = (0..300)
            .filter(|i| {
                inbox
                    .push(format!("{i}").into_bytes(), Source::Summary(key(1)))
                    .is_ok()
            })
            .count();
        assert_eq!(taken, PER_PEER_WAITING);
        assert_eq!(inbox.summary_waiting(&key(1)), PER_PEER_WAITING);
        // Others still get in, on every channel.
        assert!(inbox.push(b"b".to_vec(), Source::Summary(key(2))).is_ok());
        assert!(inbox
            .push(b"g".to_vec(), Source::Gossip(Some(key(1))))
            .is_ok());
        assert!(inbox.push(b"l".to_vec(), Source::Local).is_ok());
        // Local first, then gossip and summaries in turn, one peer after another.
        let order: Vec<Source> = std::iter::from_fn(|| inbox.try_next().map(|(_, s)| s))
            .take(4)
            .collect();
        assert_eq!(
            order,
            vec![
                Source::Local,
                Source::Gossip(Some(key(1))),
                Source::Summary(key(1)),
                Source::Summary(key(2)),
            ]
        );
        // The whole channel is bounded too.
        let inbox = Inbox::default();
        let taken = (0..=255u8)
            .filter(|&p| inbox.push(vec![p], Source::Gossip(Some(key(p)))).is_ok())
            .count();
        assert_eq!(taken, SHARED_WAITING);
    }

    #[test]
    fn recent_notes_are_remembered_for_a_while() {
        let inbox = Inbox::default();
        inbox.remember([1; 32], 1_000);
        assert!(inbox.recent(&[1; 32], 1_000 + RECENT_MS - 1));
        assert!(!inbox.recent(&[1; 32], 1_000 + RECENT_MS));
        inbox.remember([2; 32], 0);
        inbox.forget(&[2; 32]);
        assert!(!inbox.recent(&[2; 32], 0));
        // At most RECENT hashes: the oldest go first.
        for i in 0..=RECENT as u32 {
            let mut h = [0; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            inbox.remember(h, 5);
        }
        assert!(!inbox.recent(&[0; 32], 5));
        let mut last = [0; 32];
        last[..4].copy_from_slice(&(RECENT as u32).to_be_bytes());
        assert!(inbox.recent(&last, 5));
    }
}
