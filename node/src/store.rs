//! The node's RocksDB store.
//!
//! Column families, one per kind of record:
//! - `meta`: schema version; every charter version held, `charter/` ‖ version(8) → envelope;
//!   charter equivocation evidence, `charter_evidence/` ‖ version(8) ‖ hash(32) → envelope; in a
//!   restored backup the catch-up mark ([`CatchUpMark`], see `store/backup.rs`).
//! - `entries`: `feed(32) ‖ seq(8, big-endian)` → `hash(32) ‖ envelope bytes`.
//! - `heads`: `feed(32)` → `seq(8) ‖ hash(32)` of the latest contiguous entry.
//! - `forks`: `feed(32) ‖ seq(8)` → CBOR [`Fork`] evidence.
//! - `catalogue`: `provider USCC ‖ '/' ‖ code` → CBOR [`crate::catalogue::Record`].
//! - `search`: `token ‖ 0x00 ‖ catalogue key` → empty (the inverted index).
//! - `datasets`: `feed(32) ‖ code ‖ 0x00 ‖ version(8)` → CBOR dataset announcement.
//! - `manifests`: `manifest hash(32)` → CBOR stored manifest (envelope bytes, complete flag).
//! - `applications`: application id → CBOR [`crate::applications::AppRecord`].
//! - `applications_pending`: application id ‖ 0 ‖ signer(32) ‖ seq(8) → a grant event that
//!   arrived before the step it follows.
//! - `chunk_refs`: chunk hash(32) → CBOR place (output file, offset) of a pulled file's chunk.
//! - `receipts`: receipt id → CBOR [`crate::receipts::ReceiptRecord`].
//! - `audit_pending` (hub): record key(32) → CBOR audit record not yet in the audit log.
//! - `audit_checkpoints`: tree size(8, big-endian) → the audit checkpoint note seen for it.
//! - `audit_evidence`: size(8) ‖ 12 bytes of BLAKE3 of each of the two notes → CBOR split-view
//!   evidence (one row per contradicting pair, however often it is replayed).
//! - `accounts`: account name → CBOR [`crate::accounts::Account`] (people who sign in to this
//!   node; not a view of the feeds, so a rebuild of the views leaves it alone).
//!
//! - `collect_runs`: code ‖ 0 ‖ started ms(8) → CBOR [`crate::collect::runs::Run`] (the run
//!   history of collections; not a view of the feeds).
//! - `subscriptions`: name → CBOR [`crate::subscribe::Subscription`] (this node's subscriptions
//!   and how far each got; not a view of the feeds).
//! - `chunks`: chunk hash(32) → the bytes of a small chunk ([`crate::chunks`] decides which;
//!   not a view of the feeds).
//!
//! Invariant: every event's writes (feed entry, head, view, index) go into one `WriteBatch`,
//! so a crash never leaves an event half-applied. Writers take [`Store::writer`] so that
//! read-modify-write of heads is serialised.
//!
//! Layering: a leaf (no other module of the node). The records' types belong to the views that
//! write them, above.

mod backup;
mod charters;
mod maintenance;
mod schema;
mod small_chunks;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use huitong_protocol::feed::Stamp;
use huitong_protocol::{EntryHash, NodeId};
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};

pub use backup::{CatchUpMark, CATCH_UP_MARK_VERSION};
pub use schema::SCHEMA_VERSION;

/// Column family names.
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_ENTRIES: &str = "entries";
pub(crate) const CF_HEADS: &str = "heads";
pub(crate) const CF_FORKS: &str = "forks";
pub(crate) const CF_CATALOGUE: &str = "catalogue";
pub(crate) const CF_SEARCH: &str = "search";
pub(crate) const CF_DATASETS: &str = "datasets";
pub(crate) const CF_MANIFESTS: &str = "manifests";
pub(crate) const CF_APPLICATIONS: &str = "applications";
pub(crate) const CF_RECEIPTS: &str = "receipts";
pub(crate) const CF_APPLICATIONS_PENDING: &str = "applications_pending";
pub(crate) const CF_CHUNK_REFS: &str = "chunk_refs";
pub(crate) const CF_AUDIT_PENDING: &str = "audit_pending";
pub(crate) const CF_AUDIT_CHECKPOINTS: &str = "audit_checkpoints";
pub(crate) const CF_AUDIT_EVIDENCE: &str = "audit_evidence";
pub(crate) const CF_TRANSFERS: &str = "transfers";
pub(crate) const CF_AUDIT_EXPECTED: &str = "audit_expected";
pub(crate) const CF_AUDIT_OMISSIONS: &str = "audit_omissions";
pub(crate) const CF_ACCOUNTS: &str = "accounts";
pub(crate) const CF_CALLS: &str = "calls";
pub(crate) const CF_CALL_IDS: &str = "call_ids";
pub(crate) const CF_CALL_ANCHORS: &str = "call_anchors";
pub(crate) const CF_COLLECT_RUNS: &str = "collect_runs";
pub(crate) const CF_SUBSCRIPTIONS: &str = "subscriptions";
pub(crate) const CF_CHUNKS: &str = "chunks";
const ALL_CFS: [&str; 25] = [
    CF_META,
    CF_ENTRIES,
    CF_HEADS,
    CF_FORKS,
    CF_CATALOGUE,
    CF_SEARCH,
    CF_DATASETS,
    CF_MANIFESTS,
    CF_APPLICATIONS,
    CF_RECEIPTS,
    CF_APPLICATIONS_PENDING,
    CF_CHUNK_REFS,
    CF_AUDIT_PENDING,
    CF_AUDIT_CHECKPOINTS,
    CF_AUDIT_EVIDENCE,
    CF_TRANSFERS,
    CF_AUDIT_EXPECTED,
    CF_AUDIT_OMISSIONS,
    CF_ACCOUNTS,
    CF_CALLS,
    CF_CALL_IDS,
    CF_CALL_ANCHORS,
    CF_COLLECT_RUNS,
    CF_SUBSCRIPTIONS,
    CF_CHUNKS,
];

