//! Writing a file version's output while its chunks arrive: each verified chunk is also written
//! at its offset(s) in a temporary file beside the target, so the end of a pull is one fsync
//! and a rename instead of a second pass over the data.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use huitong_protocol::dataset::{Body, ChunkHash, Manifest};

/// The output of a file version under construction.
pub struct FileOutput {
    file: File,
    tmp: PathBuf,
    out: PathBuf,
    offsets: HashMap<ChunkHash, Vec<u64>>,
    len: u64,
    done: bool,
}

impl FileOutput {
    /// Starts the output of `manifest` if it is a file version (`None` for tables).
    pub fn create(manifest: &Manifest, out: &Path) -> std::io::Result<Option<Self>> {
        let Body::File { chunks, .. } = &manifest.body else {
            return Ok(None);
        };
        let mut offsets: HashMap<ChunkHash, Vec<u64>> = HashMap::new();
        let mut at = 0u64;
        for c in chunks {
            offsets.entry(c.hash).or_default().push(at);
            at += u64::from(c.len);
        }
        let tmp = crate::dataset::export::temp_path(out);
        let file = File::create(&tmp)?;
        file.set_len(at)?;
        Ok(Some(Self {
            file,
            tmp,
            out: out.to_path_buf(),
            offsets,
            len: at,
            done: false,
        }))
    }

    /// Writes a verified chunk wherever it belongs.
    pub fn place(&self, hash: &ChunkHash, bytes: &[u8]) -> std::io::Result<()> {
        for &at in self
            .offsets
            .get(hash)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            self.file.write_all_at(bytes, at)?;
        }
        Ok(())
    }

    /// Fsyncs the output and renames it over the target; returns its length.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.out)?;
        self.done = true;
        if let Some(dir) = self.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.len)
    }
}

impl Drop for FileOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
