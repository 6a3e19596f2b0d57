//! One `huitong` process at a time in a node directory: the running node, `huitong restore`
//! and an offline `huitong backup` each hold `<dir>/node.lock` (an advisory `flock`) for as
//! long as they use the directory.
//!
//! RocksDB's own lock covers only `db/` while it is open. A restore moves `db/` aside and copies
//! the backup's in for minutes; a node started meanwhile (a unit restarting it) would create a
//! fresh store in the gap and append from seq 1 — a fork of its own feed — or open a half-copied
//! one. With this lock it cannot start until the restore is done (review 10, L4). The lock dies
//! with its process, so a killed restore leaves nothing to clean up; the file names the holder.
//!
//! Layering: a leaf (the file system only).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file in a node directory.
pub const LOCK_FILE: &str = "node.lock";

/// Why the directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirLockError {
    /// Another process holds it.
    #[error("another huitong process is using {dir} ({holder}); wait until it is done (a restore or backup), or stop the node first, then try again")]
    Held {
        /// The node directory.
        dir: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The held lock of a node directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` for `what` this process does there (`run`, `restore`, `backup`), or says
    /// who holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DirLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DirLockError::Held {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "huitong {what}, pid {}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = DirLock::acquire(dir.path(), "restore").expect("locks");
        let e = DirLock::acquire(dir.path(), "run").expect_err("held");
        let text = e.to_string();
        assert!(
            text.contains("huitong restore, pid") && text.contains("wait until it is done"),
            "{text}"
        );
        drop(held);
        DirLock::acquire(dir.path(), "run").expect("free again");
    }
}
