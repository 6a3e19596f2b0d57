//! Bounds on what consumers can make a provider hold: data streams open at once per peer,
//! chunks being read and sent at once per member and in all, and how long one response may
//! take to write. A member that opens many streams and stops reading holds its own share of
//! the send permits, and only until its writes miss their deadline; every other member keeps
//! its own share (issue #10, point 5).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huitong_protocol::NodeId;
use libp2p::PeerId;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::per_key::{PerKey, Slot};

/// Data streams one peer may have open at once (a pull uses 8, plus manifest, receipt and
/// audit requests); more are closed unread.
pub const MAX_STREAMS_PER_PEER: usize = 32;
/// Chunks one member may have being read and sent at once: a pull's 8 streams.
pub const SENDING_PER_MEMBER: usize = 8;
/// Chunks being read and sent at once in all (each up to 8 MiB in memory).
pub const MAX_SENDING: usize = 32;
/// Every response may take this long to write, plus [`MIN_RATE`] for its bytes.
const WRITE_BASE: Duration = Duration::from_secs(10);
/// The slowest rate, in bytes per second, at which a response is still being written: a chunk
/// of 1 MiB gets 14 s, one of 8 MiB 42 s.
const MIN_RATE: u64 = 256 * 1024;

/// How long writing a response of `bytes` may take before the stream is dropped.
pub fn write_deadline(bytes: usize) -> Duration {
    WRITE_BASE + Duration::from_millis((bytes as u64).saturating_mul(1000) / MIN_RATE)
}

/// The provider's stream and send bounds.
pub struct Limits {
    streams: Arc<PerKey<PeerId>>,
    members: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
    all: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            streams: PerKey::new(MAX_STREAMS_PER_PEER),
            members: Mutex::default(),
            all: Arc::new(Semaphore::new(MAX_SENDING)),
        }
    }
}

/// An open data stream, counted against its peer until dropped.
pub type StreamSlot = Slot<PeerId>;

/// Leave to read and send one chunk: the member's share and the node's.
pub struct SendPermit {
    _member: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Limits {
    /// Counts a new stream from `peer`; `None` when it already has [`MAX_STREAMS_PER_PEER`].
    pub fn open_stream(&self, peer: PeerId) -> Option<StreamSlot> {
        self.streams.take(peer)
    }

    /// Streams open now from `peer`.
    pub fn streams_of(&self, peer: &PeerId) -> usize {
        self.streams.count(peer)
    }

    /// Waits for leave to send a chunk to `member`: first its own share, then the node's, so a
    /// member waiting on its own share holds nothing of the node's.
    pub async fn sending(&self, member: &NodeId) -> Result<SendPermit, AcquireError> {
        let own = {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            // Only active members reach this point, so the map is bounded by the charter;
            // forget members with nothing in flight when it grows past that anyway.
            if members.len() > 4 * MAX_SENDING {
                members.retain(|_, s| Arc::strong_count(s) > 1);
            }
            members
                .entry(*member)
                .or_insert_with(|| Arc::new(Semaphore::new(SENDING_PER_MEMBER)))
                .clone()
        };
        let member = own.acquire_owned().await?;
        let all = self.all.clone().acquire_owned().await?;
        Ok(SendPermit {
            _member: member,
            _all: all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::SecretKey;

    #[test]
    fn streams_are_counted_per_peer_and_released() {
        let limits = Arc::new(Limits::default());
        let (a, b) = (PeerId::random(), PeerId::random());
        let slots: Vec<StreamSlot> = (0..MAX_STREAMS_PER_PEER)
            .map(|_| limits.open_stream(a).unwrap())
            .collect();
        assert!(limits.open_stream(a).is_none(), "one stream too many");
        assert!(
            limits.open_stream(b).is_some(),
            "another peer is not affected"
        );
        drop(slots);
        assert_eq!(limits.streams_of(&a), 0);
        assert!(limits.open_stream(a).is_some());
    }

    #[tokio::test]
    async fn a_member_holding_its_share_leaves_the_others_theirs() {
        let limits = Limits::default();
        let greedy = SecretKey::from_bytes([1; 32]).public();
        let mut held = Vec::new();
        for _ in 0..SENDING_PER_MEMBER {
            held.push(limits.sending(&greedy).await.unwrap());
        }
        // The greedy member's next request waits …
        let next = tokio::time::timeout(Duration::from_millis(50), limits.sending(&greedy)).await;
        assert!(next.is_err(), "a member gets no more than its share");
        // … while every other member still gets its own share at once.
        for b in 2..=(MAX_SENDING / SENDING_PER_MEMBER) as u8 {
            let other = SecretKey::from_bytes([b; 32]).public();
            for _ in 0..SENDING_PER_MEMBER {
                held.push(
                    tokio::time::timeout(Duration::from_secs(5), limits.sending(&other))
                        .await
                        .expect("another member is not blocked")
                        .unwrap(),
                );
            }
        }
        assert!(write_deadline(8 << 20) > write_deadline(1 << 20));
        assert_eq!(write_deadline(0), WRITE_BASE);
    }
}
