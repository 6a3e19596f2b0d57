//! Writing a file version's output while its chunks arrive. A file pull writes each verified
//! chunk once, at its offset(s) in a partial file of its own beside the target
//! (`.NAME.huitong-partial.<tag>`, see [`crate::partial`]), not also into the chunk store: the end
//! of a pull is one fsync and a rename, and a pulled file costs its size on disk once.
//!
//! A pull that fails (provider gone) or whose node is killed keeps the partial file; running the
//! same pull again adopts it and keeps every chunk whose bytes there still hash right
//! ([`FileOutput::held_in_place`]). A pull refused outright (grant revoked) or cancelled removes
//! it ([`FileOutput::discard`]).
//!
//! The target is never a symbolic link (the partial file is opened with `O_NOFOLLOW`, see
//! [`crate::partial`]). Before anything is written, room for what is not yet in the partial file
//! is reserved in the node's free-space ledger ([`crate::outfile::Space`]: what `statvfs` says is
//! free, less other running jobs' reservations, less the floor kept free on the node's file
//! system), and the partial file is allocated whole ([`outfile::preallocate`]) in the same step
//! ([`Space::reserve_allocating`]), so the space is held on disk and nothing stays reserved. Where the file system cannot
//! preallocate, the reservation stays with the output until the pull ends, less what has been
//! written. A partial file kept for a resume keeps its whole size allocated.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;

use huitong_protocol::dataset::{Body, ChunkHash, ChunkRef, Manifest};

use crate::outfile::{self, OutError, Reservation, Space};
use crate::partial::Partial;

/// The output of a file version under construction.
pub struct FileOutput {
    partial: Partial,
    offsets: HashMap<ChunkHash, Vec<u64>>,
    lens: HashMap<ChunkHash, u32>,
    len: u64,
    /// The room reserved while the partial file could not be preallocated.
    _room: Option<Reservation>,
}

impl FileOutput {
    /// Starts (or reopens, to resume) the output of `manifest` if it is a file version (`None`
    /// for tables), once `space` has room for the bytes not yet in place; the partial file is
    /// then allocated whole.
    pub fn create(
        manifest: &Manifest,
        out: &Path,
        space: &Space,
    ) -> Result<Option<Self>, OutError> {
        let Body::File { chunks, .. } = &manifest.body else {
            return Ok(None);
        };
        let mut offsets: HashMap<ChunkHash, Vec<u64>> = HashMap::new();
        let mut lens = HashMap::new();
        let mut at = 0u64;
        for c in chunks {
            offsets.entry(c.hash).or_default().push(at);
            lens.insert(c.hash, c.len);
            at += u64::from(c.len);
        }
        outfile::check_target(out)?;
        let partial = Partial::claim(out, true).map_err(|source| OutError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        let held = outfile::allocated(partial.path());
        let needed = at.saturating_sub(held);
        let room = space.reserve_allocating(out, needed, || {
            partial.file().set_len(at)?;
            outfile::preallocate(partial.file(), at)
        });
        if let Ok(Some(room)) = &room {
            // Where the file system cannot preallocate, the ledger holds the room until the
            // pull ends, less what is allocated since (by the writes), which statvfs counts.
            tracing::debug!(path = %partial.path().display(), "the file system cannot preallocate; the space stays reserved in the ledger");
            let path = partial.path().to_path_buf();
            room.track(move || outfile::allocated(&path).saturating_sub(held));
        }
        let room = match room {
            Ok(r) => r,
            Err(e) => {
                if !partial.resumed() {
                    partial.discard();
                }
                return Err(e);
            }
        };
        Ok(Some(Self {
            partial,
            offsets,
            lens,
            len: at,
            _room: room,
        }))
    }

    /// The partial file.
    pub fn temp(&self) -> &Path {
        self.partial.path()
    }

    /// On a resumed pull, the chunks whose bytes are already in place (every offset of them
    /// hashes right; a chunk right at one offset is copied to its others).
    pub fn held_in_place(&self) -> HashSet<ChunkHash> {
        let mut held = HashSet::new();
        if !self.partial.resumed() {
            return held;
        }
        let file = self.partial.file();
        for (hash, offsets) in &self.offsets {
            let len = self.lens.get(hash).copied().unwrap_or(0) as usize;
            let mut good = None;
            let mut bad = Vec::new();
            let mut buf = vec![0u8; len];
            for &at in offsets {
                let ok = file.read_exact_at(&mut buf, at).is_ok() && hash.verify(&buf).is_ok();
                if ok {
                    good.get_or_insert_with(|| buf.clone());
                } else {
                    bad.push(at);
                }
            }
            let Some(bytes) = good else { continue };
            if bad.iter().all(|&at| file.write_all_at(&bytes, at).is_ok()) {
                held.insert(*hash);
            }
        }
        held
    }

    /// Writes a verified chunk wherever it belongs.
    pub fn place(&self, hash: &ChunkHash, bytes: &[u8]) -> std::io::Result<()> {
        for &at in self
            .offsets
            .get(hash)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            self.partial.file().write_all_at(bytes, at)?;
            start_writeback(self.partial.file(), at, bytes.len());
        }
        Ok(())
    }

