//! Counting what is open per key — data streams per peer, bulk handshakes per address — up to a
//! limit, with a slot that gives its count back when dropped.
//!
//! Layering: a leaf; used by [`crate::link::bulk`] and [`crate::transfer::limits`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open things per key, at most `limit` for one key.
pub struct PerKey<K: Eq + Hash + Clone> {
    counts: Mutex<HashMap<K, usize>>,
    limit: usize,
}

/// One open thing of a key, counted until dropped.
pub struct Slot<K: Eq + Hash + Clone> {
    table: Arc<PerKey<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> PerKey<K> {
    /// A table allowing `limit` per key.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::default(),
            limit,
        })
    }

    /// Counts one more for `key`; `None` when it already has the limit.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.lock();
        let n = counts.entry(key.clone()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            key,
        })
    }

    /// How many `key` has open now.
    pub fn count(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Counts only: a panic elsewhere cannot leave them inconsistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
