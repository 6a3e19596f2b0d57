//! The provider's own account of what it sent: one open session per (consumer, resource,
//! version), counting the chunk bytes actually written to the consumer's streams. A session
//! closes when the consumer asks for a receipt ([`Served::complete`]) or when no chunk has been
//! asked for during [`IDLE_CLOSE`] (abandoned: the consumer stopped, was killed, or never asks
//! for receipts); [`run`] appends each closed session to this node's feed as an
//! [`Event::Transfer`], which carries it to every member and to the hub's audit log.

use std::collections::{BTreeSet, HashMap};
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
}

impl Served {
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
        Ok(Err(AppendError::CatchingUp(_))) => Some(record),
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

/// Logs `records`, keeping those to retry (at most [`MAX_WAITING`], the oldest dropped).
async fn log_all(
    feeds: &Arc<Feeds>,
    net: &Client,
    records: Vec<TransferRecord>,
) -> Vec<TransferRecord> {
    let mut waiting = Vec::new();
    for t in records {
        waiting.extend(log(feeds, net, t).await);
    }
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
    }
    // Sessions still open at shutdown end here: log them as abandoned.
    waiting.extend(served.take_later());
    waiting.extend(served.close_idle(Duration::ZERO));
    let lost = log_all(&feeds, &net, waiting).await;
    if !lost.is_empty() {
        warn!(target: "huitong::audit", transfers = lost.len(), "stopping before this node caught up on its own feed: these transfers are not logged");
    }
}
