//! The chunk store: content-addressed chunks, each either a file,
//! `<data>/chunks/<first two hex>/<hash hex>`, or — when it is small — a row of the node's
//! database (`storage.small_chunk_kib`, 128 KiB by default).
//!
//! A chunk file is written under `chunks/tmp/`, hashed while written, and renamed into place
//! only if its BLAKE3 is what was expected, so a file at a chunk's path always held verified
//! bytes when it was renamed. A small chunk is hashed before its row is written. Chunks shared
//! between versions (or resources) are stored once.
//!
//! Why both: large chunks (a file's, 256 KiB to 4 MiB, up to 8 MiB) are written once and read
//! whole; in RocksDB every compaction would rewrite them, while a file is written once and the
//! kernel's page cache serves its reads. A table version is hundreds of column chunks of a few
//! KiB to a few tens of KiB: a file each costs an inode, a directory entry, a rename and an
//! fsync — most of a table pull's time (docs/benchmarks.md, issue #14) — where a row costs a
//! memtable insert. Where a chunk is does not show outside this module.
//!
//! Durability: renamed chunks are not fsynced one by one, nor are rows synced one by one;
//! [`ChunkStore::sync`] fsyncs a set of chunk files and their directories, and flushes the
//! rows (written without the database's log) to its files, before a version is recorded as
//! complete. A pull that resumes after a crash
//! re-hashes the chunks it finds, so a torn chunk is fetched again.
//!
//! Storing bytes that are already held ([`ChunkStore::put`]) re-hashes the chunk there: a chunk
//! found damaged (a torn write, a disk error, a hand edit) is replaced by the new bytes instead
//! of being trusted, and counted ([`ChunkStore::repaired`]).
//!
//! Leases: everything that writes chunks or relies on chunks not yet referenced by a stored
//! manifest (a publish, a pull) holds a shared [`Lease`] for its whole run; the garbage
//! collector (`dataset::gc`) removes chunks only under the exclusive lease
//! ([`ChunkStore::try_exclusive`]), so it never runs beside a publish or a pull.
//!
//! Layering: above the store (for the small chunks' rows) only; the state holds the chunk store.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use huitong_protocol::dataset::{ChunkHash, ChunkRef, MAX_CHUNK_BYTES};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::store::{Store, StoreError};

