//! Where the chunks of pulled files are. A file pull keeps no copy in the chunk store (see
//! [`super::assemble`]); instead `chunk_refs` records, per chunk, the finished output file and
//! offset. A later pull — typically a new version of the same file — reuses a chunk from there
//! if the file still holds exactly those bytes (checked by BLAKE3), and fetches it otherwise.
//!
//! The recorded path is not trusted to still name that file: anything may be there now (the
//! output moved away and a FIFO, a device or a link put in its place). Only a regular file is
//! read: the path is opened with `O_NOFOLLOW | O_NONBLOCK` (so neither a link nor a FIFO without
//! a writer can make the open wait) and checked with `fstat` before a byte is read.
//!
//! A read that never returns (a hung network mount) cannot be interrupted: its thread stays
//! stuck. At most [`MAX_READERS`] such reads run at once, each holding a slot until it returns;
//! when every slot is held, earlier outputs are not read at all (their chunks are fetched from
//! the provider), so stuck threads stay bounded however many pulls follow (review s7, L5).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use huitong_protocol::codec;
use huitong_protocol::dataset::ChunkRef;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::state::NodeState;
use crate::store::{StoreError, CF_CHUNK_REFS};

/// Where one chunk lies.
#[derive(Debug, Serialize, Deserialize)]
struct Place {
    /// The output file.
    path: String,
    /// Byte offset.
    offset: u64,
}

/// Records where the chunks of a finished output are (one batch).
pub fn record(
    state: &NodeState,
    out: &Path,
    placements: &[(ChunkRef, u64)],
) -> Result<(), StoreError> {
    let cf = state.store.cf(CF_CHUNK_REFS);
    let path = out.to_string_lossy().into_owned();
    let mut batch = WriteBatch::default();
    for (c, offset) in placements {
        let place = Place {
            path: path.clone(),
            offset: *offset,
        };
        batch.put_cf(cf, c.hash.0, codec::encode(&place));
    }
    state.store.db().write(batch)?;
    Ok(())
}

/// Reads of earlier outputs running at once, at most.
pub const MAX_READERS: usize = 4;

static READERS: AtomicUsize = AtomicUsize::new(0);
static SAID_FULL: AtomicBool = AtomicBool::new(false);

/// A running read's slot among [`MAX_READERS`]; given back when the read returns.
struct Slot;

impl Slot {
    fn take() -> Option<Self> {
        let taken = READERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_READERS).then(|| n + 1)
            })
            .is_ok();
        if !taken && !SAID_FULL.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                readers = MAX_READERS,
                "reads of earlier pulled outputs do not return (a hung mount?): their chunks are fetched from the provider instead"
            );
        }
        // Built only when taken: a `Slot` dropped gives a slot back.
        if taken {
            Some(Self)
        } else {
            None
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The chunk's bytes from where a finished output put them, if they are still intact (`None`
/// also while every reader slot is held by a read that does not return).
pub fn read(state: &NodeState, chunk: &ChunkRef) -> Option<Vec<u8>> {
    let _slot = Slot::take()?;
    let s = &state.store;
    let raw = s.db().get_cf(s.cf(CF_CHUNK_REFS), chunk.hash.0).ok()??;
    let place: Place = codec::decode(&raw, 64 * 1024).ok()?;
    read_at(Path::new(&place.path), place.offset, chunk)
}

/// The chunk's bytes at `offset` in the regular file at `path`, if they verify; `None` for
/// anything else there (see the module doc), which never blocks the caller.
fn read_at(path: &Path, offset: u64, chunk: &ChunkRef) -> Option<Vec<u8>> {
    let file = open_regular(path)?;
    let mut buf = vec![0u8; chunk.len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    chunk.matches(&buf).then_some(buf)
}

/// Opens `path` for reading if it is a regular file, without following a link or waiting on a
/// FIFO; `O_NONBLOCK` is cleared again once `fstat` shows a regular file.
fn open_regular(path: &Path) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let flags = rustix::fs::fcntl_getfl(&file).ok()?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK).ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::dataset::ChunkHash;
    use std::time::Duration;

    /// Review 10, M5: a FIFO at a recorded output path used to block `File::open` until a
    /// writer appeared (for ever), holding the pull in `verifying`.
    #[test]
    fn only_a_regular_file_at_a_recorded_path_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"the chunk's bytes".to_vec();
        let chunk = ChunkRef {
            hash: ChunkHash::of(&bytes),
            len: bytes.len() as u32,
        };
        let file = dir.path().join("out.bin");
        std::fs::write(&file, [b"xx".as_slice(), &bytes].concat()).unwrap();
        assert_eq!(read_at(&file, 2, &chunk), Some(bytes.clone()));
        assert_eq!(read_at(&file, 1, &chunk), None, "other bytes there");

        // A link to the file is not followed.
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_at(&link, 2, &chunk), None);

        // A FIFO with no writer: skipped at once, not waited on. Read on a thread, so that a
        // read that blocks fails the test instead of hanging it.
        let fifo = dir.path().join("fifo.bin");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_at(&fifo, 0, &chunk));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            got,
            Ok(None),
            "a FIFO at the recorded path blocked the read"
        );
    }

    /// Review s7, L5: reads that never return hold at most [`MAX_READERS`] slots; then earlier
    /// outputs are not read, and a returned read gives its slot back.
    #[test]
    fn stuck_reads_are_bounded() {
        let held: Vec<Slot> = (0..MAX_READERS).map_while(|_| Slot::take()).collect();
        assert_eq!(held.len(), MAX_READERS);
        assert!(Slot::take().is_none(), "every slot held: no more reads");
        drop(held);
        assert!(Slot::take().is_some(), "slots given back");
    }
}