/// A store error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB failed.
    #[error("store: {0}")]
    Db(#[from] rocksdb::Error),
    /// The store is locked by another process.
    #[error("the store in {0} is in use by another huitong process; stop it first (or run `huitong status` to talk to it)")]
    Locked(String),
    /// A stored record could not be read.
    #[error("store: corrupt record in {cf}: {detail}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The schema is older than this binary can use.
    #[error("store schema version {found} was written by an earlier huitong whose feed entries name no charter version; this version ({SCHEMA_VERSION}) cannot use it. Move the node directory's db/ aside and start again: the node fetches the federation's feeds from peers that run this version (a local testnet: `huitong testnet down`, remove its directory, `huitong testnet up`)")]
    TooOld {
        /// Version found on disk.
        found: u32,
    },
    /// The schema is newer than this binary.
    #[error("store schema version {found} is newer than this huitong understands ({SCHEMA_VERSION}); upgrade huitong")]
    TooNew {
        /// Version found on disk.
        found: u32,
    },
}

/// Evidence of a fork: two different entries signed for the same feed and seq.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fork {
    /// The feed.
    pub feed: NodeId,
    /// The seq both claim.
    pub seq: u64,
    /// The envelope held first.
    #[serde(with = "serde_bytes")]
    pub first: Vec<u8>,
    /// The conflicting envelope.
    #[serde(with = "serde_bytes")]
    pub second: Vec<u8>,
    /// When it was detected (ms since the epoch).
    pub detected_at_ms: u64,
}

/// The latest contiguous entry of a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its seq (0 when the feed is empty).
    pub seq: u64,
    /// Its hash.
    pub hash: EntryHash,
    /// Its timestamp and the charter version it names: what judging the next entry needs, kept
    /// here so that ingest never reads the previous entry back.
    pub stamp: Stamp,
}

impl Head {
    /// The head of an empty feed.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: EntryHash::ZERO,
        stamp: Stamp {
            timestamp_ms: 0,
            charter: 0,
        },
    };

    /// The stamp of the feed's latest entry (`None` when the feed is empty).
    pub fn prev_stamp(&self) -> Option<Stamp> {
        (self.seq > 0).then_some(self.stamp)
    }
}

/// The store.
pub struct Store {
    db: DB,
    write: Mutex<()>,
}

/// Holding this serialises writers.
pub struct Writer<'a> {
    _guard: MutexGuard<'a, ()>,
}

fn entry_key(feed: &NodeId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&feed.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The timestamp and charter version of a stored entry's envelope (verified when it was stored;
/// no signature check).
pub fn stored_stamp(feed: &NodeId, seq: u64, envelope: &[u8]) -> Result<Stamp, StoreError> {
    Stamp::from_stored(envelope).map_err(|e| StoreError::Corrupt {
        cf: CF_ENTRIES,
        detail: format!("entry {seq} of feed {feed}: {e}"),
    })
}

/// Length of a stored head.
const HEAD_LEN: usize = 56;

/// Encodes a head: `seq ‖ hash(32) ‖ timestamp_ms ‖ charter` (integers 8 bytes, big-endian).
fn encode_head(h: &Head) -> [u8; HEAD_LEN] {
    let mut v = [0u8; HEAD_LEN];
    v[..8].copy_from_slice(&h.seq.to_be_bytes());
    v[8..40].copy_from_slice(&h.hash.0);
    v[40..48].copy_from_slice(&h.stamp.timestamp_ms.to_be_bytes());
    v[48..].copy_from_slice(&h.stamp.charter.to_be_bytes());
    v
}

/// Decodes a stored head (see [`encode_head`]).
fn decode_head(feed: &NodeId, v: &[u8]) -> Result<Head, StoreError> {
    let Ok(v) = <&[u8; HEAD_LEN]>::try_from(v) else {
        return Err(StoreError::Corrupt {
            cf: CF_HEADS,
            detail: format!("head of {feed} is {} bytes, not {HEAD_LEN}", v.len()),
        });
    };
    let int = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&v[8..40]);
    Ok(Head {
        seq: int(0),
        hash: EntryHash(hash),
        stamp: Stamp {
            timestamp_ms: int(40),
            charter: int(48),
        },
    })
}