/// A chunk store error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// File system error.
    #[error("chunk store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The bytes do not hash to the expected chunk hash.
    #[error("chunk {expected} failed verification: the bytes hash to {actual}")]
    Mismatch {
        /// The hash asked for.
        expected: ChunkHash,
        /// The hash of the bytes received.
        actual: ChunkHash,
    },
    /// A chunk is larger than the protocol allows.
    #[error("chunk of {0} bytes is larger than the limit of {MAX_CHUNK_BYTES} bytes")]
    TooLarge(u64),
    /// The database that holds the small chunks failed.
    #[error("chunk store: {0}")]
    Db(#[from] StoreError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ChunkError + '_ {
    move |source| ChunkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Above this many chunks, [`ChunkStore::sync`] syncs the whole file system once.
const SYNCFS_THRESHOLD: usize = 64;

/// Held by a publish or a pull for its whole run: the garbage collector waits for none and
/// runs only when no lease is held.
pub type Lease = OwnedRwLockReadGuard<()>;

/// Held by the garbage collector while it removes chunks.
pub type Exclusive = OwnedRwLockWriteGuard<()>;

/// A chunk as listed by [`ChunkStore::list`] (a file, or a small chunk's row).
#[derive(Clone, Copy, Debug)]
pub struct Listed {
    /// The chunk (the file's name, the row's key).
    pub hash: ChunkHash,
    /// Its length.
    pub len: u64,
}

/// Whether bytes are already held.
enum Held {
    /// Not there.
    Absent,
    /// What is there is exactly these bytes.
    Intact,
    /// Something is there but not these bytes.
    Damaged(String),
}

/// The store.
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Where small chunks are rows.
    db: Arc<Store>,
    /// Chunks of at most this many bytes are written as rows of `db`, larger ones as files.
    small_max: usize,
    counter: AtomicU64,
    leases: Arc<RwLock<()>>,
    repaired: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating) the store under `root`, keeping chunks of at most `small_max` bytes
    /// in `db`; removes unfinished temporary chunks.
    pub fn open(root: &Path, db: Arc<Store>, small_max: usize) -> Result<Self, ChunkError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            db,
            small_max,
            counter: AtomicU64::new(0),
            leases: Arc::new(RwLock::new(())),
            repaired: AtomicU64::new(0),
        })
    }

    /// Whether a chunk of `len` bytes is written as a row (where it is read from does not
    /// depend on this: a row is looked for first, then a file).
    fn is_small(&self, len: usize) -> bool {
        len <= self.small_max
    }

    /// A shared lease for a pull (waits while the garbage collector runs).
    pub async fn lease(&self) -> Lease {
        self.leases.clone().read_owned().await
    }

    /// A shared lease for a publish, from a blocking thread (never from async code).
    pub fn lease_blocking(&self) -> Lease {
        // `blocking_read_owned` does not exist; a current-thread block_on of the owned read is
        // the same thing, outside any runtime's async context.
        futures::executor::block_on(self.leases.clone().read_owned())
    }

    /// The exclusive lease, if no publish or pull holds a shared one now.
    pub fn try_exclusive(&self) -> Option<Exclusive> {
        self.leases.clone().try_write_owned().ok()
    }

    /// How many held chunks were found damaged and replaced since start.
    pub fn repaired(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a chunk lives.
    pub fn path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is stored (a database error counts as not: the chunk is fetched
    /// again, and the error logged).
    pub fn has(&self, hash: &ChunkHash) -> bool {
        match self.db.holds_small_chunk(hash) {
            Ok(true) => true,
            Ok(false) => self.path(hash).is_file(),
            Err(e) => {
                tracing::warn!(chunk = %hash, error = %e, "cannot look a chunk up in the database; it counts as not held");
                false
            }
        }
    }

    /// The chunk's bytes if it is stored and they still hash to its name and length.
    pub fn read_intact(&self, chunk: &ChunkRef) -> Option<Vec<u8>> {
        self.read(&chunk.hash).ok().filter(|b| chunk.matches(b))
    }

    /// Stores bytes (once); returns their reference and whether they were written (new to the
    /// store, or replacing a held chunk that no longer held them). A chunk already there (row
    /// or file) is re-hashed, never trusted by its name alone; a small chunk held intact as a
    /// file (by an earlier release, or with `small_chunk_kib = 0`) is not copied into a row.
    pub fn put(&self, bytes: &[u8]) -> Result<(ChunkRef, bool), ChunkError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l <= MAX_CHUNK_BYTES)
            .ok_or(ChunkError::TooLarge(bytes.len() as u64))?;
        let hash = ChunkHash::of(bytes);
        let small = self.is_small(bytes.len());
        let dest = self.path(&hash);
        let held = if small {
            match self.held_row(&hash)? {
                Held::Absent => self.held(&dest, &hash, len),
                row => row,
            }
        } else {
            self.held(&dest, &hash, len)
        };
        let write = match held {
            Held::Intact => false,
            Held::Absent => true,
            Held::Damaged(why) => {
                self.repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(chunk = %hash, small, why, "held chunk is damaged; replacing it with verified bytes");
                true
            }
        };
        if write && small {
            self.db.put_small_chunk(&hash, bytes)?;
        } else if write {
            // The hash was just computed from these bytes: write them without hashing again.
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
            fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        }
        Ok((ChunkRef { hash, len }, write))
    }

    /// Whether the row of `hash` holds the bytes hashing to it (a database error is an
    /// error, not damage).
    fn held_row(&self, hash: &ChunkHash) -> Result<Held, ChunkError> {
        Ok(match self.db.small_chunk(hash)? {
            None => Held::Absent,
            Some(b) if hash.verify(&b).is_ok() => Held::Intact,
            Some(b) => Held::Damaged(format!("the row hashes to {}", ChunkHash::of(&b))),
        })
    }

    /// Whether the file at `path` holds the `len` bytes hashing to `hash`.
    fn held(&self, path: &Path, hash: &ChunkHash, len: u32) -> Held {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Held::Absent,
            Err(e) => return Held::Damaged(e.to_string()),
        };
        if !meta.is_file() {
            return Held::Damaged("not a regular file".into());
        }
        if meta.len() != u64::from(len) {
            return Held::Damaged(format!("{} bytes where the chunk has {len}", meta.len()));
        }
        match self.read(hash) {
            Ok(b) if hash.verify(&b).is_ok() => Held::Intact,
            Ok(b) => Held::Damaged(format!("the file hashes to {}", ChunkHash::of(&b))),
            Err(e) => Held::Damaged(e.to_string()),
        }
    }

    /// Every chunk in the store, once: rows, then files (files whose name is not a chunk hash
    /// are left out, and so are files of a chunk also held as a row).
    pub fn list(&self) -> Result<Vec<Listed>, ChunkError> {
        let mut out: Vec<Listed> = (self.db.small_chunks()?.into_iter())
            .map(|(hash, len)| Listed { hash, len })
            .collect();
        let rows: std::collections::HashSet<ChunkHash> = out.iter().map(|l| l.hash).collect();
        for dir in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let dir = dir.map_err(io_err(&self.root))?;
            let name = dir.file_name();
            let Some(prefix) = name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            if !dir.file_type().map_err(io_err(&dir.path()))?.is_dir() {
                continue;
            }
            let path = dir.path();
            for f in fs::read_dir(&path).map_err(io_err(&path))? {
                let f = f.map_err(io_err(&path))?;
                let Some(hash) = f
                    .file_name()
                    .to_str()
                    .filter(|n| n.starts_with(prefix))
                    .and_then(ChunkHash::from_hex)
                else {
                    continue;
                };
                if rows.contains(&hash) {
                    continue;
                }
                let meta = f.metadata().map_err(io_err(&f.path()))?;
                if meta.is_file() {
                    out.push(Listed {
                        hash,
                        len: meta.len(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes a chunk, row and file (under the exclusive lease, which the caller proves by
    /// passing it). The space of removed rows comes back with [`ChunkStore::reclaim`].
    pub fn remove(&self, _exclusive: &Exclusive, hash: &ChunkHash) -> Result<(), ChunkError> {
        if self.db.holds_small_chunk(hash)? {
            self.db.remove_small_chunk(hash)?;
        }
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Gives back the space of the rows [`ChunkStore::remove`] removed (a compaction of their
    /// column family; under the exclusive lease, after a collection).
    pub fn reclaim(&self, _exclusive: &Exclusive) {
        self.db.compact_small_chunks();
    }

    /// Stores bytes received for `expected` if they hash to it; otherwise stores nothing.
    pub fn put_expected(&self, expected: &ChunkHash, bytes: &[u8]) -> Result<(), ChunkError> {
        if self.is_small(bytes.len()) {
            expected
                .verify(bytes)
                .map_err(|actual| ChunkError::Mismatch {
                    expected: *expected,
                    actual,
                })?;
            self.db.put_small_chunk(expected, bytes)?;
            return Ok(());
        }
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish(expected).map(|_| ())
    }

    /// Reads a chunk whole (not verified: callers that send it let the receiver verify).
    pub fn read(&self, hash: &ChunkHash) -> Result<Vec<u8>, ChunkError> {
        if let Some(bytes) = self.db.small_chunk(hash)? {
            return Ok(bytes);
        }
        let path = self.path(hash);
        let mut f = File::open(&path).map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len > u64::from(MAX_CHUNK_BYTES) {
            return Err(ChunkError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(len as usize);
        f.read_to_end(&mut out).map_err(io_err(&path))?;
        Ok(out)
    }

    /// Reads a chunk and checks its hash.
    pub fn read_verified(&self, hash: &ChunkHash) -> Result<Vec<u8>, ChunkError> {
        let bytes = self.read(hash)?;
        hash.verify(&bytes).map_err(|actual| ChunkError::Mismatch {
            expected: *hash,
            actual,
        })?;
        Ok(bytes)
    }

    /// A writer for one chunk whose hash is checked at [`ChunkWriter::finish`].
    pub fn writer(&self) -> Result<ChunkWriter<'_>, ChunkError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}", std::process::id()));
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(ChunkWriter {
            store: self,
            file: Some(file),
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    /// Makes the given chunks durable: one flush of the rows if any is a row; the files
    /// and the directories that hold them, with one `syncfs(2)` of the store's file system
    /// instead of one fsync each when there are many.
    pub fn sync<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a ChunkHash>,
    ) -> Result<(), ChunkError> {
        let mut rows = false;
        let mut files: Vec<&ChunkHash> = Vec::new();
        for h in hashes {
            if self.db.holds_small_chunk(h)? {
                rows = true;
            } else {
                files.push(h);
            }
        }
        if rows {
            self.db.sync_small_chunks()?;
        }
        let hashes = files;
        if hashes.is_empty() {
            return Ok(());
        }
        if hashes.len() > SYNCFS_THRESHOLD {
            let dir = File::open(&self.root).map_err(io_err(&self.root))?;
            // SAFETY: syncfs(2) on a file descriptor we own for the duration of the call.
            if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
                return Err(ChunkError::Io {
                    path: self.root.clone(),
                    source: io::Error::last_os_error(),
                });
            }
            return Ok(());
        }
        let mut dirs = std::collections::BTreeSet::new();
        for h in hashes {
            let path = self.path(h);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        dirs.insert(self.root.clone());
        for d in dirs {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&d))?;
        }
        Ok(())
    }
}

/// Writes one chunk to a temporary file while hashing it.
pub struct ChunkWriter<'a> {
    store: &'a ChunkStore,
    file: Option<File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
}

impl ChunkWriter<'_> {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        self.len += bytes.len() as u64;
        if self.len > u64::from(MAX_CHUNK_BYTES) {
            return Err(ChunkError::TooLarge(self.len));
        }
        self.hasher.update(bytes);
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io_err(&self.path)),
            None => Ok(()),
        }
    }

    /// Verifies the hash and moves the chunk into place; on a mismatch nothing is stored.
    pub fn finish(mut self, expected: &ChunkHash) -> Result<ChunkRef, ChunkError> {
        let actual = ChunkHash(*self.hasher.finalize().as_bytes());
        if actual != *expected {
            return Err(ChunkError::Mismatch {
                expected: *expected,
                actual,
            });
        }
        drop(self.file.take());
        let dest = self.store.path(expected);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        fs::rename(&self.path, &dest).map_err(io_err(&dest))?;
        Ok(ChunkRef {
            hash: actual,
            // `write` keeps len ≤ MAX_CHUNK_BYTES, which fits in u32.
            len: self.len as u32,
        })
    }
}

impl Drop for ChunkWriter<'_> {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A chunk store in `dir/chunks` with its database in `dir/db`, small chunks up to 128 KiB
/// (the default), for tests.
#[cfg(test)]
pub(crate) fn open_in(dir: &Path) -> ChunkStore {
    let db = Arc::new(Store::open(&dir.join("db")).expect("store"));
    let small = huitong_config::DEFAULT_SMALL_CHUNK_KIB as usize * 1024;
    ChunkStore::open(&dir.join("chunks"), db, small).expect("chunk store")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes over the small-chunk size: stored as a file.
    fn large(fill: u8) -> Vec<u8> {
        vec![fill; 128 * 1024 + 1]
    }

    #[test]
    fn put_read_and_refuse_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path());
        for bytes in [b"hello".to_vec(), large(7)] {
            let (r, new) = store.put(&bytes).unwrap();
            assert!(new && !store.put(&bytes).unwrap().1, "stored once");
            assert_eq!(store.read_verified(&r.hash).unwrap(), bytes);
            assert_eq!(store.read_intact(&r).as_deref(), Some(&bytes[..]));
            store.sync([&r.hash]).unwrap();
        }
        for other in [b"other".to_vec(), large(8)] {
            let wrong = ChunkHash::of(b"not other");
            assert!(matches!(
                store.put_expected(&wrong, &other),
                Err(ChunkError::Mismatch { .. })
            ));
            assert!(!store.has(&wrong));
            let right = ChunkHash::of(&other);
            store.put_expected(&right, &other).unwrap();
            assert_eq!(store.read_verified(&right).unwrap(), other);
        }
        assert_eq!(
            fs::read_dir(dir.path().join("chunks/tmp")).unwrap().count(),
            0
        );
    }

    /// A small chunk is a row of the database, a large one a file; a store set to keep no
    /// rows writes files only, and reads rows written before.
    #[test]
    fn small_chunks_are_rows_and_large_ones_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path());
        let (small, _) = store.put(&[1u8; 128 * 1024]).unwrap();
        let (big, _) = store.put(&large(2)).unwrap();
        assert!(
            !store.path(&small.hash).exists(),
            "no file for a small chunk"
        );
        assert!(store.db.holds_small_chunk(&small.hash).unwrap());
        assert!(store.path(&big.hash).is_file());
        assert!(!store.db.holds_small_chunk(&big.hash).unwrap());
        assert!(store.has(&small.hash) && store.has(&big.hash));
        store.sync([&small.hash, &big.hash]).unwrap();

        let files_only = ChunkStore::open(&dir.path().join("chunks"), store.db.clone(), 0).unwrap();
        let (tiny, _) = files_only.put(b"tiny").unwrap();
        assert!(files_only.path(&tiny.hash).is_file());
        assert!(!store.db.holds_small_chunk(&tiny.hash).unwrap());
        assert_eq!(
            files_only.read_verified(&small.hash).unwrap(),
            vec![1u8; 128 * 1024]
        );

        // A small chunk held intact as a file is not copied into a row; one held both ways is
        // listed once and removed both ways.
        assert!(!store.put(b"tiny").unwrap().1);
        assert!(!store.db.holds_small_chunk(&tiny.hash).unwrap());
        store.db.put_small_chunk(&tiny.hash, b"tiny").unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.iter().filter(|l| l.hash == tiny.hash).count(), 1);
        assert_eq!(listed.len(), 3);
        let x = store.try_exclusive().unwrap();
        store.remove(&x, &tiny.hash).unwrap();
        store.reclaim(&x);
        assert!(!store.has(&tiny.hash) && !store.path(&tiny.hash).exists());
        assert_eq!(store.list().unwrap().len(), 2);
    }

    /// Rows skip the write-ahead log: `sync` flushes them, and they are there after the
    /// store is opened again.
    #[test]
    fn synced_rows_outlive_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path());
        let bytes = b"kept across a restart".repeat(50);
        let (r, _) = store.put(&bytes).unwrap();
        store.sync([&r.hash]).unwrap();
        assert!(dir.path().join("db").read_dir().unwrap().any(|f| f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".blob")));
        drop(store);
        let store = open_in(dir.path());
        assert_eq!(store.read_verified(&r.hash).unwrap(), bytes);
    }

    /// Issue #10, point 6: a held chunk is re-hashed when the same bytes are stored again, and
    /// a damaged one (same length, another byte; truncated) is replaced, not trusted — a file
    /// as well as a row.
    #[test]
    fn put_replaces_a_damaged_chunk_instead_of_trusting_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path());
        let bytes = large(3);
        let (r, _) = store.put(&bytes).unwrap();
        let path = store.path(&r.hash);
        let mut flipped = bytes.clone();
        flipped[0] ^= 1;
        for damage in [flipped, bytes[..5].to_vec()] {
            fs::write(&path, &damage).unwrap();
            let (again, written) = store.put(&bytes).unwrap();
            assert_eq!(again, r);
            assert!(written, "the damaged file was rewritten");
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
        assert_eq!(store.repaired(), 2);
        assert!(!store.put(&bytes).unwrap().1, "an intact file is kept");

        let small = b"the bytes of one chunk".to_vec();
        let (s, _) = store.put(&small).unwrap();
        store.db.put_small_chunk(&s.hash, b"other bytes").unwrap();
        assert!(
            store.read_intact(&s).is_none(),
            "a damaged row is not intact"
        );
        assert!(
            store.put(&small).unwrap().1,
            "the damaged row was rewritten"
        );
        assert_eq!(store.read_verified(&s.hash).unwrap(), small);
        assert_eq!(store.repaired(), 3);
    }

    #[test]
    fn list_and_remove_under_the_exclusive_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path());
        let (a, _) = store.put(b"a").unwrap();
        let (b, _) = store.put(b"bb").unwrap();
        let big = large(4);
        let (c, _) = store.put(&big).unwrap();
        fs::write(dir.path().join("chunks/stray"), b"not a chunk").unwrap();
        let mut listed: Vec<_> = store
            .list()
            .unwrap()
            .iter()
            .map(|l| (l.hash, l.len))
            .collect();
        listed.sort_by_key(|l| l.1);
        assert_eq!(
            listed,
            vec![(a.hash, 1), (b.hash, 2), (c.hash, big.len() as u64)]
        );
        let lease = store.lease_blocking();
        assert!(
            store.try_exclusive().is_none(),
            "a lease keeps the collector out"
        );
        drop(lease);
        let x = store.try_exclusive().unwrap();
        for h in [&a.hash, &a.hash, &c.hash] {
            store.remove(&x, h).unwrap();
        }
        assert!(!store.has(&a.hash) && store.has(&b.hash) && !store.has(&c.hash));
        assert!(!store.path(&c.hash).exists());
    }
}
