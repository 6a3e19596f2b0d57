//! Call log anchors: every node puts its call log's head ([`crate::call_log`]) into its own
//! feed as [`Event::CallLogHead`] at least every minute while calls are made (every
//! `[services] anchor_secs`), so the hub logs it in the audit log like any signed event; and
//! the view of every node's anchors, from which a single call is proved
//! ([`crate::auditor::calls`]).
//!
//! An anchor fixes every call up to its size: a record changed, dropped or inserted afterwards no
//! longer leads to the anchored head (the proof of a call checks the chain). An anchor that does
//! not grow its feed's last one (a node presenting a shorter log) is logged as refused, so it is
//! seen, and not kept; whether a longer log still holds the anchored records is what a call's
//! proof checks. A store restored from an older backup goes on from its last anchored head.
//!
//! Layering: a view over [`crate::feeds`] and a task of the daemon; reads [`crate::call_log`].

use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::audit::RecordKind;
use huitong_protocol::call::LogHead;
use huitong_protocol::{codec, Event, NodeId};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::feeds::{entry_record, Accepted, AppendError, Applied, Feeds};
use crate::net::Client;
use crate::state::NodeState;
use crate::store::{StoreError, CF_CALL_ANCHORS};

/// One anchor as kept: the head, and the feed entry that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The anchored head.
    pub head: LogHead,
    /// The entry's position in the node's feed.
    pub seq: u64,
    /// When the node signed it (ms).
    pub at_ms: u64,
}

fn key(feed: &NodeId, size: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&feed.0);
    k[32..].copy_from_slice(&size.to_be_bytes());
    k
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf: CF_CALL_ANCHORS,
        detail: detail.to_string(),
    }
}

/// The first anchor of `feed` in `direction` from size `from` (inclusive).
fn first(
    state: &NodeState,
    feed: &NodeId,
    from: u64,
    direction: Direction,
) -> Result<Option<Anchor>, StoreError> {
    let s = &state.store;
    let start = key(feed, from);
    let mut it = s
        .db()
        .iterator_cf(s.cf(CF_CALL_ANCHORS), IteratorMode::From(&start, direction));
    match it.next() {
        Some(kv) => {
            let (k, v) = kv?;
            if !k.starts_with(&feed.0) {
                return Ok(None);
            }
            codec::decode(&v, 1024).map(Some).map_err(corrupt)
        }
        None => Ok(None),
    }
}

/// The latest anchor of `feed`.
pub fn latest(state: &NodeState, feed: &NodeId) -> Result<Option<Anchor>, StoreError> {
    first(state, feed, u64::MAX, Direction::Reverse)
}

/// The first anchor of `feed` that covers record `seq` (its size is at least `seq`).
pub fn covering(state: &NodeState, feed: &NodeId, seq: u64) -> Result<Option<Anchor>, StoreError> {
    first(state, feed, seq, Direction::Forward)
}

/// The last anchor of `feed` before record `seq` (its size is less than `seq`).
pub fn before(state: &NodeState, feed: &NodeId, seq: u64) -> Result<Option<Anchor>, StoreError> {
    match seq.checked_sub(1) {
        Some(at) if at > 0 => first(state, feed, at, Direction::Reverse),
        _ => Ok(None),
    }
}

/// The anchors as a view over the feeds.
pub struct View;

impl crate::feeds::View for View {
    fn reset(&self, state: &NodeState, batch: &mut WriteBatch) -> Result<(), StoreError> {
        state.store.clear(batch, CF_CALL_ANCHORS)
    }

    fn apply(&self, state: &NodeState, batch: &mut WriteBatch, a: &Accepted<'_>) -> Applied {
        let (v, e) = (a.entry, &a.entry.entry);
        let Event::CallLogHead(head) = &e.event else {
            return Ok(Vec::new());
        };
        let grows = latest(state, &e.feed)?.is_none_or(|last| last.head.size < head.size);
        let kind = if grows {
            let anchor = Anchor {
                head: *head,
                seq: e.seq,
                at_ms: e.timestamp_ms,
            };
            batch.put_cf(
                state.store.cf(CF_CALL_ANCHORS),
                key(&e.feed, head.size),
                codec::encode(&anchor),
            );
            RecordKind::Calls
        } else {
            warn!(target: "huitong::audit", feed = %e.feed, size = head.size, "a call log anchor does not grow the node's last one: logged as refused");
            RecordKind::Refused
        };
        Ok(vec![entry_record(v, kind, head.record_id())])
    }
}

/// Whether this node may log calls now: not while a restored node catches up on its own feed
/// (its anchors, and so where its call log must go on from, are not all back yet); once it
/// has, the log is first resumed from the last anchor. Calls wait (503) until then.
pub fn ready(state: &NodeState) -> Result<(), String> {
    if state.calls.resumed() {
        return Ok(());
    }
    if state.catch_up.pending() {
        return Err("restored from a backup, this node is catching up on its own feed; calls are taken once it has (a minute or so)".into());
    }
    resume(state).map_err(|e| format!("cannot resume the call log: {e}"))?;
    state.calls.mark_resumed();
    Ok(())
}

/// A log behind this node's own latest anchor (a store restored from an older backup) goes on
/// from the anchored head, so new calls chain to what the audit log holds.
fn resume(state: &NodeState) -> Result<(), StoreError> {
    let Some(last) = latest(state, &state.id())? else {
        return Ok(());
    };
    let anchored = crate::call_log::Head {
        size: last.head.size,
        hash: last.head.head,
    };
    let before = state.calls.head(&state.store)?;
    if state.calls.resume_after(&state.store, anchored)? {
        warn!(target: "huitong::audit", held = before.size, anchored = anchored.size, "the call log is behind its last anchor (restored from an older backup?): the calls between are lost; the log goes on from the anchored head");
    }
    Ok(())
}

/// Anchors this node's call log head every `every` while it grows, until `stop`.
pub async fn run(feeds: Arc<Feeds>, net: Client, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        once(&feeds, &net).await;
    }
}

/// Anchors the head now if calls were logged since the last anchor.
pub async fn once(feeds: &Arc<Feeds>, net: &Client) {
    let f = feeds.clone();
    let appended = tokio::task::spawn_blocking(move || {
        let state = f.state();
        // Clears a restored node's catch-up mark once it has caught up (calls wait for it).
        if let Some(behind) = f.catching_up()? {
            return Err(AppendError::CatchingUp(behind));
        }
        if ready(state).is_err() {
            return Ok(None);
        }
        let head = state.calls.head(&state.store).map_err(AppendError::from)?;
        if head.size == 0 {
            return Ok(None);
        }
        let last = latest(state, &state.id()).map_err(AppendError::from)?;
        if last.is_some_and(|l| l.head.size >= head.size) {
            return Ok(None);
        }
        f.append(Event::CallLogHead(LogHead {
            size: head.size,
            head: head.hash,
        }))
        .map(Some)
    })
    .await;
    match appended {
        Ok(Ok(Some(entry))) => {
            info!(target: "huitong::audit", seq = entry.entry.seq, "anchored the call log head");
            net.publish(&entry).await;
        }
        Ok(Ok(None)) => {}
        // Restored from a backup and catching up on its own feed: the next round tries again.
        Ok(Err(AppendError::CatchingUp(why))) => {
            debug!(target: "huitong::audit", %why, "call log anchor waits for the feed's catch-up");
        }
        Ok(Err(e)) => warn!(target: "huitong::audit", error = %e, "cannot anchor the call log"),
        Err(e) => warn!(target: "huitong::audit", error = %e, "cannot anchor the call log"),
    }
}