/// Memtable size of the column families every call writes (thousands a second): the log, its
/// ids, and meta, where the log's head is rewritten each time. A small skip list stays in the
/// CPU's caches, where RocksDB's default of 64 MiB made each insert a walk through main memory
/// and each flush a long pause. The small chunks get the same: a table version's chunks pass
/// through on their way to table files, and a memory as large as the default would only hold
/// more of them in RAM.
const CALL_LOG_MEMTABLE: usize = 8 << 20;

/// Memtables of those families held at most (one written, the rest flushing) before writes
/// wait: 32 MiB in all, against the default 2 × 64 MiB, with room for a flush slowed by a
/// busy disk.
const CALL_LOG_MEMTABLES: i32 = 4;

/// A column family's options. (`DB::open_cf` would give every family the defaults, whatever
/// the DB-wide options say.) Compression stays off, as it was. The families every call writes
/// get small memtables; those read by a key that is usually absent or recent on every call —
/// the call ids (checked for every answer) and meta — get a Bloom filter on their memtable, so
/// such a key costs no skip-list search. (Not on their table files: those filters would stay in
/// memory outside any cache and grow with every call ever logged.)
fn cf_options(name: &str) -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::None);
    if matches!(name, CF_CALLS | CF_CALL_IDS | CF_META | CF_CHUNKS) {
        o.set_write_buffer_size(CALL_LOG_MEMTABLE);
        o.set_max_write_buffer_number(CALL_LOG_MEMTABLES);
    }
    if matches!(name, CF_CALL_IDS | CF_META | CF_CHUNKS) {
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(0.05);
    }
    if name == CF_CHUNKS {
        // Chunk bytes go to blob files, so compactions rewrite keys, not bytes; blobs of
        // removed chunks are dropped as compaction reaches them. A Bloom filter on the table
        // files answers "not a small chunk" (every read of a file's chunk asks) without reading
        // a block: ~10 bits a chunk.
        o.set_enable_blob_files(true);
        o.set_min_blob_size(SMALL_CHUNK_INLINE);
        o.set_blob_file_size(SMALL_CHUNK_BLOB_FILE);
        o.set_enable_blob_gc(true);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&table);
    }
    o
}

/// Values of the small chunks' family below this many bytes stay in its table files (the
/// 4-byte lengths, a few tiny chunks); the rest go to blob files.
const SMALL_CHUNK_INLINE: u64 = 64;

/// Size of one blob file of small chunks.
const SMALL_CHUNK_BLOB_FILE: u64 = 64 << 20;

