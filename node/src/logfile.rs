//! A log file rotated by size, for `huitong run --log-file` (or `log.file` in `huitong.toml`)
//! when the node does not log to the journal: `node.log` is renamed `node.log.1` once it would
//! grow past its size limit (`node.log.1` becomes `node.log.2`, and so on), and only the newest
//! `keep` old files are kept — so the logs take at most `(keep + 1) × limit` bytes.
//!
//! The tracing subscriber writes each event with one `write` call through a `Mutex`, so a
//! rotation never splits an event.
//!
//! A rotation first creates the next file as `node.log.new` (`O_CREAT | O_EXCL | O_NOFOLLOW`),
//! and only then shifts the old files and renames `node.log.new` to `node.log`. So a failed
//! rotation (no file descriptor or inode left, no permission to the directory) moves nothing:
//! the node keeps writing `node.log` under its name, says so on stderr (the tracing subscriber
//! holds the writer, so the writer cannot log through it), and tries again only after another
//! `limit` bytes — while rotations fail the file grows past its limit, but always where it can
//! be seen. The file being written is never shifted or removed: if it is no longer at
//! `node.log` (moved or removed by someone else, or an earlier rotation could not put it back),
//! a rotation only puts a new `node.log` in place and shifts nothing. The log file is opened
//! with `O_NOFOLLOW`: a symbolic link at its path is refused, not followed.
//!
//! Layering: a leaf (no other module of the node); `main.rs` installs it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A size-rotated log file.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    /// Bytes written since the last rotation (or the last failed one).
    written: u64,
    /// Creates the next file ([`create_next`]; a test injects failures here).
    create: fn(&Path) -> io::Result<File>,
}

/// A symbolic link at a log path is refused: say so, rather than "too many levels of symbolic
/// links".
fn explain(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            e.kind(),
            format!(
                "{} is a symbolic link; the node does not write its log through a link: give the real path, or remove the link",
                path.display()
            ),
        );
    }
    e
}

/// Opens the log file to append to it (created if missing), never through a symbolic link.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| explain(path, e))
}

