//! Feeds: appending this node's own events and ingesting other nodes' entries ([`Feeds`]), and
//! handing every accepted entry to the views built from the feeds ([`View`]).
//!
//! An entry from another node is stored only after, in order: signature and shape
//! ([`VerifiedEntry::open`]), membership (the signer is an active charter member and, for
//! catalogue events, the entry's provider is that member), and the hash chain (it extends the
//! feed's head). A different entry at a seq already held is a fork: both are kept as evidence.
//!
//! Views: each module that keeps a view over the feeds (the catalogue, dataset versions,
//! applications, receipts and transfers, the audit queue) implements [`View`], and the daemon
//! registers them in [`Feeds::new`]. Invariant: the entry, its head and every view's changes go
//! into one `WriteBatch`, committed at once, so a crash never leaves a view disagreeing with the
//! feeds.
//!
//! A node restored from a backup appends nothing until it has caught up on its own feed from
//! its peers ([`Feeds::own_feed_caught_up`], [`crate::catchup`]): the network reports each
//! peer's head of this node's feed ([`Feeds::heard_own_head`]), anti-entropy fetches the
//! entries, and they are ingested like any other feed's.
//!
//! Layering: above `state` and `store`, below every view and everything that appends or ingests
//! (the network, the transfers, the agent, the admin API). It never names a view.

use std::sync::Arc;

use huitong_protocol::feed::{FeedError, VerifiedEntry, FEED_ENTRY_VERSION};
use huitong_protocol::{Event, FeedEntry, NodeId, ResourceCode};
use rocksdb::WriteBatch;
use tracing::{debug, info, warn};

use crate::state::{now_ms, NodeState};
use crate::store::{Fork, StoreError};
use huitong_protocol::audit::{Record, RecordKind};

/// What happened to an incoming entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored as the feed's new head.
    Stored,
    /// Already held.
    Duplicate,
    /// Ahead of what is held: the entries from `have + 1` must be fetched first.
    Gap {
        /// The feed.
        feed: NodeId,
        /// Seq held.
        have: u64,
    },
    /// A different entry is held at this seq: evidence stored.
    Fork,
    /// Refused; the reason is a short stable label counted in `status`.
    Rejected(&'static str),
}

/// Why this node cannot append to its own feed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The entry names another organisation.
    #[error("provider_code {found} is not this node's organisation ({ours}); a node publishes only its own organisation's resources")]
    NotOurs {
        /// Code in the entry.
        found: String,
        /// This node's code.
        ours: String,
    },
    /// Suspended or absent from the charter.
    #[error("this node is suspended in charter version {0}; the federation authority must reinstate it before it can publish")]
    Suspended(u64),
    /// Withdraw of an unknown entry.
    #[error("no published entry {0} of this organisation; see `huitong catalogue list --provider <your USCC>`")]
    Unknown(ResourceCode),
    /// Nothing to append.
    #[error("no events to append")]
    Empty,
    /// A restored node has not caught up on its own feed from its peers yet.
    #[error("this node was restored from a backup and is catching up on its own feed from its peers: {0}; appending now would fork it. Try again shortly (`huitong status` shows the progress; the peers must be reachable)")]
    CatchingUp(crate::catchup::Behind),
    /// Some events of a batch were appended before one was refused.
    #[error("{appended} entries were published; the next one was refused: {source}")]
    Partial {
        /// How many were appended (and are durable).
        appended: usize,
        /// Why the next one was refused.
        source: Box<AppendError>,
    },
}

/// An entry accepted into a feed, as the views see it.
pub struct Accepted<'a> {
    /// The verified entry.
    pub entry: &'a VerifiedEntry,
    /// The USCC of the member whose feed it is.
    pub provider: &'a str,
}

/// What a view made of an accepted entry: the audit records of what it judged (for the hub's
/// log).
pub type Applied = Result<Vec<Record>, StoreError>;

/// A view built from the feeds. Every hook runs under the store's writer lock; the ones given a
/// batch stage their changes into the batch that stores the entry.
pub trait View: Send + Sync {
    /// Before this node appends `event` to its own feed: the event as it is to be appended (a
    /// view may restate it), or why it is refused.
    fn prepare(&self, _state: &NodeState, event: Event) -> Result<Event, AppendError> {
        Ok(event)
    }

    /// Stages this view's changes for an accepted entry into `batch`.
    fn apply(&self, _state: &NodeState, _batch: &mut WriteBatch, _a: &Accepted<'_>) -> Applied {
        Ok(Vec::new())
    }

    /// After every view has applied an entry: the audit records they returned, all together.
    fn judged(&self, _state: &NodeState, _batch: &mut WriteBatch, _records: &[Record]) {}

    /// An entry this node appends to its own feed, after [`View::apply`] and [`View::judged`].
    fn appended(&self, _state: &NodeState, _batch: &mut WriteBatch, _entry: &VerifiedEntry) {}
}

/// The audit record of a feed entry under `kind` and `id`.
pub fn entry_record(v: &VerifiedEntry, kind: RecordKind, id: String) -> Record {
    let e = &v.entry;
    Record {
        kind,
        id,
        signer: e.feed,
        seq: e.seq,
        hash: v.hash.0,
        at_ms: e.timestamp_ms,
    }
}

