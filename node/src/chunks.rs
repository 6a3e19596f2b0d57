//! The chunk store: content-addressed files, `<data>/chunks/<first two hex>/<hash hex>`.
//!
//! A chunk is written under `chunks/tmp/`, hashed while written, and renamed into place only if
//! its BLAKE3 is what was expected, so a file at a chunk's path always held verified bytes when
//! it was renamed. Chunks shared between versions (or resources) are stored once.
//!
//! Why files and not RocksDB: chunks are large (up to 8 MiB), written once and read whole; in
//! RocksDB they would be rewritten by every compaction, while files are written once and the
//! kernel's page cache serves reads. RocksDB keeps the small records (manifests, versions).
//!
//! Durability: renamed chunks are not fsynced one by one; [`ChunkStore::sync`] fsyncs a set of
//! chunks and their directories before a version is recorded as complete. A pull that resumes
//! after a crash re-hashes the chunks it finds, so a torn chunk is fetched again.
//!
//! Storing bytes that are already held ([`ChunkStore::put`]) re-hashes the file there: a chunk
//! found damaged (a torn write, a disk error, a hand edit) is replaced by the new bytes instead
//! of being trusted, and counted ([`ChunkStore::repaired`]).
//!
//! Leases: everything that writes chunks or relies on chunks not yet referenced by a stored
//! manifest (a publish, a pull) holds a shared [`Lease`] for its whole run; the garbage
//! collector (`dataset::gc`) removes files only under the exclusive lease
//! ([`ChunkStore::try_exclusive`]), so it never runs beside a publish or a pull.
//!
//! Layering: a leaf (no other module of the node); the state holds the chunk store.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use huitong_protocol::dataset::{ChunkHash, ChunkRef, MAX_CHUNK_BYTES};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

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

/// Held by the garbage collector while it removes chunk files.
pub type Exclusive = OwnedRwLockWriteGuard<()>;

/// A chunk file as listed by [`ChunkStore::list`].
#[derive(Clone, Copy, Debug)]
pub struct Listed {
    /// The chunk (the file's name).
    pub hash: ChunkHash,
    /// The file's length.
    pub len: u64,
}

/// Whether bytes are already held.
enum Held {
    /// No file.
    Absent,
    /// The file holds exactly these bytes.
    Intact,
    /// The file is there but does not hold these bytes.
    Damaged(String),
}

/// The store.
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    leases: Arc<RwLock<()>>,
    repaired: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating) the store under `root`; removes unfinished temporary chunks.
    pub fn open(root: &Path) -> Result<Self, ChunkError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            counter: AtomicU64::new(0),
            leases: Arc::new(RwLock::new(())),
            repaired: AtomicU64::new(0),
        })
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

    /// Whether the chunk is stored.
    pub fn has(&self, hash: &ChunkHash) -> bool {
        self.path(hash).is_file()
    }

    /// The chunk's bytes if it is stored and they still hash to its name and length.
    pub fn read_intact(&self, chunk: &ChunkRef) -> Option<Vec<u8>> {
        self.read(&chunk.hash).ok().filter(|b| chunk.matches(b))
    }

    /// Stores bytes (once); returns their reference and whether they were written (new to the
    /// store, or replacing a held file that no longer held them). A file already there is
    /// re-hashed, never trusted by its name alone.
    pub fn put(&self, bytes: &[u8]) -> Result<(ChunkRef, bool), ChunkError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l <= MAX_CHUNK_BYTES)
            .ok_or(ChunkError::TooLarge(bytes.len() as u64))?;
        let hash = ChunkHash::of(bytes);
        let dest = self.path(&hash);
        let write = match self.held(&dest, &hash, len) {
            Held::Intact => false,
            Held::Absent => true,
            Held::Damaged(why) => {
                self.repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(chunk = %hash, path = %dest.display(), why, "held chunk is damaged; replacing it with verified bytes");
                true
            }
        };
        if write {
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

    /// Every chunk file in the store (files whose name is not a chunk hash are left out).
    pub fn list(&self) -> Result<Vec<Listed>, ChunkError> {
        let mut out = Vec::new();
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

    /// Removes a chunk file (under the exclusive lease, which the caller proves by passing it).
    pub fn remove(&self, _exclusive: &Exclusive, hash: &ChunkHash) -> Result<(), ChunkError> {
        let path = self.path(hash);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Stores bytes received for `expected` if they hash to it; otherwise stores nothing.
    pub fn put_expected(&self, expected: &ChunkHash, bytes: &[u8]) -> Result<(), ChunkError> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish(expected).map(|_| ())
    }

    /// Reads a chunk whole (not verified: callers that send it let the receiver verify).
    pub fn read(&self, hash: &ChunkHash) -> Result<Vec<u8>, ChunkError> {
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

    /// Fsyncs the given chunks and the directories that hold them. Many chunks at once are
    /// synced with one `syncfs(2)` of the store's file system instead of one fsync each.
    pub fn sync<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a ChunkHash>,
    ) -> Result<(), ChunkError> {
        let hashes: Vec<&ChunkHash> = hashes.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_and_refuse_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (r, new) = store.put(b"hello").unwrap();
        assert!(new && !store.put(b"hello").unwrap().1, "stored once");
        assert_eq!(store.read_verified(&r.hash).unwrap(), b"hello");
        assert_eq!(store.read_intact(&r).as_deref(), Some(&b"hello"[..]));
        let mut w = store.writer().unwrap();
        w.write(b"other").unwrap();
        let wrong = ChunkHash::of(b"not other");
        assert!(matches!(w.finish(&wrong), Err(ChunkError::Mismatch { .. })));
        assert!(!store.has(&wrong));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        store.sync([&r.hash]).unwrap();
    }

    /// Issue #10, point 6: a held file is re-hashed when the same bytes are stored again, and a
    /// damaged one (same length, another byte; truncated) is replaced, not trusted.
    #[test]
    fn put_replaces_a_damaged_chunk_instead_of_trusting_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let bytes = b"the bytes of one chunk".to_vec();
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
        assert_eq!(store.repaired(), 2);
    }

    #[test]
    fn list_and_remove_under_the_exclusive_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (a, _) = store.put(b"a").unwrap();
        let (b, _) = store.put(b"bb").unwrap();
        fs::write(dir.path().join("stray"), b"not a chunk").unwrap();
        let mut listed: Vec<_> = store
            .list()
            .unwrap()
            .iter()
            .map(|l| (l.hash, l.len))
            .collect();
        listed.sort_by_key(|l| l.1);
        assert_eq!(listed, vec![(a.hash, 1), (b.hash, 2)]);
        let lease = store.lease_blocking();
        assert!(
            store.try_exclusive().is_none(),
            "a lease keeps the collector out"
        );
        drop(lease);
        let x = store.try_exclusive().unwrap();
        store.remove(&x, &a.hash).unwrap();
        store.remove(&x, &a.hash).unwrap();
        assert!(!store.has(&a.hash) && store.has(&b.hash));
    }
}
