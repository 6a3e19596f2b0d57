//! The provider's own account of what it sent: one open session per (consumer, resource,
//! version), counting the chunk bytes actually written to the consumer's streams. A session
//! closes when the consumer asks for a receipt ([`Served::complete`]) or when no chunk has been
//! asked for during [`IDLE_CLOSE`] (abandoned: the consumer stopped, was killed, or never asks
//! for receipts); [`run`] appends each closed session to this node's feed as an
//! [`Event::Transfer`], which carries it to every member and to the hub's audit log.
//!
//! Consumers cause these entries, so they are bounded before anything is sent
//! ([`Served::admit`]): one consumer opens at most `entries_per_hour /`
//! [`CONSUMER_SHARE_OF_QUOTA`] sessions an hour with this provider, and no new session opens
//! while [`MAX_BACKLOG`] closed ones wait to be logged. The feed itself logs transfers only in
//! the first half of its quota ([`crate::feeds::TRANSFER_SHARE_OF_QUOTA`]); a transfer that
//! does not fit waits and is logged later, never dropped while the backlog is bounded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huitong_protocol::dataset::ChunkHash;
use huitong_protocol::receipt::{TransferOutcome, TransferRecord};
use huitong_protocol::{Event, NodeId, ResourceCode};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::feeds::{AppendError, Feeds};
use crate::net::Client;
use crate::state::now_ms;

/// A session with no chunk request for this long is closed as abandoned.
pub const IDLE_CLOSE: Duration = Duration::from_secs(15);
/// Open sessions at most; beyond, the least recently active are closed as abandoned.
const MAX_SESSIONS: usize = 4096;
/// Open sessions of one consumer at most (one per version it is pulling); beyond, its least
/// recently active are closed as abandoned, so one member cannot push out the others'.
const MAX_PER_CONSUMER: usize = 64;
/// 信息项 remembered per session (a manifest has at most this many columns anyway).
const MAX_FIELDS: usize = huitong_protocol::receipt::MAX_RECEIPT_FIELDS;
/// One consumer opens at most `entries_per_hour / CONSUMER_SHARE_OF_QUOTA` sessions an hour.
pub const CONSUMER_SHARE_OF_QUOTA: u32 = 16;
/// Closed sessions waiting to be logged beyond which no new session opens: nothing is sent
/// that could not be logged.
pub const MAX_BACKLOG: usize = 256;
const HOUR_MS: u64 = 3_600_000;

/// Why a consumer cannot open a new transfer session now.
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    /// The consumer's hourly share is used up.
    #[error("this member opened {count} transfers from this provider in the last hour, its limit (1/{CONSUMER_SHARE_OF_QUOTA} of the charter's feed quota); try again in {wait_s} s")]
    Consumer {
        /// Sessions opened in the last hour.
        count: usize,
        /// Seconds until one more fits.
        wait_s: u64,
    },
    /// Too many closed transfers wait to be logged.
    #[error("the provider has {0} transfers waiting to be logged in its feed (catching up after a restore, or at its feed quota); try again in a few minutes")]
    Backlog(usize),
}

type Key = (NodeId, ResourceCode, u64);

/// One consumer's requests for one version.
struct Session {
    manifest: ChunkHash,
    grant: Option<String>,
    fields: BTreeSet<String>,
    bytes: u64,
    chunks: u64,
    started_ms: u64,
    last_ms: u64,
}

/// What one chunk answer sent.
pub struct Sent<'a> {
    /// The consumer (the member that connected).
    pub consumer: &'a NodeId,
    /// Resource.
    pub code: &'a ResourceCode,
    /// Version.
    pub version: u64,
    /// The version's manifest.
    pub manifest: ChunkHash,
    /// The column the chunk belongs to, if a table column.
    pub field: Option<&'a str>,
    /// The grant it was sent under.
    pub grant: Option<&'a str>,
    /// Chunk bytes written.
    pub bytes: u64,
}

