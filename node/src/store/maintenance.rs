//! Rare writes: truncating a feed, clearing a view's column family, and small `meta` flags.

use rocksdb::WriteBatch;

use super::{entry_key, Head, Store, StoreError, CF_ENTRIES, CF_META};
use huitong_protocol::NodeId;

impl Store {
    /// Stages removing entries `from..=to` of `feed` and setting its head to `keep`.
    pub fn truncate_feed(
        &self,
        batch: &mut WriteBatch,
        feed: &NodeId,
        from: u64,
        to: u64,
        keep: Head,
    ) {
        let cf = self.cf(CF_ENTRIES);
        for seq in from..=to {
            batch.delete_cf(cf, entry_key(feed, seq));
        }
        self.put_head(batch, feed, &keep);
    }

    /// Stages deleting every key of column family `name` (one range tombstone: every key
    /// of the node's column families is shorter than 256 bytes of 0xFF).
    pub fn clear(&self, batch: &mut WriteBatch, name: &'static str) -> Result<(), StoreError> {
        batch.delete_range_cf(self.cf(name), &[][..], &[0xFFu8; 256][..]);
        Ok(())
    }

    /// A `meta` value.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    /// Stages a `meta` value.
    pub fn put_meta(&self, batch: &mut WriteBatch, key: &[u8], value: &[u8]) {
        batch.put_cf(self.cf(CF_META), key, value);
    }

    /// Stages deleting a `meta` value.
    pub fn delete_meta(&self, batch: &mut WriteBatch, key: &[u8]) {
        batch.delete_cf(self.cf(CF_META), key);
    }
}