    /// Where each chunk lies in the finished output (its first offset).
    pub fn placements(&self) -> Vec<(ChunkRef, u64)> {
        self.offsets
            .iter()
            .filter_map(|(h, offs)| {
                let len = *self.lens.get(h)?;
                Some((ChunkRef { hash: *h, len }, *offs.first()?))
            })
            .collect()
    }

    /// Fsyncs the output and renames it over the target; returns its length.
    pub fn finish(self) -> std::io::Result<u64> {
        self.partial.finish()?;
        Ok(self.len)
    }

    /// Removes the partial file (a pull that will not be resumed).
    pub fn discard(&self) {
        self.partial.discard();
    }
}

/// Asks the kernel to start writing `len` bytes at `at` to disk now, so the final fsync waits
/// only for the last chunks instead of the whole file (measured in docs/benchmarks.md, issue
/// #14). Only a hint: a write that fails is reported by that fsync, so a refusal here (a file
/// system without it) changes nothing.
fn start_writeback(file: &std::fs::File, at: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed; the call reads no
    // memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outfile::space::FsSpace;
    use crate::outfile::Floor;
    use huitong_protocol::dataset::MANIFEST_VERSION;
    use huitong_protocol::{ResourceCode, SecretKey};
    use std::sync::Barrier;

    const MIB: u64 = 1 << 20;

    /// A file version of `chunks` distinct chunks of 4 MiB.
    fn file_of(chunks: u8) -> Manifest {
        Manifest {
            layout: MANIFEST_VERSION,
            provider: SecretKey::from_bytes([7; 32]).public(),
            code: ResourceCode::parse("301001/000001").unwrap(),
            version: 1,
            created_at_ms: 0,
            body: Body::File {
                name: "f".into(),
                chunks: (0..chunks)
                    .map(|i| ChunkRef {
                        hash: ChunkHash::of(&[i]),
                        len: 4 << 20,
                    })
                    .collect(),
            },
            rejects: None,
            changes: None,
        }
    }

    /// Review 10, M9, the review's test in one process: the node directory and the outputs on a
    /// file system with 220 MiB free (what `statvfs` reports: 220 MiB less every block allocated
    /// in the directory), 16 MiB kept free. Four pulls of 60 MiB start at once: three get their
    /// partial files (allocated whole where the file system can), the fourth is refused up
    /// front, naming the numbers — none would fail halfway with ENOSPC. Once one pull is given
    /// up, the fourth fits.
    #[test]
    fn concurrent_file_pulls_never_overcommit_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let probe_root = root.clone();
        let space = Space::with_probe(
            &root,
            Floor::Bytes(16 * MIB),
            Box::new(move |_| {
                let used: u64 = std::fs::read_dir(&probe_root)
                    .map(|d| d.flatten().map(|e| outfile::allocated(&e.path())).sum())
                    .unwrap_or(0);
                Ok(FsSpace {
                    available: (220 * MIB).saturating_sub(used),
                    size: 1 << 40,
                })
            }),
        );
        let manifest = file_of(15);
        let barrier = Barrier::new(4);
        let results: Vec<Result<Option<FileOutput>, OutError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (space, manifest, barrier) = (&space, &manifest, &barrier);
                    let out = root.join(format!("out{i}.bin"));
                    s.spawn(move || {
                        barrier.wait();
                        FileOutput::create(manifest, &out, space)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut outputs = Vec::new();
        let mut refused = Vec::new();
        for r in results {
            match r {
                Ok(o) => outputs.push(o.unwrap()),
                Err(e) => refused.push(e),
            }
        }
        assert_eq!((outputs.len(), refused.len()), (3, 1), "{refused:?}");
        match &refused[0] {
            OutError::NoSpace {
                needed,
                floor,
                available,
                ..
            } => {
                assert_eq!((*needed, *floor), (60 * MIB, 16 * MIB));
                assert!(*available <= 220 * MIB);
            }
            other => panic!("expected NoSpace, got {other}"),
        }
        let msg = refused[0].to_string();
        assert!(msg.contains("kept free for the node's database"), "{msg}");
        for o in &outputs {
            assert_eq!(std::fs::metadata(o.temp()).unwrap().len(), 60 * MIB);
            // Allocated whole (held on disk), or held in the ledger where it cannot be.
            let allocated = outfile::allocated(o.temp());
            assert!(allocated == 60 * MIB || o._room.is_some(), "{allocated}");
        }
        // A given-up pull frees its room: the fourth fits now.
        let first = outputs.remove(0);
        first.discard();
        drop(first);
        let fourth = FileOutput::create(&manifest, &root.join("out9.bin"), &space)
            .unwrap()
            .unwrap();
        let fifth = FileOutput::create(&manifest, &root.join("out10.bin"), &space);
        assert!(matches!(fifth, Err(OutError::NoSpace { .. })));
        assert!(
            crate::partial::existing(&root.join("out10.bin")).is_empty(),
            "a refused new pull leaves no partial file"
        );
        drop((fourth, outputs));
    }
}
