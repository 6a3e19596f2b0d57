//! On the hub: every 100 ms, moves the queued records (and the current charter version, once)
//! into the audit log in one batch, then hands the new checkpoint to the watcher, which stores
//! and gossips it. A queued record is removed only after the checkpoint that includes it is
//! durable; after a crash it is found in the log and dropped, never appended twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::audit::Record;
use rocksdb::{IteratorMode, WriteBatch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{charter_record, keys};
use crate::audit_log::tiles::{LogError, TileLog};
use crate::state::NodeState;
use crate::store::CF_AUDIT_PENDING;

/// Most records appended in one batch.
pub const MAX_BATCH: usize = 20_000;

/// Runs until `shutdown`.
pub async fn run(state: Arc<NodeState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !state.is_hub() {
            continue;
        }
        let s = state.clone();
        match tokio::task::spawn_blocking(move || step(&s)).await {
            Ok(Ok(Some(note))) => tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = state.audit.inbox.push_waiting(note) => {}
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!(target: "huitong::audit", error = %e, "cannot append to the audit log; will retry")
            }
            Err(e) => warn!(error = %e, "audit appender step panicked"),
        }
    }
}

/// Opens the log if needed and runs `f` on it; a failed append drops it so it is reopened
/// from disk.
pub fn with_log<T>(
    state: &NodeState,
    f: impl FnOnce(&mut TileLog) -> Result<T, LogError>,
) -> Result<T, LogError> {
    let mut guard = state.audit.log.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let (origin, hub, _) = keys(state)
            .ok_or_else(|| LogError::Inconsistent("no charter naming a hub yet".into()))?;
        *guard = Some(TileLog::open(&state.audit.dir, &origin, &hub)?);
    }
    let Some(log) = guard.as_mut() else {
        return Err(LogError::Inconsistent("the log is not open".into()));
    };
    let out = f(log);
    if log.poisoned() {
        *guard = None;
    }
    out
}

/// [`with_log`] on a blocking thread, for async callers.
pub async fn on_log<T: Send + 'static>(
    state: &Arc<NodeState>,
    f: impl FnOnce(&mut TileLog) -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || with_log(&s, f))
        .await
        .map_err(|e| LogError::Inconsistent(format!("audit log task failed: {e}")))?
}

/// One batch; returns the new checkpoint note, if anything was appended.
pub fn step(state: &NodeState) -> Result<Option<Vec<u8>>, LogError> {
    let store = &state.store;
    let cf = store.cf(CF_AUDIT_PENDING);
    let mut queued: Vec<(Vec<u8>, Record)> = Vec::new();
    for kv in store
        .db()
        .iterator_cf(cf, IteratorMode::Start)
        .take(MAX_BATCH)
    {
        let (k, v) = kv.map_err(|e| LogError::Inconsistent(format!("queue: {e}")))?;
        match Record::decode(&v) {
            Ok(r) => queued.push((k.to_vec(), r)),
            Err(e) => {
                warn!(target: "huitong::audit", error = %e, "dropping an undecodable queued audit record");
                let _ = store.db().delete_cf(cf, &k);
            }
        }
    }
    // The queue is keyed by event hash; log in the signers' time order instead.
    queued.sort_by_key(|(_, r)| (r.at_ms, r.signer.0, r.seq));
    // Charters are read (and their signatures checked) only when a version is not yet logged;
    // every version held is logged (a node that starts from a later version fills in the
    // earlier ones), the log skipping the ones it holds.
    // Keyed by how many versions are held: an earlier version filled in later counts too.
    let version = state.with_history(|h| match h.version() {
        0 => 0,
        latest => latest - h.first() + 1,
    });
    let logged = &state.audit.charter_logged;
    let charters: Vec<Record> = if version == logged.load(Ordering::Relaxed) {
        Vec::new()
    } else {
        let authority = state.authority;
        store
            .charters()
            .unwrap_or_default()
            .iter()
            .filter_map(|bytes| huitong_protocol::Charter::open(bytes, &authority?).ok())
            .map(|(c, env)| charter_record(&c, env.payload()))
            .collect()
    };
    if queued.is_empty() && charters.is_empty() {
        return Ok(None);
    }
    let note = with_log(state, |log| {
        let mut entries = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for r in queued
            .iter()
            .map(|(_, r)| r)
            .chain(charters.iter())
            .filter(|r| !log.contains(&r.key()) && !super::fault::omit(state, r))
        {
            if keys.insert(r.key()) {
                entries.push(r.encode());
            }
        }
        let appended = entries.len();
        let note = if entries.is_empty() {
            None
        } else {
            let c = log.append(&state.key, entries)?;
            info!(target: "huitong::audit", appended, size = c.size, "audit log checkpoint");
            Some(c.note)
        };
        if !queued.is_empty() {
            let mut batch = WriteBatch::default();
            for (k, _) in &queued {
                batch.delete_cf(cf, k);
            }
            store
                .db()
                .write(batch)
                .map_err(|e| LogError::Inconsistent(format!("queue: {e}")))?;
        }
        Ok(note)
    })?;
    if !charters.is_empty() {
        logged.store(version, Ordering::Relaxed);
    }
    Ok(note)
}