/// Open transfer sessions.
#[derive(Default)]
pub struct Served {
    sessions: Mutex<HashMap<Key, Session>>,
    /// Closed sessions to log once a restored node has caught up on its own feed.
    later: Mutex<Vec<TransferRecord>>,
    /// When each consumer opened its sessions of the last hour (oldest first).
    opened: Mutex<HashMap<NodeId, VecDeque<u64>>>,
    /// Closed sessions waiting to be logged (kept by [`run`]).
    backlog: AtomicUsize,
}

impl Served {
    /// Lets `consumer` be sent a chunk of `code` version `version`: always within an open
    /// session; a new session only within the consumer's hourly share (`per_hour` sessions) and
    /// while the backlog of transfers to log is short.
    pub fn admit(
        &self,
        consumer: &NodeId,
        code: &ResourceCode,
        version: u64,
        per_hour: u32,
    ) -> Result<(), Busy> {
        let key = (*consumer, code.clone(), version);
        if self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
        {
            return Ok(());
        }
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog >= MAX_BACKLOG {
            return Err(Busy::Backlog(backlog));
        }
        let now = now_ms();
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let times = opened.entry(*consumer).or_default();
        while times.front().is_some_and(|t| t + HOUR_MS <= now) {
            times.pop_front();
        }
        if times.len() >= per_hour.max(1) as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(Busy::Consumer {
                count: times.len(),
                wait_s: (oldest + HOUR_MS).saturating_sub(now).div_ceil(1000),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// Forgets consumers with no session opened in the last hour.
    fn forget_quiet_consumers(&self, now: u64) {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, times| times.back().is_some_and(|t| t + HOUR_MS > now));
    }

    /// Keeps a closed session for [`run`] to log later (the node is catching up on its own
    /// feed).
    pub fn log_later(&self, t: TransferRecord) {
        self.later.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    fn take_later(&self) -> Vec<TransferRecord> {
        std::mem::take(&mut *self.later.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts one chunk written to a consumer.
    pub fn sent(&self, s: &Sent<'_>) {
        let now = now_ms();
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let session = map
            .entry((*s.consumer, s.code.clone(), s.version))
            .or_insert_with(|| Session {
                manifest: s.manifest,
                grant: None,
                fields: BTreeSet::new(),
                bytes: 0,
                chunks: 0,
                started_ms: now,
                last_ms: now,
            });
        if let Some(g) = s.grant {
            session.grant.get_or_insert_with(|| g.to_owned());
        }
        if let Some(f) = s.field {
            if session.fields.len() < MAX_FIELDS && !session.fields.contains(f) {
                session.fields.insert(f.to_owned());
            }
        }
        session.bytes += s.bytes;
        session.chunks += 1;
        session.last_ms = now;
    }

    /// Closes the session of `consumer` for `code` version `version` as completed (the consumer
    /// asked for a receipt); `None` when nothing was sent to it since the last close.
    pub fn complete(
        &self,
        consumer: &NodeId,
        code: &ResourceCode,
        version: u64,
    ) -> Option<TransferRecord> {
        let key = (*consumer, code.clone(), version);
        let s = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)?;
        Some(record(key, s, TransferOutcome::Completed, now_ms()))
    }

    /// Closes as abandoned the sessions idle for `idle`, and the least recently active beyond
    /// [`MAX_PER_CONSUMER`] for one consumer or [`MAX_SESSIONS`] in all.
    pub fn close_idle(&self, idle: Duration) -> Vec<TransferRecord> {
        let now = now_ms();
        let cutoff = now.saturating_sub(idle.as_millis() as u64);
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut stale: Vec<(Key, u64)> = map.iter().map(|(k, s)| (k.clone(), s.last_ms)).collect();
        // Newest first: a consumer's sessions beyond its cap, and any beyond the total, go.
        stale.sort_by_key(|(_, last)| std::cmp::Reverse(*last));
        let mut per_consumer: HashMap<NodeId, usize> = HashMap::new();
        let mut close = Vec::new();
        for (i, (k, last)) in stale.into_iter().enumerate() {
            let n = per_consumer.entry(k.0).or_default();
            *n += 1;
            if last <= cutoff || *n > MAX_PER_CONSUMER || i >= MAX_SESSIONS {
                close.push(k);
            }
        }
        close
            .into_iter()
            .filter_map(|k| {
                let s = map.remove(&k)?;
                Some(record(k, s, TransferOutcome::Abandoned, now))
            })
            .collect()
    }
}

fn record(key: Key, s: Session, outcome: TransferOutcome, now: u64) -> TransferRecord {
    let (consumer, code, version) = key;
    TransferRecord {
        id: hex::encode(rand::random::<[u8; 16]>()),
        consumer,
        code,
        version,
        manifest: s.manifest,
        fields: s.fields.into_iter().collect(),
        grant: s.grant,
        bytes: s.bytes,
        chunks: s.chunks,
        started_ms: s.started_ms,
        ended_ms: match outcome {
            TransferOutcome::Completed => now.max(s.last_ms),
            TransferOutcome::Abandoned => s.last_ms,
        },
        outcome,
        receipt: None,
    }
}

/// Appends a closed session to this node's feed and gossips it. Returns the record when it
/// is to be logged later: the node, restored from a backup, is still catching up on its own
/// feed.
pub async fn log(feeds: &Arc<Feeds>, net: &Client, t: TransferRecord) -> Option<TransferRecord> {
    let f = feeds.clone();
    let (id, bytes, outcome) = (t.id.clone(), t.bytes, t.outcome);
    let record = t.clone();
    match tokio::task::spawn_blocking(move || f.append(Event::Transfer(t))).await {
        Ok(Ok(entry)) => {
            info!(target: "huitong::audit", transfer = %id, bytes, outcome = outcome.as_str(), "logged a transfer");
            net.publish(&entry).await;
            None
        }
        // Kept to log later: the node is catching up on its own feed, or the feed holds as many
        // transfers as its quota lets consumers cause this hour.
        Ok(Err(AppendError::CatchingUp(_) | AppendError::Quota { .. })) => Some(record),
        Ok(Err(e)) => {
            warn!(target: "huitong::audit", transfer = %id, error = %e, "cannot log a transfer");
            None
        }
        Err(e) => {
            warn!(target: "huitong::audit", transfer = %id, error = %e, "cannot log a transfer");
            None
        }
    }
}

/// Transfers waiting to be logged while a restored node catches up on its own feed, at most.
const MAX_WAITING: usize = 4096;

/// Logs `records` in order, keeping those to retry: from the first that has to wait on, all
/// wait (at most [`MAX_WAITING`], the oldest dropped).
async fn log_all(
    feeds: &Arc<Feeds>,
    net: &Client,
    records: Vec<TransferRecord>,
) -> Vec<TransferRecord> {
    let mut waiting = Vec::new();
    let mut records = records.into_iter();
    for t in records.by_ref() {
        if let Some(t) = log(feeds, net, t).await {
            waiting.push(t);
            break;
        }
    }
    waiting.extend(records);
    if waiting.len() > MAX_WAITING {
        let dropped = waiting.len() - MAX_WAITING;
        warn!(target: "huitong::audit", dropped, "too many transfers wait for this node to catch up on its own feed; the oldest are not logged");
        waiting.drain(..dropped);
    }
    waiting
}

/// Closes idle sessions every second and logs them, until `shutdown`.
pub async fn run(feeds: Arc<Feeds>, served: Arc<Served>, net: Client, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        waiting.extend(served.take_later());
        waiting.extend(served.close_idle(IDLE_CLOSE));
        waiting = log_all(&feeds, &net, waiting).await;
        served.backlog.store(waiting.len(), Ordering::Relaxed);
        served.forget_quiet_consumers(now_ms());
    }
    // Sessions still open at shutdown end here: log them as abandoned.
    waiting.extend(served.take_later());
    waiting.extend(served.close_idle(Duration::ZERO));
    let lost = log_all(&feeds, &net, waiting).await;
    if !lost.is_empty() {
        warn!(target: "huitong::audit", transfers = lost.len(), "stopping before this node caught up on its own feed: these transfers are not logged");
    }
}
