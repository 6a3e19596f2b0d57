//! What a backup needs of the store: a consistent copy (a RocksDB checkpoint) and the
//! catch-up mark.
//!
//! The mark is written into the **copy** only, never into the live store: a node started from
//! the copy (a restored backup) finds it and catches up on its own feed from its peers before it
//! appends anything (entries it signed after the backup are held by its peers; appending at the
//! backup's head would sign a second entry for the same seq — a fork). A brand-new store has no
//! mark, so a first start is never held back. The mark is removed once the node has caught up.
//!
//! Stored form (meta key `catch_up`): CBOR [`CatchUpMark`], versioned.

use std::path::Path;

use rocksdb::checkpoint::Checkpoint;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, Writer, CF_META};

const KEY_CATCH_UP: &[u8] = b"catch_up";
/// The version of [`CatchUpMark`] written now.
pub const CATCH_UP_MARK_VERSION: u8 = 1;

/// Left in a backup's copy of the store: the node must catch up on its own feed first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatchUpMark {
    /// Layout version ([`CATCH_UP_MARK_VERSION`]).
    pub version: u8,
    /// This node's own feed head when the backup was made.
    pub own_seq: u64,
    /// When the backup was made (ms since the epoch).
    pub backed_up_at_ms: u64,
}

impl Store {
    /// Writes a consistent copy of the store (a RocksDB checkpoint: hard links where `dest` is
    /// on the same file system, else copies) to `dest`, which must not exist.
    pub fn checkpoint(&self, dest: &Path) -> Result<(), StoreError> {
        Checkpoint::new(&self.db)?.create_checkpoint(dest)?;
        Ok(())
    }

    /// The catch-up mark, when this store is a restored backup that has not caught up yet.
    pub fn catch_up_mark(&self) -> Result<Option<CatchUpMark>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(CF_META), KEY_CATCH_UP)? else {
            return Ok(None);
        };
        huitong_protocol::codec::decode(&v, 4096)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                cf: CF_META,
                detail: format!("catch-up mark: {e}"),
            })
    }

    /// Sets the catch-up mark (durably).
    pub fn set_catch_up_mark(&self, w: &Writer<'_>, m: &CatchUpMark) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            KEY_CATCH_UP,
            huitong_protocol::codec::encode(m),
        );
        self.commit(w, batch, true)
    }

    /// Removes the catch-up mark (durably): the node has caught up.
    pub fn clear_catch_up_mark(&self, w: &Writer<'_>) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.cf(CF_META), KEY_CATCH_UP);
        self.commit(w, batch, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_goes_into_the_copy_only() {
        let dir = tempfile::tempdir().unwrap();
        let live = Store::open(&dir.path().join("db")).unwrap();
        live.checkpoint(&dir.path().join("copy")).unwrap();
        let copy = Store::open(&dir.path().join("copy")).unwrap();
        let mark = CatchUpMark {
            version: CATCH_UP_MARK_VERSION,
            own_seq: 7,
            backed_up_at_ms: 1,
        };
        copy.set_catch_up_mark(&copy.writer(), &mark).unwrap();
        assert_eq!(copy.catch_up_mark().unwrap(), Some(mark));
        assert_eq!(live.catch_up_mark().unwrap(), None);
        copy.clear_catch_up_mark(&copy.writer()).unwrap();
        assert_eq!(copy.catch_up_mark().unwrap(), None);
        assert!(
            live.checkpoint(&dir.path().join("copy")).is_err(),
            "never over an existing dir"
        );
    }
}
