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
//! [`crate::partial`]), and the output's file system must have room for what is not yet in the
//! partial file before anything is written ([`crate::outfile`]).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;

use huitong_protocol::dataset::{Body, ChunkHash, ChunkRef, Manifest};

use crate::outfile::{self, OutError};
use crate::partial::Partial;

/// The output of a file version under construction.
pub struct FileOutput {
    partial: Partial,
    offsets: HashMap<ChunkHash, Vec<u64>>,
    lens: HashMap<ChunkHash, u32>,
    len: u64,
}

impl FileOutput {
    /// Starts (or reopens, to resume) the output of `manifest` if it is a file version (`None`
    /// for tables), once its file system has room for the bytes not yet in place.
    pub fn create(manifest: &Manifest, out: &Path) -> Result<Option<Self>, OutError> {
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
        let io = |source| OutError::Io {
            path: out.to_path_buf(),
            source,
        };
        let partial = Partial::claim(out, true).map_err(io)?;
        let needed = at.saturating_sub(outfile::allocated(partial.path()));
        if let Err(e) = outfile::ensure_space(&[(out, needed)]) {
            if !partial.resumed() {
                partial.discard();
            }
            return Err(e);
        }
        partial.file().set_len(at).map_err(io)?;
        Ok(Some(Self {
            partial,
            offsets,
            lens,
            len: at,
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
