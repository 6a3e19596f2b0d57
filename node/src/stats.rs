//! Transfer counters for `status`: chunks and bytes served and fetched, refusals, failed
//! verifications. Kept in the node state, counted by the data server and the pulls.
//!
//! Layering: a leaf (no other module of the node).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Transfer counters for `status`.
#[derive(Default, Debug)]
pub struct Stats {
    served_chunks: AtomicU64,
    served_bytes: AtomicU64,
    refused_requests: AtomicU64,
    fetched_chunks: AtomicU64,
    fetched_bytes: AtomicU64,
    failed_chunks: AtomicU64,
    sending: Arc<AtomicU64>,
}

/// One chunk being read or written to a consumer, counted in [`StatsView::sending_chunks`]
/// until dropped.
pub struct Sending(Arc<AtomicU64>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`Stats`].
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatsView {
    /// Chunks sent to consumers.
    pub served_chunks: u64,
    /// Bytes of chunks sent to consumers.
    pub served_bytes: u64,
    /// Data requests refused (share type, unknown chunk, …).
    pub refused_requests: u64,
    /// Chunks received and verified.
    pub fetched_chunks: u64,
    /// Bytes of chunks received and verified.
    pub fetched_bytes: u64,
    /// Chunks received that failed verification.
    pub failed_chunks: u64,
    /// Chunks being read or written to consumers now.
    #[serde(default)]
    pub sending_chunks: u64,
}

impl Stats {
    pub(crate) fn served(&self, bytes: u64) {
        self.served_chunks.fetch_add(1, Ordering::Relaxed);
        self.served_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a chunk being sent until the returned guard is dropped.
    pub(crate) fn sending(&self) -> Sending {
        self.sending.fetch_add(1, Ordering::Relaxed);
        Sending(self.sending.clone())
    }

    pub(crate) fn refused(&self) {
        self.refused_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fetched(&self, bytes: u64) {
        self.fetched_chunks.fetch_add(1, Ordering::Relaxed);
        self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed_chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn view(&self) -> StatsView {
        StatsView {
            served_chunks: self.served_chunks.load(Ordering::Relaxed),
            served_bytes: self.served_bytes.load(Ordering::Relaxed),
            refused_requests: self.refused_requests.load(Ordering::Relaxed),
            fetched_chunks: self.fetched_chunks.load(Ordering::Relaxed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            failed_chunks: self.failed_chunks.load(Ordering::Relaxed),
            sending_chunks: self.sending.load(Ordering::Relaxed),
        }
    }
}
