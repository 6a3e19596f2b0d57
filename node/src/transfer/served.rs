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

use crate::feeds::Feeds;
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
}

impl Served {
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

/// Appends a closed session to this node's feed and gossips it.
pub async fn log(feeds: &Arc<Feeds>, net: &Client, t: TransferRecord) {
    let f = feeds.clone();
    let (id, bytes, outcome) = (t.id.clone(), t.bytes, t.outcome);
    match tokio::task::spawn_blocking(move || f.append(Event::Transfer(t))).await {
        Ok(Ok(entry)) => {
            info!(target: "huitong::audit", transfer = %id, bytes, outcome = outcome.as_str(), "logged a transfer");
            net.publish(&entry).await;
        }
        Ok(Err(e)) => {
            warn!(target: "huitong::audit", transfer = %id, error = %e, "cannot log a transfer")
        }
        Err(e) => {
            warn!(target: "huitong::audit", transfer = %id, error = %e, "cannot log a transfer")
        }
    }
}

/// Closes idle sessions every second and logs them, until `shutdown`.
pub async fn run(feeds: Arc<Feeds>, served: Arc<Served>, net: Client, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for t in served.close_idle(IDLE_CLOSE) {
            log(&feeds, &net, t).await;
        }
    }
    // Sessions still open at shutdown end here: log them as abandoned.
    for t in served.close_idle(Duration::ZERO) {
        log(&feeds, &net, t).await;
    }
}