/// Creates the next log file, refusing anything already at its name (a file or a link).
fn create_next(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `node.log.N`, `node.log.new`.
fn suffixed(path: &Path, suffix: impl std::fmt::Display) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

impl Rotating {
    /// Opens (appending to) `path`, rotated when it would grow past `max_bytes`, keeping `keep`
    /// old files. A symbolic link at `path` is refused.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            written,
            create: create_next,
        })
    }

    /// Whether the file being written is (still) the one at the log's path.
    fn held_at_path(&self) -> bool {
        match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Creates the next file, makes room for it and switches to it; on failure nothing the
    /// writer holds has moved.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let next_path = suffixed(&self.path, "new");
        // A leftover of a rotation that stopped halfway (removing a link leaves its target be).
        let _ = std::fs::remove_file(&next_path);
        let next = (self.create)(&next_path)?;
        if let Err(e) = self.shift_in(&next_path) {
            let _ = std::fs::remove_file(&next_path);
            return Err(e);
        }
        self.file = next;
        self.written = 0;
        Ok(())
    }

    /// Shifts the old files one up and renames `next` to the log's path. The file being written
    /// keeps a name throughout: it is `node.log` until it becomes `node.log.1`, and is put back
    /// if `next` cannot take its place.
    fn shift_in(&self, next: &Path) -> io::Result<()> {
        if self.keep == 0 || !self.held_at_path() {
            // With no old files kept, the file being written is let go. If it is not at the
            // log's path, shifting could remove it wherever it is: only put a new file there.
            return std::fs::rename(next, &self.path);
        }
        let _ = std::fs::remove_file(suffixed(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            let from = suffixed(&self.path, n);
            if std::fs::symlink_metadata(&from).is_ok() {
                std::fs::rename(&from, suffixed(&self.path, n + 1))?;
            }
        }
        let first = suffixed(&self.path, 1);
        std::fs::rename(&self.path, &first)?;
        if let Err(e) = std::fs::rename(next, &self.path) {
            // Should even this fail, the file stays `node.log.1`, and is not at the log's path,
            // so no later rotation shifts it.
            let _ = std::fs::rename(&first, &self.path);
            return Err(e);
        }
        Ok(())
    }
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                // Keep writing the current file rather than losing the event, and try again
                // after another `max_bytes`, not at every event.
                self.written = 0;
                let _ = writeln!(
                    io::stderr(),
                    "huitong: cannot rotate the log file {}: {e}; still writing to it (past its limit), trying again after another {} bytes: check the free space and inodes of its file system, the open-file limit, and that the node may write to its directory",
                    self.path.display(),
                    self.max_bytes
                );
            }
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

    /// What `node.log` and the file being written are now: (the file's links, whether it is
    /// the one at `node.log`, its length).
    fn held(log: &Rotating) -> (u64, bool, u64) {
        let m = log.file.metadata().unwrap();
        let at_path = std::fs::symlink_metadata(&log.path)
            .is_ok_and(|a| (a.dev(), a.ino()) == (m.dev(), m.ino()));
        (m.nlink(), at_path, m.len())
    }

    fn no_inode_left(_: &Path) -> io::Result<File> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }

    /// Review 10, L2: when the next file cannot be created, the file being written keeps its
    /// name and its links, nothing is shifted, rotation is tried again only after another
    /// `max_bytes`, and works again once files can be created.
    #[test]
    fn a_failed_rotation_keeps_writing_the_current_file_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut log = Rotating::open(&path, 100, 3).unwrap();
        for i in 0..10 {
            log.write_all(format!("line {i:04} of the log\n").as_bytes())
                .unwrap(); // 21 bytes; rotated twice
        }
        let old: Vec<Vec<u8>> = (1..=3)
            .map(|n| std::fs::read(suffixed(&path, n)).unwrap_or_default())
            .collect();
        assert!(!old[0].is_empty(), "the first rotations worked");

        log.create = no_inode_left;
        let mut len = held(&log).2;
        let mut tries = 0;
        for i in 0..40 {
            let before = log.file.metadata().unwrap().ino();
            log.write_all(format!("fail {i:04} of the log\n").as_bytes())
                .unwrap();
            let (links, at_path, now) = held(&log);
            assert!(links > 0, "event {i}: the file being written was unlinked");
            assert!(at_path, "event {i}: the file being written is not node.log");
            assert!(now > len, "event {i}: node.log did not grow");
            assert_eq!(log.file.metadata().unwrap().ino(), before);
            len = now;
            if log.written == 21 {
                tries += 1; // a rotation was tried before this event
            }
        }
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        assert!(len > 800, "every event is in node.log: {len} bytes");
        assert!(
            (1..=10).contains(&tries),
            "tried once per 100 bytes (every 4 events), not per event: {tries}"
        );
        for (n, before) in (1..=3).zip(&old) {
            assert_eq!(
                &std::fs::read(suffixed(&path, n)).unwrap_or_default(),
                before,
                "node.log.{n} was shifted by a failed rotation"
            );
        }
        assert!(!suffixed(&path, "new").exists());

        // Once files can be created again, the long file becomes node.log.1, whole.
        log.create = create_next;
        let long = log.file.metadata().unwrap().ino();
        for i in 0..5 {
            log.write_all(format!("back {i:04} of the log\n").as_bytes())
                .unwrap();
        }
        assert_ne!(log.file.metadata().unwrap().ino(), long, "rotated again");
        let first = std::fs::read_to_string(suffixed(&path, 1)).unwrap();
        assert!(
            first.contains("fail 0000") && first.contains("fail 0039"),
            "{first}"
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("back 0004 of the log\n"));
    }

    /// A symbolic link at the log path, or where the next file is created, is never written
    /// through.
    #[test]
    fn symbolic_links_at_log_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = Rotating::open(&path, 100, 3).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        std::fs::remove_file(&path).unwrap();

        let mut log = Rotating::open(&path, 100, 3).unwrap();
        std::os::unix::fs::symlink(&victim, suffixed(&path, "new")).unwrap();
        for i in 0..10 {
            log.write_all(format!("line {i:04} of the log\n").as_bytes())
                .unwrap();
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("line 0009 of the log\n"));
    }

    /// A file being written that is no longer at `node.log` (renamed by someone else) is never
    /// shifted or removed; the next rotation only puts a new `node.log` in place. With `keep`
    /// 0 only `node.log` is left.
    #[test]
    fn the_file_being_written_is_never_removed_when_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut log = Rotating::open(&path, 100, 1).unwrap();
        log.write_all(&[b'x'; 60]).unwrap();
        std::fs::rename(&path, suffixed(&path, 1)).unwrap();
        log.write_all(&[b'y'; 60]).unwrap();
        assert_eq!(std::fs::read(suffixed(&path, 1)).unwrap(), [b'x'; 60]);
        assert_eq!(std::fs::read(&path).unwrap(), [b'y'; 60]);
        for _ in 0..5 {
            log.write_all(&[b'y'; 60]).unwrap();
            let (links, at_path, _) = held(&log);
            assert!(links > 0 && at_path, "the file being written was unlinked");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let mut log = Rotating::open(&path, 100, 0).unwrap();
        for _ in 0..5 {
            log.write_all(&[b'z'; 60]).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(std::fs::read(&path).unwrap(), [b'z'; 60]);
    }

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
