//! Small chunks in the `chunks` column family, two rows each, written together:
//! `0x00 ‖ chunk hash(32)` → the chunk's bytes, and `0x01 ‖ chunk hash(32)` → its length
//! (u32, big-endian), so that listing the chunks ([`Store::small_chunks`]) reads no bytes.
//! The family keeps its values in blob files (`store::cf_options`): compactions move keys, not
//! chunk bytes.
//!
//! Which chunks are small, and everything about verifying them, is the chunk store's
//! ([`crate::chunks`]); this only reads and writes the rows. A row is content-addressed (its key
//! is the BLAKE3 of its value), so writing one is idempotent and needs no writer lock: nothing
//! reads it to decide another write.
//!
//! Rows are written without the write-ahead log — a chunk's bytes would otherwise be written,
//! and checksummed, twice — and [`Store::sync_small_chunks`] makes every row written before it
//! durable by flushing the family to its files. A crash loses rows not flushed yet; nothing
//! that names them was recorded (a version is marked complete, or announced, only after that
//! flush), and the chunks are fetched or published again. Reads skip RocksDB's checksums:
//! every reader checks the chunk's BLAKE3, end to end, or lets the receiver check it.

use huitong_protocol::dataset::ChunkHash;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::{Store, StoreError, CF_CHUNKS};

/// Key prefix of a chunk's bytes.
const BYTES: u8 = 0;
/// Key prefix of a chunk's length.
const LEN: u8 = 1;

fn key(prefix: u8, hash: &ChunkHash) -> [u8; 33] {
    let mut k = [prefix; 33];
    k[1..].copy_from_slice(&hash.0);
    k
}

impl Store {
    /// A small chunk's bytes, if held (as stored: the caller verifies them).
    pub fn small_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        let mut unchecked = ReadOptions::default();
        unchecked.set_verify_checksums(false);
        Ok(self
            .db
            .get_cf_opt(self.cf(CF_CHUNKS), key(BYTES, hash), &unchecked)?)
    }

    /// Whether a small chunk is held (reading its length row, not its bytes).
    pub fn holds_small_chunk(&self, hash: &ChunkHash) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_CHUNKS), key(LEN, hash))?
            .is_some())
    }

    /// Stores a small chunk's bytes, which the caller verified hash to `hash` (at most
    /// `u32::MAX` bytes: the chunk store's limit is far below).
    pub fn put_small_chunk(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_CHUNKS);
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key(BYTES, hash), bytes);
        batch.put_cf(cf, key(LEN, hash), len.to_be_bytes());
        let mut no_wal = WriteOptions::default();
        no_wal.disable_wal(true);
        Ok(self.db.write_opt(batch, &no_wal)?)
    }

    /// Removes a small chunk (nothing if it is not held).
    pub fn remove_small_chunk(&self, hash: &ChunkHash) -> Result<(), StoreError> {
        let cf = self.cf(CF_CHUNKS);
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, key(BYTES, hash));
        batch.delete_cf(cf, key(LEN, hash));
        Ok(self.db.write(batch)?)
    }

    /// Every small chunk held, with its length, from the length rows alone.
    pub fn small_chunks(&self) -> Result<Vec<(ChunkHash, u64)>, StoreError> {
        let mut out = Vec::new();
        let from = [LEN];
        let rows = self.db.iterator_cf(
            self.cf(CF_CHUNKS),
            IteratorMode::From(&from, Direction::Forward),
        );
        for kv in rows {
            let (k, v) = kv?;
            if k.first() != Some(&LEN) {
                break;
            }
            let (Some(hash), Ok(len)) = (
                k.get(1..).and_then(|h| <[u8; 32]>::try_from(h).ok()),
                <[u8; 4]>::try_from(&v[..]).map(u32::from_be_bytes),
            ) else {
                return Err(StoreError::Corrupt {
                    cf: CF_CHUNKS,
                    detail: "a chunk length row is not a 32-byte hash and a 4-byte length".into(),
                });
            };
            out.push((ChunkHash(hash), u64::from(len)));
        }
        Ok(out)
    }

    /// Compacts the small chunks' family, so that the space of removed chunks is given back
    /// (their rows and blobs are dropped by compaction, not by the removal).
    pub fn compact_small_chunks(&self) {
        self.db
            .compact_range_cf(self.cf(CF_CHUNKS), None::<&[u8]>, None::<&[u8]>);
    }

    /// Makes every small chunk written before this call durable: flushes the family's
    /// memtable to table and blob files (synced), waiting for it.
    pub fn sync_small_chunks(&self) -> Result<(), StoreError> {
        Ok(self.db.flush_cf(self.cf(CF_CHUNKS))?)
    }
}