impl Store {
    /// Opens (creating if needed) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.set_keep_log_file_num(3);
        let cfs = ALL_CFS
            .iter()
            .map(|name| rocksdb::ColumnFamilyDescriptor::new(*name, cf_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") || msg.contains("Resource temporarily unavailable") {
                StoreError::Locked(path.display().to_string())
            } else {
                StoreError::Db(e)
            }
        })?;
        let store = Self {
            db,
            write: Mutex::new(()),
        };
        schema::migrate(&store)?;
        Ok(store)
    }

    pub(crate) fn cf(&self, name: &'static str) -> &ColumnFamily {
        // All column families are created in `open`; a missing one is impossible.
        match self.db.cf_handle(name) {
            Some(cf) => cf,
            None => unreachable!("column family {name} is created at open"),
        }
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Takes the writer lock.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            _guard: self.write.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Applies a batch atomically. With `durable` the WAL is synced before this returns; that
    /// also makes every earlier unsynced batch durable, since the WAL is written in order.
    /// Entries received from peers are committed without sync: after a crash they are fetched
    /// again by anti-entropy, and atomicity holds either way.
    pub fn commit(
        &self,
        _w: &Writer<'_>,
        batch: WriteBatch,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(durable);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Syncs the WAL: every batch committed before is durable when this returns.
    pub fn sync(&self, _w: &Writer<'_>) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The head of a feed.
    pub fn head(&self, feed: &NodeId) -> Result<Head, StoreError> {
        match self.db.get_cf(self.cf(CF_HEADS), feed.0)? {
            None => Ok(Head::EMPTY),
            Some(v) => decode_head(feed, &v),
        }
    }

    /// Every feed's head.
    pub fn heads(&self) -> Result<Vec<(NodeId, Head)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(CF_HEADS), IteratorMode::Start) {
            let (k, v) = kv?;
            let Ok(k) = <[u8; 32]>::try_from(&k[..]) else {
                continue;
            };
            let feed = NodeId(k);
            out.push((feed, decode_head(&feed, &v)?));
        }
        Ok(out)
    }

    /// Stages an entry of `feed` and makes it the feed's head (`head` describes the entry).
    pub fn put_entry(&self, batch: &mut WriteBatch, feed: &NodeId, head: &Head, envelope: &[u8]) {
        let mut v = Vec::with_capacity(32 + envelope.len());
        v.extend_from_slice(&head.hash.0);
        v.extend_from_slice(envelope);
        batch.put_cf(self.cf(CF_ENTRIES), entry_key(feed, head.seq), v);
        self.put_head(batch, feed, head);
    }

    /// Stages `head` as the head of `feed` (an empty head removes the row).
    pub(crate) fn put_head(&self, batch: &mut WriteBatch, feed: &NodeId, head: &Head) {
        if head.seq == 0 {
            batch.delete_cf(self.cf(CF_HEADS), feed.0);
        } else {
            batch.put_cf(self.cf(CF_HEADS), feed.0, encode_head(head));
        }
    }

    /// The stored hash and envelope of one entry.
    pub fn entry(
        &self,
        feed: &NodeId,
        seq: u64,
    ) -> Result<Option<(EntryHash, Vec<u8>)>, StoreError> {
        let Some(v) = self.db.get_cf(self.cf(CF_ENTRIES), entry_key(feed, seq))? else {
            return Ok(None);
        };
        if v.len() < 32 {
            return Err(StoreError::Corrupt {
                cf: CF_ENTRIES,
                detail: format!("entry {feed}/{seq} is truncated"),
            });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&v[..32]);
        Ok(Some((EntryHash(hash), v[32..].to_vec())))
    }

    /// Envelopes of `feed` from seq `from`, at most `limit` of them and about `max_bytes`.
    pub fn range(
        &self,
        feed: &NodeId,
        from: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mut size = 0;
        let start = entry_key(feed, from);
        let iter = self.db.iterator_cf(
            self.cf(CF_ENTRIES),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        // `from` comes from a peer: counting up from it must not overflow (u64::MAX).
        let mut expect = Some(from);
        for kv in iter {
            let (k, v) = kv?;
            if k.len() != 40 || k[..32] != feed.0 || out.len() as u32 >= limit {
                break;
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[32..]);
            let Some(want) = expect else { break };
            if u64::from_be_bytes(seq) != want || v.len() < 32 {
                break;
            }
            expect = want.checked_add(1);
            size += v.len() - 32;
            if size > max_bytes && !out.is_empty() {
                break;
            }
            out.push(v[32..].to_vec());
        }
        Ok(out)
    }

    /// Stages fork evidence.
    pub fn put_fork(&self, batch: &mut WriteBatch, fork: &Fork) {
        batch.put_cf(
            self.cf(CF_FORKS),
            entry_key(&fork.feed, fork.seq),
            huitong_protocol::codec::encode(fork),
        );
    }

    /// All fork evidence.
    pub fn forks(&self) -> Result<Vec<Fork>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(CF_FORKS), IteratorMode::Start) {
            let (_, v) = kv?;
            let fork = huitong_protocol::codec::decode(&v, usize::MAX).map_err(|e| {
                StoreError::Corrupt {
                    cf: CF_FORKS,
                    detail: e.to_string(),
                }
            })?;
            out.push(fork);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range asked for from any position, up to `u64::MAX`, answers without overflowing
    /// (a peer chooses `from`; issue #10, point 4).
    #[test]
    fn ranges_from_any_position_answer_without_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let feed = NodeId([7; 32]);
        let w = store.writer();
        let mut batch = WriteBatch::default();
        for seq in [1, 2, 3, u64::MAX - 1, u64::MAX] {
            let head = Head {
                seq,
                hash: EntryHash([seq as u8; 32]),
                stamp: Stamp {
                    timestamp_ms: seq,
                    charter: 1,
                },
            };
            store.put_entry(&mut batch, &feed, &head, b"entry");
        }
        store.commit(&w, batch, false).unwrap();
        let n = |from| store.range(&feed, from, 100, 1 << 20).unwrap().len();
        assert_eq!(n(1), 3, "stops at the gap after 3");
        assert_eq!(n(u64::MAX - 1), 2);
        assert_eq!(n(u64::MAX), 1);
        assert_eq!(n(4), 0);
        assert_eq!(
            store
                .range(&NodeId([8; 32]), u64::MAX, 100, 1 << 20)
                .unwrap()
                .len(),
            0
        );
    }
}
