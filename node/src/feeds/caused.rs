//! The part of this node's feed quota that other members may cause (review s7, L2).
//!
//! Entries other members cause — transfer records, and on the hub the steps of their
//! applications — may take at most a share of the feed quota an hour
//! ([`super::TRANSFER_SHARE_OF_QUOTA`]). They are counted **on their own**: the node's own
//! entries (a bulk catalogue import, say) do not hold them back while the whole quota has room,
//! and they never take more than their share, so the node's own half stays its own. The times
//! of the caused entries of the last hour are kept in memory, read once from the feed at the
//! first caused append after a start (at most one quota's worth of entries), then kept up to
//! date under the store's writer lock, which every append holds.

use std::collections::VecDeque;
use std::sync::Mutex;

use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::NodeId;

use super::{caused_by_members, HOUR_MS};
use crate::store::{Store, StoreError};

/// This node's own feed as the next append sees it.
#[derive(Clone, Copy)]
pub(super) struct OwnFeed<'a> {
    /// The store.
    pub store: &'a Store,
    /// This node's key.
    pub me: &'a NodeId,
    /// The feed's head seq.
    pub head: u64,
    /// Whether this node is the hub (its application steps are caused by members).
    pub hub: bool,
}

/// Times (ms) of this node's own member-caused entries in the last hour, oldest first; `None`
/// until read from the feed.
#[derive(Debug, Default)]
pub(super) struct Caused {
    times: Mutex<Option<VecDeque<u64>>>,
}

impl Caused {
    /// When one more caused entry fits under `share` an hour, if not at `now_ms`: `None` when
    /// it fits now. Reads the feed once (up to `per_hour` entries back from `head`).
    pub(super) fn over(
        &self,
        feed: OwnFeed<'_>,
        now_ms: u64,
        share: u32,
        per_hour: u32,
    ) -> Result<Option<u64>, StoreError> {
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        let times = match times.as_mut() {
            Some(t) => t,
            None => times.insert(read(feed, now_ms, per_hour)?),
        };
        while times
            .front()
            .is_some_and(|&t| t.saturating_add(HOUR_MS) <= now_ms)
        {
            times.pop_front();
        }
        let share = share.max(1) as usize;
        if times.len() < share {
            return Ok(None);
        }
        // The oldest of the last `share` leaves the hour first.
        Ok(times
            .get(times.len() - share)
            .map(|t| t.saturating_add(HOUR_MS)))
    }

    /// A caused entry stamped `at_ms` was appended.
    pub(super) fn appended(&self, at_ms: u64) {
        if let Some(t) = self
            .times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            t.push_back(at_ms);
        }
    }
}

/// The times of the caused entries among this node's entries of the last hour before `now_ms`,
/// reading back from `head` (at most `per_hour` entries: no more can be within the hour).
fn read(feed: OwnFeed<'_>, now_ms: u64, per_hour: u32) -> Result<VecDeque<u64>, StoreError> {
    let OwnFeed {
        store,
        me,
        head,
        hub,
    } = feed;
    let mut out = VecDeque::new();
    let oldest = head.saturating_sub(u64::from(per_hour));
    for seq in (oldest + 1..=head).rev() {
        let Some((hash, bytes)) = store.entry(me, seq)? else {
            break;
        };
        let Ok(v) = VerifiedEntry::from_stored(&bytes, hash) else {
            continue;
        };
        if v.entry.timestamp_ms.saturating_add(HOUR_MS) <= now_ms {
            break;
        }
        if caused_by_members(&v.entry.event, hub) {
            out.push_front(v.entry.timestamp_ms);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` with an empty node's own feed (a store in a temporary directory).
    fn with_empty_feed(check: impl FnOnce(OwnFeed<'_>)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let me = NodeId([1; 32]);
        check(OwnFeed {
            store: &store,
            me: &me,
            head: 0,
            hub: false,
        });
    }

    /// The share is counted over caused entries only, in a sliding hour.
    #[test]
    fn caused_entries_are_counted_in_a_sliding_hour() {
        let c = Caused {
            times: Mutex::new(Some(VecDeque::new())),
        };
        with_empty_feed(|feed| {
            let over = |now| c.over(feed, now, 3, 6).expect("counted");
            for t in [10, 20, 30] {
                assert_eq!(over(t), None, "{t}");
                c.appended(t);
            }
            assert_eq!(over(40), Some(10 + HOUR_MS), "3 an hour");
            assert_eq!(over(10 + HOUR_MS), None, "the first left the hour");
            c.appended(10 + HOUR_MS);
            assert_eq!(over(11 + HOUR_MS), Some(20 + HOUR_MS));
        });
    }

    /// Before the first caused append after a start, the feed is read: nothing there yet.
    #[test]
    fn an_empty_feed_has_caused_nothing() {
        let c = Caused::default();
        with_empty_feed(|feed| {
            assert_eq!(c.over(feed, 5, 1, 2).expect("read"), None);
            c.appended(5);
            assert_eq!(
                c.over(OwnFeed { head: 1, ..feed }, 6, 1, 2)
                    .expect("counted"),
                Some(5 + HOUR_MS)
            );
        });
    }
}