/// The feeds of a node and the views registered on them.
pub struct Feeds {
    state: Arc<NodeState>,
    views: Vec<Box<dyn View>>,
}

/// Labels for `status` counters.
fn label(e: &FeedError) -> &'static str {
    use huitong_protocol::codec::DecodeError;
    use huitong_protocol::envelope::EnvelopeError;
    match e {
        FeedError::Envelope(EnvelopeError::Decode(DecodeError::TooLarge { .. })) => "oversize",
        FeedError::Envelope(EnvelopeError::Decode(_)) | FeedError::Payload(_) => "malformed",
        FeedError::Envelope(EnvelopeError::BadSignature(_)) => "bad_signature",
        FeedError::WrongSigner { .. } => "wrong_signer",
        FeedError::Invalid(_) => "invalid_entry",
        _ => "malformed",
    }
}

impl Feeds {
    /// The feeds of `state`, with `views` applied to every accepted entry in this order.
    pub fn new(state: Arc<NodeState>, views: Vec<Box<dyn View>>) -> Self {
        Self { state, views }
    }

    /// The node state.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Opens and ingests envelope bytes received from the network.
    pub fn ingest_bytes(&self, bytes: &[u8]) -> Result<Outcome, StoreError> {
        self.ingest_opened(VerifiedEntry::open(bytes))
    }

    fn ingest_opened(
        &self,
        opened: Result<VerifiedEntry, FeedError>,
    ) -> Result<Outcome, StoreError> {
        match opened {
            Ok(v) => self.ingest(&v),
            Err(e) => {
                let l = label(&e);
                warn!(target: "huitong::audit", reason = l, error = %e, "refused feed entry");
                self.state.reject(l);
                Ok(Outcome::Rejected(l))
            }
        }
    }

    /// Ingests consecutive entries of one feed (a range response). Signatures are checked on
    /// all cores first; entries are then applied in order, stopping at the first that is not
    /// stored or a duplicate. Returns how many were newly stored.
    pub fn ingest_range(&self, entries: &[Vec<u8>]) -> Result<usize, StoreError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let per = entries.len().div_ceil(threads).max(1);
        let opened: Vec<Result<VerifiedEntry, FeedError>> = std::thread::scope(|s| {
            let handles: Vec<_> = entries
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|b| VerifiedEntry::open(b))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut stored = 0;
        for o in opened {
            match self.ingest_opened(o)? {
                Outcome::Stored => stored += 1,
                Outcome::Duplicate => {}
                _ => break,
            }
        }
        Ok(stored)
    }

    /// Ingests a verified entry from another node (or replays our own).
    pub fn ingest(&self, v: &VerifiedEntry) -> Result<Outcome, StoreError> {
        let e = &v.entry;
        let state = &self.state;
        let provider = state.with_charter(|c| {
            let Some(c) = c else {
                return Err("no_charter");
            };
            match c.member(&e.feed) {
                None => Err("not_member"),
                Some(m) if m.status != huitong_protocol::MemberStatus::Active => Err("suspended"),
                Some(m) => Ok(m.uscc.to_string()),
            }
        });
        let provider = match provider {
            Ok(p) => p,
            Err(reason) => return Ok(self.refuse(reason, e)),
        };
        if let Event::CataloguePublished(entry) | Event::CatalogueUpdated(entry) = &e.event {
            if entry.provider_code.as_str() != provider {
                return Ok(self.refuse("provider_mismatch", e));
            }
        }
        let w = state.store.writer();
        let head = state.store.head(&e.feed)?;
        if e.seq <= head.seq {
            let Some((hash, first)) = state.store.entry(&e.feed, e.seq)? else {
                return Ok(Outcome::Duplicate);
            };
            if hash == v.hash {
                return Ok(Outcome::Duplicate);
            }
            let fork = Fork {
                feed: e.feed,
                seq: e.seq,
                first,
                second: v.envelope.to_bytes(),
                detected_at_ms: now_ms(),
            };
            warn!(target: "huitong::audit", feed = %e.feed, seq = e.seq, "FORK: two different signed entries for the same feed and seq; evidence stored");
            let mut batch = WriteBatch::default();
            state.store.put_fork(&mut batch, &fork);
            state.store.commit(&w, batch, true)?;
            state.reject("fork");
            return Ok(Outcome::Fork);
        }
        if e.seq > head.seq + 1 {
            return Ok(Outcome::Gap {
                feed: e.feed,
                have: head.seq,
            });
        }
        if e.prev != head.hash {
            return Ok(self.refuse("broken_chain", e));
        }
        let mut batch = self.entry_batch(v, &provider)?;
        let own = e.feed == state.id();
        if own {
            // This node's own entry, learnt back from a peer after a restore: remembered as if
            // just appended (the audit's omission check).
            for view in &self.views {
                view.appended(state, &mut batch, v);
            }
        }
        state.store.commit(&w, batch, false)?;
        drop(w);
        if own {
            if let Err(e) = self.own_feed_caught_up() {
                debug!(error = %e, "still catching up on this node's own feed");
            }
        } else {
            state.accepted();
        }
        debug!(feed = %e.feed, seq = e.seq, "stored feed entry");
        Ok(Outcome::Stored)
    }

