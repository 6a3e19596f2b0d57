//! A log file rotated by size, for `huitong run --log-file` (or `log.file` in `huitong.toml`)
//! when the node does not log to the journal: `node.log` is renamed `node.log.1` once it would
//! grow past its size limit (`node.log.1` becomes `node.log.2`, and so on), and only the newest
//! `keep` old files are kept — so the logs take at most `(keep + 1) × limit` bytes.
//!
//! The tracing subscriber writes each event with one `write` call through a `Mutex`, so a
//! rotation never splits an event.
//!
//! Layering: a leaf (no other module of the node); `main.rs` installs it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A size-rotated log file.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    written: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// `node.log.N`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl Rotating {
    /// Opens (appending to) `path`, rotated when it would grow past `max_bytes`, keeping `keep`
    /// old files.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            written,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file rather than losing the event.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut log = Rotating::open(&path, 100, 3).unwrap();
        // One write per line, as the tracing subscriber writes one per event.
        for i in 0..50 {
            log.write_all(format!("line {i:04} of the log\n").as_bytes())
                .unwrap(); // 21 bytes
        }
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["node.log", "node.log.1", "node.log.2", "node.log.3"]
        );
        for f in &files {
            let len = std::fs::metadata(dir.path().join(f)).unwrap().len();
            assert!(len > 0 && len <= 100, "{f}: {len} bytes");
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line 0049 of the log\n"), "{newest}");
        let older = std::fs::read_to_string(dir.path().join("node.log.1")).unwrap();
        assert!(older.lines().next_back().is_some_and(|l| l < "line 0049"));
        // Reopening appends to the current file and counts what it holds.
        drop(log);
        let mut log = Rotating::open(&path, 100, 3).unwrap();
        log.write_all(b"x\n").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("line 0049 of the log\nx\n"));
    }
}
