//! Feeds: appending this node's own events and ingesting other nodes' entries ([`Feeds`]), and
//! handing every accepted entry to the views built from the feeds ([`View`]).
//!
//! An entry from another node is stored only after, in order: signature and shape
//! ([`VerifiedEntry::open`]); membership, judged by the charter version the entry names (the
//! signer is an active member there, no later version closed its feed before this seq, and for
//! catalogue events the entry's provider is that member); a timestamp at most
//! [`MAX_CLOCK_AHEAD_MS`] ahead of this node's clock and not before the named version was
//! issued; the hash chain (it extends the feed's
//! head); neither charter version nor timestamp going back; and the feed quota of the charter it
//! names. A different entry at a seq already held is a fork: both are kept as evidence.
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

mod caused;
mod rebuild;

use std::sync::Arc;

use huitong_protocol::charter::{FeedQuota, Refusal};
use huitong_protocol::envelope::SignatureRule;
use huitong_protocol::feed::{FeedError, Stamp, VerifiedEntry};
use huitong_protocol::{Actor, Event, FeedEntry, NodeId, ResourceCode, Role};
use rocksdb::WriteBatch;
use tracing::{debug, info, warn};

use crate::state::{now_ms, NodeState};
use crate::store::{stored_stamp, Fork, Head, StoreError};
use huitong_protocol::audit::{Record, RecordKind};

/// How far ahead of this node's clock an entry's timestamp may be (clock skew between nodes).
pub const MAX_CLOCK_AHEAD_MS: u64 = 10 * 60 * 1000;
const HOUR_MS: u64 = 3_600_000;
/// An entry other members cause — a transfer record of a provider, the hub's acceptance,
/// rejection or token of an application — is appended only while the feed holds fewer than
/// `entries_per_hour / 2` entries of the last hour (at least 1): what members cause never takes
/// the half of the quota that is the node's own (the transfer server also bounds each
/// consumer, `transfer::served`; the hub's agent each applicant, `agent`).
pub const TRANSFER_SHARE_OF_QUOTA: u32 = 2;

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

/// What a range response came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeIngested {
    /// Entries newly stored.
    pub stored: usize,
    /// The refusal that stopped it, when it holds until the charter changes (the same entry
    /// would be refused again: not worth fetching).
    pub refused: Option<&'static str>,
    /// The answer held something other than the entries asked for (bytes that do not open, or
    /// an entry of another feed or seq): the peer's fault, which says nothing about the feed.
    pub mismatch: bool,
}

impl AppendError {
    /// Whether the append was refused before anything was written: the entry is certainly not
    /// in the feed. A store failure may come after the entry was committed (the WAL sync), and
    /// a partial batch wrote some: then the entry may well be in the feed (and be served).
    pub fn refused_before_writing(&self) -> bool {
        !matches!(self, Self::Store(_) | Self::Partial { .. })
    }
}

/// Whether a refusal holds until this node's charter changes: everything but what waits for a
/// charter version or the clock.
pub fn settled(label: &str) -> bool {
    !matches!(
        label,
        "charter_ahead" | "charter_unknown" | "future_timestamp" | "no_charter"
    )
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
    /// The charter admits this node under another USCC than `node.org_code`.
    #[error("{0}")]
    OrgCode(String),
    /// Suspended or absent from the charter.
    #[error("this node's key is not an active member in charter version {0} (suspended, read-only, removed or replaced by a new key); the federation authority must admit or reinstate it before it can publish")]
    Suspended(u64),
    /// The previous entry is stamped ahead of this node's clock.
    #[error("this node's feed has an entry stamped {ahead_s} s ahead of this node's clock; fix the system clock (NTP) before publishing: entries stamped ahead would be refused by every member")]
    Clock {
        /// How far ahead.
        ahead_s: u64,
    },
    /// The charter's feed quota is used up for now.
    #[error("this node's feed has reached the charter's quota of {per_hour} entries an hour; try again in {wait_s} s (the federation authority sets the quota: feed_quota in the charter)")]
    Quota {
        /// The quota.
        per_hour: u32,
        /// Seconds until one more entry fits.
        wait_s: u64,
    },
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

/// Who signed an entry, as the charter version it names lists them.
#[derive(Clone, Debug)]
pub struct Signer {
    /// The member's USCC.
    pub uscc: String,
    /// Its role.
    pub role: Role,
}

/// An entry accepted into a feed, as the views see it.
pub struct Accepted<'a> {
    /// The verified entry.
    pub entry: &'a VerifiedEntry,
    /// The USCC of the member whose feed it is, in the charter version the entry names.
    pub provider: &'a str,
    /// That member's role in that version.
    pub role: Role,
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

    /// Clears everything this view keeps (staged into `batch`), before it is rebuilt from the
    /// feeds ([`Feeds::enforce_closures`]). A view whose rows are keyed by the event keeps them.
    fn reset(&self, _state: &NodeState, _batch: &mut WriteBatch) -> Result<(), StoreError> {
        Ok(())
    }
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
    /// This node's entries caused by other members in the last hour.
    caused: caused::Caused,
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
        FeedError::Actor(_) => "invalid_actor",
        // A layout of a later release: an honest peer may relay it before this node is
        // upgraded, so it is not held against the peer (gossip `Ignore`).
        FeedError::Version(_) => "unsupported_layout",
        _ => "malformed",
    }
}