    /// Refuses to append while a restored node catches up on its own feed
    /// ([`crate::catchup`]); removes the stored catch-up mark the moment it has caught up.
    pub fn own_feed_caught_up(&self) -> Result<(), AppendError> {
        let state = &self.state;
        if !state.catch_up.pending() {
            return Ok(());
        }
        let own = state.store.head(&state.id())?.seq;
        match state.catch_up.check(own, &state.catch_up_peers()) {
            Ok(true) => {
                state.store.clear_catch_up_mark(&state.store.writer())?;
                info!(
                    own_seq = own,
                    "caught up on this node's own feed from its peers; appending again"
                );
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(behind) => Err(AppendError::CatchingUp(behind)),
        }
    }

    /// What a restored node still waits for before it appends (`None`: nothing).
    pub fn catching_up(&self) -> Result<Option<crate::catchup::Behind>, StoreError> {
        match self.own_feed_caught_up() {
            Ok(()) => Ok(None),
            Err(AppendError::CatchingUp(b)) => Ok(Some(b)),
            Err(AppendError::Store(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// A peer's sync summary holds this node's own feed up to `seq` (heeded while a restored
    /// node catches up; nothing otherwise).
    pub fn heard_own_head(&self, from: NodeId, seq: u64) {
        if self.state.catch_up.heard(from, seq) {
            if let Err(e) = self.own_feed_caught_up() {
                debug!(error = %e, "still catching up on this node's own feed");
            }
        }
    }

    /// Everything one entry writes, in one batch: the entry and head, then every view's changes
    /// (catalogue and search, dataset versions, applications, receipts and transfers) and the
    /// audit records they judged (queued on the hub).
    fn entry_batch(&self, v: &VerifiedEntry, provider: &str) -> Result<WriteBatch, StoreError> {
        let e = &v.entry;
        let state = &*self.state;
        let mut batch = WriteBatch::default();
        state
            .store
            .put_entry(&mut batch, &e.feed, e.seq, &v.hash, &v.envelope.to_bytes());
        let accepted = Accepted { entry: v, provider };
        let mut records = Vec::new();
        for view in &self.views {
            records.extend(view.apply(state, &mut batch, &accepted)?);
        }
        for view in &self.views {
            view.judged(state, &mut batch, &records);
        }
        Ok(batch)
    }

    fn refuse(&self, reason: &'static str, e: &FeedEntry) -> Outcome {
        warn!(target: "huitong::audit", reason, feed = %e.feed, seq = e.seq, "refused feed entry");
        self.state.reject(reason);
        Outcome::Rejected(reason)
    }

    /// Appends an event to this node's own feed; returns the sealed entry for gossip.
    pub fn append(&self, event: Event) -> Result<VerifiedEntry, AppendError> {
        let mut sealed = self.append_many(vec![event])?;
        sealed.pop().ok_or(AppendError::Empty)
    }

    /// Appends events in order and acknowledges once all are durable (one WAL sync at the
    /// end). If one is refused, the ones before it stay appended and the error says which.
    pub fn append_many(&self, events: Vec<Event>) -> Result<Vec<VerifiedEntry>, AppendError> {
        let state = &self.state;
        if let Some(version) =
            state.with_charter(|c| c.filter(|c| !c.is_active(&state.id())).map(|c| c.version))
        {
            return Err(AppendError::Suspended(version));
        }
        self.own_feed_caught_up()?;
        let w = state.store.writer();
        let mut out = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            match self.append_one(&w, event) {
                Ok(v) => out.push(v),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Make everything appended so far durable before acknowledging anything.
        state.store.sync(&w)?;
        match failure {
            None => Ok(out),
            Some(e) if out.is_empty() => Err(e),
            Some(e) => Err(AppendError::Partial {
                appended: out.len(),
                source: Box::new(e),
            }),
        }
    }

    fn append_one(
        &self,
        w: &crate::store::Writer<'_>,
        event: Event,
    ) -> Result<VerifiedEntry, AppendError> {
        let state = &*self.state;
        let ours = state.config.node.org_code.clone();
        if let Event::CataloguePublished(entry) | Event::CatalogueUpdated(entry) = &event {
            if entry.provider_code.as_str() != ours {
                return Err(AppendError::NotOurs {
                    found: entry.provider_code.to_string(),
                    ours,
                });
            }
        }
        let mut event = event;
        for view in &self.views {
            event = view.prepare(state, event)?;
        }
        let head = state.store.head(&state.id())?;
        let entry = FeedEntry {
            version: FEED_ENTRY_VERSION,
            feed: state.id(),
            seq: head.seq + 1,
            prev: head.hash,
            timestamp_ms: now_ms(),
            event,
        };
        let sealed = entry.seal(&state.key);
        let mut batch = self.entry_batch(&sealed, &ours)?;
        for view in &self.views {
            view.appended(state, &mut batch, &sealed);
        }
        state.store.commit(w, batch, false)?;
        Ok(sealed)
    }
}