impl Feeds {
    /// The feeds of `state`, with `views` applied to every accepted entry in this order.
    pub fn new(state: Arc<NodeState>, views: Vec<Box<dyn View>>) -> Self {
        Self {
            state,
            views,
            caused: caused::Caused::default(),
        }
    }

    /// The node state.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Ingests an entry [`VerifiedEntry::open`] opened from network bytes (refusing it when it
    /// did not open).
    pub fn ingest_opened(
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

    /// Applies a range answer whose entries [`open_range`] opened, in order, stopping at the
    /// first that is not stored or a duplicate, or that is not the entry asked for. Only an
    /// entry of `feed` at its place can make the feed count as refused: junk in a peer's answer
    /// ([`RangeIngested::mismatch`]) says nothing about the feed.
    pub fn ingest_opened_range(
        &self,
        feed: &NodeId,
        from: u64,
        opened: Vec<Result<VerifiedEntry, FeedError>>,
    ) -> Result<RangeIngested, StoreError> {
        let mut stored = 0;
        let mut mismatch = false;
        let mut refused = None;
        for (at, o) in (from..).zip(opened) {
            let v = match o {
                Ok(v) if v.entry.feed == *feed && v.entry.seq == at => v,
                Ok(v) => {
                    warn!(target: "huitong::audit", asked_feed = %feed, asked_seq = at, feed = %v.entry.feed, seq = v.entry.seq, "a range answer holds an entry that was not asked for");
                    self.state.reject("range_mismatch");
                    mismatch = true;
                    break;
                }
                Err(e) => {
                    self.ingest_opened(Err(e))?;
                    mismatch = true;
                    break;
                }
            };
            match self.ingest(&v)? {
                Outcome::Stored => stored += 1,
                Outcome::Duplicate => {}
                Outcome::Rejected(label) if settled(label) => {
                    refused = Some(label);
                    break;
                }
                _ => break,
            }
        }
        Ok(RangeIngested {
            stored,
            refused,
            mismatch,
        })
    }

    /// Ingests a verified entry from another node (or replays our own).
    pub fn ingest(&self, v: &VerifiedEntry) -> Result<Outcome, StoreError> {
        let e = &v.entry;
        let state = &self.state;
        // Judged under the writer lock, which every new charter version is added under: an
        // entry is never stored under a version that a newer one, already held, closes.
        let w = state.store.writer();
        // Judged by the charter version the entry names, not the latest one held: every node,
        // old or fresh, reaches the same verdict (issue #10, point 1).
        let judged = state.with_history(|h| {
            let m = h.judge(&e.feed, e.seq, e.charter)?;
            h.judge_rule(e.charter, v.rule())?;
            let named = h.get(e.charter);
            let signer = Signer {
                uscc: m.uscc.to_string(),
                role: m.role,
            };
            let quota = named.map(|c| c.feed_quota).unwrap_or_default();
            Ok::<_, Refusal>((signer, quota, named.map_or(0, |c| c.issued_at_ms)))
        });
        let (signer, quota, issued_at_ms) = match judged {
            Ok(p) => p,
            Err(refusal) => {
                debug!(feed = %e.feed, seq = e.seq, charter = e.charter, %refusal, "entry refused by the charter it names");
                return Ok(self.refuse(refusal.label(), e));
            }
        };
        if let Event::CataloguePublished(entry) | Event::CatalogueUpdated(entry) = &e.event {
            if entry.provider_code.as_str() != signer.uscc {
                return Ok(self.refuse("provider_mismatch", e));
            }
        }
        if e.timestamp_ms > now_ms().saturating_add(MAX_CLOCK_AHEAD_MS) {
            // Not stored now; anti-entropy offers it again once the clocks agree.
            return Ok(self.refuse("future_timestamp", e));
        }
        if e.timestamp_ms < issued_at_ms {
            // Signed before the version it names existed: back-dated (it would dodge the quota).
            return Ok(self.refuse("before_charter", e));
        }
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
        if let Some(reason) = self.out_of_order_or_over_quota(e, head.prev_stamp(), quota)? {
            return Ok(self.refuse(reason, e));
        }
        let mut batch = self.entry_batch(v, &signer)?;
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
        let verdict = state.catch_up.check(own, &state.catch_up_peers());
        match verdict {
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

    /// A peer asked for this node's own feed from seq `asked` answered with nothing, or with
    /// something else than those entries: whatever it claimed from `asked` on is not backed,
    /// and is ignored while catching up.
    pub fn own_range_unbacked(&self, from: NodeId, asked: u64) {
        if self.state.catch_up.refute(from, asked) {
            warn!(target: "huitong::audit", peer = %from, asked, "a peer claimed more of this node's own feed than it serves; its claim is ignored");
            self.own_claim_refuted();
        }
    }

    /// A range request of this node's own feed from seq `asked` to a peer failed (no answer in
    /// time, a dropped connection); a peer other than the hub that keeps failing is not waited
    /// for.
    pub fn own_range_failed(&self, from: NodeId, asked: u64) {
        let hub = self.state.catch_up_peers().hub;
        if self.state.catch_up.failed(from, asked, hub.as_ref()) {
            warn!(target: "huitong::audit", peer = %from, asked, failures = crate::catchup::FAILURES_TO_REFUTE, "a peer that claims more of this node's own feed does not answer for it; its claim is ignored");
            self.own_claim_refuted();
        }
    }

    /// A peer answered a range request of this node's own feed with its entries.
    pub fn own_range_served(&self, from: &NodeId) {
        self.state.catch_up.served(from);
    }

    /// Whether a peer's claims on this node's own feed are ignored (it is not asked for it).
    pub fn own_claim_ignored(&self, from: &NodeId) -> bool {
        self.state.catch_up.refuted(from)
    }

    fn own_claim_refuted(&self) {
        self.state.reject("own_head_claim");
        if let Err(e) = self.own_feed_caught_up() {
            debug!(error = %e, "still catching up on this node's own feed");
        }
    }

    /// Whether entry `e`, which extends its feed's head, goes back in charter version or time,
    /// or exceeds the feed quota of the charter it names: the same verdict on every node, since
    /// it depends only on the feed's own entries.
    fn out_of_order_or_over_quota(
        &self,
        e: &FeedEntry,
        prev: Option<Stamp>,
        quota: FeedQuota,
    ) -> Result<Option<&'static str>, StoreError> {
        if let Some(prev) = prev {
            if e.charter < prev.charter {
                return Ok(Some("charter_regressed"));
            }
            if e.timestamp_ms < prev.timestamp_ms {
                return Ok(Some("time_regressed"));
            }
        }
        if self
            .over_quota(&e.feed, e.seq, e.timestamp_ms, quota)?
            .is_some()
        {
            return Ok(Some("feed_quota"));
        }
        Ok(None)
    }

    /// When entry `seq` of `feed`, stamped `at_ms`, would be the `entries_per_hour + 1`-th
    /// within one hour: the time at which it would no longer be.
    fn over_quota(
        &self,
        feed: &NodeId,
        seq: u64,
        at_ms: u64,
        quota: FeedQuota,
    ) -> Result<Option<u64>, StoreError> {
        let per_hour = u64::from(quota.entries_per_hour);
        if per_hour == 0 {
            // No quota allows nothing (charters refuse 0; never read as "no limit").
            return Ok(Some(at_ms.saturating_add(HOUR_MS)));
        }
        if seq <= per_hour {
            return Ok(None);
        }
        let Some(earlier) = self.stored_entry(feed, seq - per_hour)? else {
            return Ok(None);
        };
        let free_at = earlier.timestamp_ms.saturating_add(HOUR_MS);
        Ok((free_at > at_ms).then_some(free_at))
    }

    /// The timestamp and charter version of a stored entry (it was verified when stored).
    fn stored_entry(&self, feed: &NodeId, seq: u64) -> Result<Option<Stamp>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        let Some((_, bytes)) = self.state.store.entry(feed, seq)? else {
            return Ok(None);
        };
        stored_stamp(feed, seq, &bytes).map(Some)
    }

    /// Everything one entry writes, in one batch: the entry and head, then every view's changes
    /// (catalogue and search, dataset versions, applications, receipts and transfers) and the
    /// audit records they judged (queued on the hub).
    fn entry_batch(&self, v: &VerifiedEntry, signer: &Signer) -> Result<WriteBatch, StoreError> {
        let e = &v.entry;
        let state = &*self.state;
        let mut batch = WriteBatch::default();
        let head = Head {
            seq: e.seq,
            hash: v.hash,
            stamp: Stamp {
                timestamp_ms: e.timestamp_ms,
                charter: e.charter,
            },
        };
        state
            .store
            .put_entry(&mut batch, &e.feed, &head, &v.envelope.to_bytes());
        let records = self.apply_views(&mut batch, v, signer)?;
        for view in &self.views {
            view.judged(state, &mut batch, &records);
        }
        Ok(batch)
    }

    /// Every view's changes for one accepted entry; returns the audit records they judged.
    fn apply_views(
        &self,
        batch: &mut WriteBatch,
        v: &VerifiedEntry,
        signer: &Signer,
    ) -> Result<Vec<Record>, StoreError> {
        let accepted = Accepted {
            entry: v,
            provider: &signer.uscc,
            role: signer.role,
        };
        let mut records = Vec::new();
        for view in &self.views {
            records.extend(view.apply(&self.state, batch, &accepted)?);
        }
        Ok(records)
    }

    fn refuse(&self, reason: &'static str, e: &FeedEntry) -> Outcome {
        warn!(target: "huitong::audit", reason, feed = %e.feed, seq = e.seq, "refused feed entry");
        self.state.reject(reason);
        Outcome::Rejected(reason)
    }

    /// Commits a change a view makes on its own, not carried by a feed entry (a waiting event
    /// that expires): `stage` stages it into one batch and returns the audit records it judged,
    /// which every view then sees ([`View::judged`]: the hub queues them), all under the writer
    /// lock. Returns the records.
    pub fn commit_judged(
        &self,
        stage: impl FnOnce(&NodeState, &mut WriteBatch) -> Applied,
    ) -> Result<Vec<Record>, StoreError> {
        let state = &*self.state;
        let w = state.store.writer();
        let mut batch = WriteBatch::default();
        let records = stage(state, &mut batch)?;
        for view in &self.views {
            view.judged(state, &mut batch, &records);
        }
        state.store.commit(&w, batch, true)?;
        Ok(records)
    }

    /// Appends an event to this node's own feed; returns the sealed entry for gossip.
    pub fn append(&self, event: Event) -> Result<VerifiedEntry, AppendError> {
        self.append_as(None, event)
    }

    /// Appends an event caused by the person `by` (named in the entry), or by the node itself
    /// when `None`.
    pub fn append_as(
        &self,
        by: Option<&Actor>,
        event: Event,
    ) -> Result<VerifiedEntry, AppendError> {
        let mut sealed = self.append_many_as(by, vec![event])?;
        sealed.pop().ok_or(AppendError::Empty)
    }

    /// Why this node may append nothing to its own feed until its charter or configuration
    /// changes (suspended, or not admitted under `node.org_code`); `None` when it may. A
    /// provider then serves no data either: what it sends could not be logged.
    pub fn closed(&self) -> Option<AppendError> {
        let state = &self.state;
        if let Some(version) =
            state.with_charter(|c| c.filter(|c| !c.is_active(&state.id())).map(|c| c.version))
        {
            return Some(AppendError::Suspended(version));
        }
        state.org_code_problem().map(AppendError::OrgCode)
    }

    /// Appends events in order and acknowledges once all are durable (one WAL sync at the
    /// end). If one is refused, the ones before it stay appended and the error says which.
    pub fn append_many(&self, events: Vec<Event>) -> Result<Vec<VerifiedEntry>, AppendError> {
        self.append_many_as(None, events)
    }

    /// [`Feeds::append_many`] for events caused by the person `by` (named in every entry).
    pub fn append_many_as(
        &self,
        by: Option<&Actor>,
        events: Vec<Event>,
    ) -> Result<Vec<VerifiedEntry>, AppendError> {
        let state = &self.state;
        // Before taking the writer lock: catching up may remove the catch-up mark under it.
        self.own_feed_caught_up()?;
        let w = state.store.writer();
        if let Some(closed) = self.closed() {
            return Err(closed);
        }
        let mut out = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            match self.append_one(&w, event, by) {
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
        by: Option<&Actor>,
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
        let prev = head.prev_stamp();
        let now = now_ms();
        if let Some(p) = prev
            .as_ref()
            .filter(|p| p.timestamp_ms > now + MAX_CLOCK_AHEAD_MS)
        {
            return Err(AppendError::Clock {
                ahead_s: (p.timestamp_ms - now) / 1000,
            });
        }
        // Names the latest version held, never one before the previous entry's.
        let (charter, quota, issued_at_ms, rule) = state.with_history(|h| {
            let v = h.version().max(prev.as_ref().map_or(0, |p| p.charter));
            let c = h.get(v);
            (
                v,
                c.map(|c| c.feed_quota).unwrap_or_default(),
                c.map_or(0, |c| c.issued_at_ms),
                c.map_or(SignatureRule::Strict, |c| c.signature_rule()),
            )
        });
        // Never before the previous entry, even if the clock went back, nor before the charter
        // version it names was issued (the authority's clock may be ahead of this one).
        let timestamp_ms = now
            .max(prev.as_ref().map_or(0, |p| p.timestamp_ms))
            .max(issued_at_ms);
        // Entries other members cause may fill only their share of the quota, counted on their
        // own, so no member can spend the node's own share (its publishes, decisions,
        // withdrawals), and the node's own entries do not hold them back while there is room.
        let caused = caused_by_members(&event, state.is_hub());
        if caused {
            let share = (quota.entries_per_hour / TRANSFER_SHARE_OF_QUOTA).max(1);
            let own = caused::OwnFeed {
                store: &state.store,
                me: &state.id(),
                head: head.seq,
                hub: state.is_hub(),
            };
            if let Some(free_at_ms) =
                self.caused
                    .over(own, timestamp_ms, share, quota.entries_per_hour)?
            {
                return Err(AppendError::Quota {
                    per_hour: share,
                    wait_s: free_at_ms.saturating_sub(timestamp_ms).div_ceil(1000),
                });
            }
        }
        if let Some(free_at_ms) = self.over_quota(&state.id(), head.seq + 1, timestamp_ms, quota)? {
            return Err(AppendError::Quota {
                per_hour: quota.entries_per_hour,
                wait_s: (free_at_ms - timestamp_ms).div_ceil(1000),
            });
        }
        let entry = FeedEntry {
            // Signed for the rules of the version it names.
            version: huitong_protocol::feed::entry_version(rule),
            feed: state.id(),
            seq: head.seq + 1,
            prev: head.hash,
            timestamp_ms,
            charter,
            event,
            by: by.cloned(),
        };
        let sealed = entry.seal(&state.key);
        let signer = Signer {
            uscc: ours,
            role: state.role_of(&state.id()).unwrap_or(Role::Department),
        };
        let mut batch = self.entry_batch(&sealed, &signer)?;
        for view in &self.views {
            view.appended(state, &mut batch, &sealed);
        }
        state.store.commit(w, batch, false)?;
        if caused {
            self.caused.appended(timestamp_ms);
        }
        Ok(sealed)
    }
}

/// Entries whose signatures are checked as one batch ([`VerifiedEntry::open_many`]): large
/// enough that a batch costs about 8 µs a signature instead of ~38 µs one by one.
pub const OPEN_BATCH: usize = 256;

/// The first entries of a range answer, opened as one small batch on the calling thread before
/// the rest is spread over the cores: an answer whose first entry is bad costs a batch of 32
/// signatures and one single check (at the per-signature costs above, about 0.3 ms), not a
/// batch of 256 on every core.
pub const FIRST_BATCH: usize = 32;

/// Opens (decodes and checks the signature of) the entries of a range answer, in the answer's
/// order, up to and including the first that does not open: the entries after it are never
/// applied ([`Feeds::ingest_opened_range`] stops there). The first [`FIRST_BATCH`] alone, then
/// the rest on all cores (at most 8 threads) in batches of [`OPEN_BATCH`]; a thread stops at
/// its first bad entry and skips batches after one another thread found. So a bad answer costs
/// at most, per thread, one batch that fails and the single checks up to its first bad entry
/// (at the costs above about 2 ms + 255 × 34 µs ≈ 11 ms; ~22 ms of CPU on 2 cores), never
/// thousands of checks. A panic while opening is raised again here.
pub fn open_range(entries: &[Vec<u8>]) -> Vec<Result<VerifiedEntry, FeedError>> {
    let (first, rest) = entries.split_at(entries.len().min(FIRST_BATCH));
    let mut opened = VerifiedEntry::open_many(first);
    if opened.len() < first.len() || opened.iter().any(Result::is_err) {
        return opened;
    }
    opened.extend(open_on_all_cores(rest));
    opened
}

/// [`open_range`] after its first batch.
fn open_on_all_cores(entries: &[Vec<u8>]) -> Vec<Result<VerifiedEntry, FeedError>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per = entries.len().div_ceil(threads).max(1);
    // The lowest index known not to open.
    let first_bad = AtomicUsize::new(usize::MAX);
    let mut opened: Vec<Result<VerifiedEntry, FeedError>> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(per)
            .enumerate()
            .map(|(c, chunk)| {
                let first_bad = &first_bad;
                s.spawn(move || {
                    let mut out = Vec::with_capacity(chunk.len());
                    for (b, batch) in chunk.chunks(OPEN_BATCH).enumerate() {
                        let start = c * per + b * OPEN_BATCH;
                        if start > first_bad.load(Ordering::Relaxed) {
                            break;
                        }
                        for (i, o) in (start..).zip(VerifiedEntry::open_many(batch)) {
                            let bad = o.is_err();
                            out.push(o);
                            if bad {
                                first_bad.fetch_min(i, Ordering::Relaxed);
                                return out;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::with_capacity(entries.len());
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    // A chunk that stopped early left the ones after it out of place: keep up to the first
    // entry that did not open.
    if let Some(bad) = opened.iter().position(Result::is_err) {
        opened.truncate(bad + 1);
    }
    opened
}

/// Whether this node appends `event` because of what other members did (see
/// [`TRANSFER_SHARE_OF_QUOTA`]): a transfer record (a consumer's pull), or on the hub its
/// acceptance, rejection or token of an application.
fn caused_by_members(event: &Event, hub: bool) -> bool {
    use huitong_protocol::application::GrantEvent;
    match event {
        Event::Transfer(_) => true,
        Event::Grant(
            GrantEvent::Accepted { .. } | GrantEvent::Rejected { .. } | GrantEvent::Issued { .. },
        ) => hub,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use huitong_protocol::feed::{EntryHash, FeedEntry, FEED_ENTRY_VERSION};
    use huitong_protocol::{Event, ResourceCode, SecretKey};

    use super::{Feeds, Outcome, VerifiedEntry};
    use crate::state::testing::department_under_layout;

    /// `n` consecutive entries of one feed (the hub's, key `[3; 32]`), as envelope bytes.
    fn feed_entries(n: u64) -> Vec<Vec<u8>> {
        feed_entries_of_layout(n, FEED_ENTRY_VERSION)
    }

    /// [`feed_entries`] of entry layout `version`.
    fn feed_entries_of_layout(n: u64, version: u8) -> Vec<Vec<u8>> {
        let key = SecretKey::from_bytes([3; 32]);
        let mut prev = EntryHash::ZERO;
        (1..=n)
            .map(|seq| {
                let v = FeedEntry {
                    version,
                    feed: key.public(),
                    seq,
                    prev,
                    timestamp_ms: 1_700_000_000_000 + seq,
                    charter: 1,
                    event: Event::CatalogueWithdrawn {
                        code: ResourceCode::parse("101001/000001").unwrap(),
                        reason: format!("test {seq}"),
                    },
                    by: None,
                }
                .seal(&key);
                prev = v.hash;
                v.envelope.to_bytes()
            })
            .collect()
    }

    #[test]
    fn a_range_is_opened_in_order_up_to_its_first_bad_entry() {
        let mut entries = feed_entries(40);
        let all = super::open_range(&entries);
        assert_eq!(all.len(), 40);
        assert!(all.iter().all(Result::is_ok));
        assert!(all
            .iter()
            .zip(1..)
            .all(|(o, seq)| o.as_ref().is_ok_and(|v| v.entry.seq == seq)));
        // A flipped signature byte in entry 8 (index 7) and garbage at 30: opened up to 8.
        let last = entries[7].len() - 1;
        entries[7][last] ^= 1;
        entries[29] = b"junk".to_vec();
        let opened = super::open_range(&entries);
        assert_eq!(opened.len(), 8, "up to and including the first bad entry");
        assert!(opened[..7].iter().all(Result::is_ok));
        assert!(opened[7].is_err());
    }

    #[test]
    fn a_range_of_several_batches_is_opened_up_to_its_first_bad_entry() {
        let n = 3 * super::OPEN_BATCH + 50;
        let mut entries = feed_entries(n as u64);
        let all = super::open_range(&entries);
        assert_eq!(all.len(), n);
        assert!(all
            .iter()
            .zip(1..)
            .all(|(o, seq)| o.as_ref().is_ok_and(|v| v.entry.seq == seq)));
        // Bad signatures in the third batch and the last one: opened up to the first.
        let bad = 2 * super::OPEN_BATCH + 10;
        for at in [bad, n - 1] {
            let last = entries[at].len() - 1;
            entries[at][last] ^= 1;
        }
        let opened = super::open_range(&entries);
        assert_eq!(
            opened.len(),
            bad + 1,
            "up to and including the first bad entry"
        );
        assert!(opened[..bad].iter().all(Result::is_ok));
        assert!(opened[bad].is_err());
    }

    /// Review s21, H1: the rules an entry is judged by follow from the charter version it
    /// names, never from the release a node runs. Under a layout-1 charter an entry signed for
    /// ZIP-215 (layout 3) is refused, one signed for strict rules (layout 2) stands; the node's
    /// own entries are signed for the charter's rules; under layout 2, layout 3 stands.
    #[test]
    fn the_charter_an_entry_names_decides_its_signature_rules() {
        let hub = SecretKey::from_bytes([3; 32]).public();
        let open = |bytes: &Vec<u8>| VerifiedEntry::open(bytes).expect("a genuine entry");
        let own_version = |feeds: &Feeds| {
            feeds
                .append(Event::CatalogueWithdrawn {
                    code: ResourceCode::parse("101001/000001").expect("code"),
                    reason: "test".into(),
                })
                .expect("append")
                .entry
                .version
        };

        let (_dir, state) = department_under_layout(&hub, 1);
        let feeds = Feeds::new(Arc::new(state), Vec::new());
        let zip215 = feed_entries_of_layout(1, FEED_ENTRY_VERSION);
        assert_eq!(
            feeds.ingest(&open(&zip215[0])).expect("ingest"),
            Outcome::Rejected("signature_rule")
        );
        let strict = feed_entries_of_layout(1, huitong_protocol::feed::STRICT_FEED_ENTRY_VERSION);
        assert_eq!(
            feeds.ingest(&open(&strict[0])).expect("ingest"),
            Outcome::Stored
        );
        assert_eq!(
            own_version(&feeds),
            huitong_protocol::feed::STRICT_FEED_ENTRY_VERSION
        );

        let (_dir2, state) = department_under_layout(&hub, 2);
        let feeds = Feeds::new(Arc::new(state), Vec::new());
        assert_eq!(
            feeds.ingest(&open(&zip215[0])).expect("ingest"),
            Outcome::Stored
        );
        assert_eq!(own_version(&feeds), FEED_ENTRY_VERSION);
    }

    /// Review s21, H2: a range whose first entry has a bad signature is refused after the small
    /// first batch, and a batch that fails is checked one by one only up to its first bad entry.
    #[test]
    fn a_bad_first_entry_stops_a_range_after_the_first_batch() {
        let mut entries = feed_entries(2 * super::FIRST_BATCH as u64 + 10);
        let n = entries[0].len();
        entries[0][n - 1] ^= 1;
        let opened = super::open_range(&entries);
        assert_eq!(opened.len(), 1);
        assert!(opened[0].is_err());
        let opened = VerifiedEntry::open_many(&entries[..super::FIRST_BATCH]);
        assert_eq!(
            opened.len(),
            1,
            "no entry after the first bad one is checked"
        );
    }
}
