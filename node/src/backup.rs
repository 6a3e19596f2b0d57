//! Backing up and restoring a node directory (`huitong backup`, `huitong restore`).
//!
//! A backup is a directory holding:
//! - `db/`: a RocksDB checkpoint of the store — consistent at one instant, taken from the
//!   running node (through its admin API, into `backup-staging/<time>/db` in the node
//!   directory, where it costs hard links only) or from a stopped node's store — carrying the
//!   catch-up mark (`store/backup.rs`), so that a node restored from it catches up on its own
//!   feed from its peers before it appends (see [`crate::catchup`]);
//! - `chunks/`: the chunk store's files (content-addressed, written once: a copy made while the
//!   node runs is consistent file by file; `chunks/tmp/` is left out); its small chunks are rows
//!   of the store, in `db/`'s checkpoint;
//! - `audit/`: the audit log (the hub's log, a member's mirror): its `checkpoint` and the tiles
//!   and entry bundles that checkpoint needs. A running node's log cannot be copied file by
//!   file: each append prunes the partial tiles the previous checkpoint needed, so a copy could
//!   hold a checkpoint without its tiles. The running node therefore stages it too, after the
//!   store's checkpoint and while it holds the log ([`crate::audit_log::tiles::TileLog::snapshot`]:
//!   hard links of exactly what one checkpoint needs, into `backup-staging/<time>/audit`); a
//!   stopped node's `audit/` is copied as it is. Either way the copy is checked against its
//!   checkpoint ([`check_audit`]) before the backup is declared complete;
//! - `huitong.toml`, `node.key` (mode 0600: the backup is as secret as the node), and
//!   `charter.cbor` when present;
//! - [`INFO_FILE`] (`backup.json`, [`BackupInfo`]), written last: a backup without it is
//!   incomplete and is refused by `restore`.
//!
//! Layering: above the store (its checkpoint and catch-up mark), the audit log's files and
//! `durable`; the admin API stages a live node's checkpoint and audit log with it, and the CLI
//! copies.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use huitong_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::audit_log::tiles::{self, DiskReport, LogError};
use crate::store::{CatchUpMark, Store, StoreError, CATCH_UP_MARK_VERSION};

/// The file that marks a complete backup and describes it.
pub const INFO_FILE: &str = "backup.json";
/// Where a running node stages its store checkpoints, in its directory.
pub const STAGING_DIR: &str = "backup-staging";
/// The store's checkpoint in a staging directory (and in a backup).
pub const STAGED_DB: &str = "db";
/// The audit log's copy in a staging directory (and in a backup).
pub const STAGED_AUDIT: &str = "audit";
/// The layout version of a backup ([`BackupInfo::format`]).
pub const BACKUP_FORMAT: u32 = 1;
/// Staged checkpoints older than this are removed when a new one is staged (their CLI died).
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Room left free beyond what a copy needs.
const SPACE_MARGIN: u64 = 64 * 1024 * 1024;

/// The files of a node directory a backup holds besides `db/`, `chunks/` and `audit/`.
pub const NODE_FILES: [&str; 5] = [
    "huitong.toml",
    "node.key",
    "charter.cbor",
    crate::secrets::SECRETS_FILE,
    crate::service::clients::FILE,
];

/// What `backup.json` says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Backup layout version ([`BACKUP_FORMAT`]).
    pub format: u32,
    /// The node's key (hex).
    pub node_key: String,
    /// The organisation.
    pub name: String,
    /// Its USCC.
    pub org_code: String,
    /// The node's own feed head in the backup.
    pub own_seq: u64,
    /// When the store was checkpointed (ms since the epoch).
    pub created_at_ms: u64,
    /// The huitong version that wrote it.
    pub huitong: String,
    /// Bytes copied.
    pub bytes: u64,
    /// Files copied.
    pub files: u64,
    /// Entries of the audit log copied, checked against its checkpoint (`None`: the node held
    /// no audit log).
    #[serde(default)]
    pub audit_size: Option<u64>,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The copy of the audit log does not check against its checkpoint.
    #[error("the audit log copied into {dir} does not check against its checkpoint: {source}; this backup would not restore a working log. Run the backup again; if it fails the same way, run `huitong audit verify` on the node")]
    Audit {
        /// The copy.
        dir: PathBuf,
        /// What is wrong with it.
        source: LogError,
    },
    /// Not enough free space.
    #[error("not enough free space in {dir}: the copy needs {need} bytes (plus a margin of 64 MiB), {free} are free; free some space or choose a directory on another file system")]
    NoSpace {
        /// The directory.
        dir: PathBuf,
        /// Bytes needed.
        need: u64,
        /// Bytes free.
        free: u64,
    },
}

use crate::clock::now_ms;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a checkpoint of `store` to `dest` (which must not exist) and leaves the catch-up mark
/// in it; returns this node's own feed head in the copy.
pub fn checkpoint(store: &Store, own: &NodeId, dest: &Path) -> Result<u64, BackupError> {
    store.checkpoint(dest)?;
    let copy = Store::open(dest)?;
    let own_seq = copy.head(own)?.seq;
    copy.set_catch_up_mark(
        &copy.writer(),
        &CatchUpMark {
            version: CATCH_UP_MARK_VERSION,
            own_seq,
            backed_up_at_ms: now_ms(),
        },
    )?;
    Ok(own_seq)
}

/// Stages a checkpoint of a running node's store in `<node dir>/backup-staging/<time>/db`, for
/// the CLI to copy and remove (the caller adds the audit log's copy beside it, in
/// [`STAGED_AUDIT`]); removes stagings left by a CLI that died. Returns the staging directory
/// and the own feed head in the checkpoint.
pub fn stage(store: &Store, own: &NodeId, node_dir: &Path) -> Result<(PathBuf, u64), BackupError> {
    let root = node_dir.join(STAGING_DIR);
    fs::create_dir_all(&root).map_err(io_at(&root))?;
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_STAGING);
            if stale {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dest = root.join(format!("{}-{:08x}", now_ms(), rand::random::<u32>()));
    fs::create_dir(&dest).map_err(io_at(&dest))?;
    match checkpoint(store, own, &dest.join(STAGED_DB)) {
        Ok(own_seq) => Ok((dest, own_seq)),
        Err(e) => {
            let _ = fs::remove_dir_all(&dest);
            Err(e)
        }
    }
}

/// Checks the copy of an audit log in `dir` against its checkpoint, signed by `hub` for
/// `origin` ([`tiles::verify_dir`]): every entry and tile it needs is there and hashes right.
pub fn check_audit(dir: &Path, origin: &str, hub: &NodeId) -> Result<DiskReport, BackupError> {
    tiles::verify_dir(dir, origin, hub).map_err(|source| BackupError::Audit {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Bytes and files under `path` (a file or a directory; symlinks are not followed), leaving out
/// `chunks/tmp`-style directories named in `skip`.
pub fn size_of(path: &Path, skip: &[&str]) -> io::Result<(u64, u64)> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    if meta.is_file() {
        return Ok((meta.len(), 1));
    }
    if !meta.is_dir() {
        return Ok((0, 0));
    }
    let mut total = (0, 0);
    for e in fs::read_dir(path)? {
        let e = e?;
        if skip.iter().any(|s| e.file_name() == *s) {
            continue;
        }
        let (b, f) = size_of(&e.path(), &[])?;
        total.0 += b;
        total.1 += f;
    }
    Ok(total)
}

/// Free bytes for an unprivileged user on the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) fills the struct we own from a NUL-terminated path; no other memory.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Fails unless `dir`'s file system has room for `need` bytes and a margin.
pub fn check_space(dir: &Path, need: u64) -> Result<(), BackupError> {
    let free = free_space(dir).map_err(io_at(dir))?;
    if free < need.saturating_add(SPACE_MARGIN) {
        return Err(BackupError::NoSpace {
            dir: dir.to_path_buf(),
            need,
            free,
        });
    }
    Ok(())
}

/// Copies files, counting bytes for a progress display.
pub struct Copier<'a> {
    /// Called with the bytes copied so far.
    progress: &'a dyn Fn(u64),
    /// Bytes copied so far.
    pub bytes: u64,
    /// Files copied so far.
    pub files: u64,
}

impl<'a> Copier<'a> {
    /// A copier that reports the bytes copied so far to `progress`.
    pub fn new(progress: &'a dyn Fn(u64)) -> Self {
        Self {
            progress,
            bytes: 0,
            files: 0,
        }
    }

    /// Copies `from` to `to` (a new file), with `from`'s permission bits. With `keep_existing`
    /// (chunks, named by their content) a file already at `to` is kept if it still holds its
    /// name's content, and replaced if not (damage is what a restore is often for). A source
    /// that vanished meanwhile (a chunk removed by the node) is skipped.
    pub fn file(&mut self, from: &Path, to: &Path, keep_existing: bool) -> Result<(), BackupError> {
        if keep_existing && to.exists() {
            if holds_its_name(to) {
                return Ok(());
            }
            tracing::warn!(chunk = %to.display(), "a chunk held here does not hold its content; the backup's copy replaces it");
            fs::remove_file(to).map_err(io_at(to))?;
        }
        let mut src = match fs::File::open(from) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(from)(e)),
        };
        let mode = src.metadata().map_err(io_at(from))?.permissions().mode() & 0o777;
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(to)
            .map_err(io_at(to))?;
        let n = io::copy(&mut src, &mut dst).map_err(io_at(to))?;
        dst.sync_all().map_err(io_at(to))?;
        self.bytes += n;
        self.files += 1;
        (self.progress)(self.bytes);
        Ok(())
    }

    /// Copies an audit log that does not change meanwhile (a stopped node's, a backup's, or a
    /// running node's staged copy) from `from` into `to`, its `checkpoint` first.
    pub fn audit(&mut self, from: &Path, to: &Path) -> Result<(), BackupError> {
        self.tree(from, to, &[], &[tiles::CHECKPOINT_FILE], false)
    }

    /// Copies a chunk store (not its `tmp/`) from `from` into `to`; chunks already in `to` are
    /// kept when `keep_existing` (the same name is the same content).
    pub fn chunks(
        &mut self,
        from: &Path,
        to: &Path,
        keep_existing: bool,
    ) -> Result<(), BackupError> {
        self.tree(from, to, &["tmp"], &[], keep_existing)
    }

    /// Copies the tree `from` into `to` (created), leaving out entries named in `skip` at its
    /// top and symlinks anywhere; `first` names files at its top copied before the rest.
    pub fn tree(
        &mut self,
        from: &Path,
        to: &Path,
        skip: &[&str],
        first: &[&str],
        keep_existing: bool,
    ) -> Result<(), BackupError> {
        if !from.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(to).map_err(io_at(to))?;
        for name in first {
            let src = from.join(name);
            if src.is_file() {
                self.file(&src, &to.join(name), keep_existing)?;
            }
        }
        for e in fs::read_dir(from).map_err(io_at(from))? {
            let e = e.map_err(io_at(from))?;
            let name = e.file_name();
            if skip.iter().any(|s| name == *s) || first.iter().any(|s| name == *s) {
                continue;
            }
            let kind = e.file_type().map_err(io_at(&e.path()))?;
            if kind.is_dir() {
                self.tree(&e.path(), &to.join(&name), &[], &[], keep_existing)?;
            } else if kind.is_file() {
                self.file(&e.path(), &to.join(&name), keep_existing)?;
            }
        }
        crate::durable::sync_dir(to).map_err(io_at(to))
    }
}

/// Whether the chunk file at `path` holds the bytes its name (their hash) says.
fn holds_its_name(path: &Path) -> bool {
    let Some(hash) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(huitong_protocol::dataset::ChunkHash::from_hex)
    else {
        return false;
    };
    fs::read(path).is_ok_and(|bytes| hash.verify(&bytes).is_ok())
}

/// Reads a backup's `backup.json`.
pub fn read_info(backup: &Path) -> Result<BackupInfo, String> {
    let path = backup.join(INFO_FILE);
    let bytes = fs::read(&path).map_err(|e| {
        format!(
            "{} is not a complete huitong backup ({INFO_FILE}: {e}); a backup interrupted before its end has no {INFO_FILE}",
            backup.display()
        )
    })?;
    let info: BackupInfo = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a huitong backup description: {e}", path.display()))?;
    if info.format > BACKUP_FORMAT {
        return Err(format!(
            "{}: backup format {} is newer than this huitong understands ({BACKUP_FORMAT}); restore it with a newer huitong",
            path.display(),
            info.format
        ));
    }
    Ok(info)
}

/// Writes `backup.json` (durably): the backup is complete.
pub fn write_info(backup: &Path, info: &BackupInfo) -> Result<(), BackupError> {
    let path = backup.join(INFO_FILE);
    let bytes = serde_json::to_vec_pretty(info).map_err(|e| io_at(&path)(io::Error::other(e)))?;
    crate::durable::replace(&path, &bytes).map_err(io_at(&path))?;
    crate::durable::sync_dir(backup).map_err(io_at(backup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_trees_checkpoint_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("audit");
        fs::create_dir_all(src.join("tile/0")).unwrap();
        fs::write(src.join("checkpoint"), b"cp").unwrap();
        fs::write(src.join("tile/0/000"), b"tile").unwrap();
        fs::create_dir_all(dir.path().join("chunks/tmp")).unwrap();
        fs::write(dir.path().join("chunks/tmp/x"), b"partial").unwrap();
        assert_eq!(
            size_of(&dir.path().join("chunks"), &["tmp"]).unwrap(),
            (0, 0)
        );
        assert_eq!(size_of(&src, &[]).unwrap(), (6, 2));
        let seen = std::cell::Cell::new(0);
        let progress = |n| seen.set(n);
        let mut c = Copier::new(&progress);
        let out = dir.path().join("backup/audit");
        c.tree(&src, &out, &[], &["checkpoint"], false).unwrap();
        c.tree(
            &dir.path().join("chunks"),
            &dir.path().join("backup/chunks"),
            &["tmp"],
            &[],
            false,
        )
        .unwrap();
        assert_eq!((c.bytes, c.files, seen.get()), (6, 2, 6));
        assert_eq!(fs::read(out.join("tile/0/000")).unwrap(), b"tile");
        assert!(!dir.path().join("backup/chunks/tmp").exists());
        assert!(
            c.tree(&src, &out, &[], &["checkpoint"], false).is_err(),
            "never overwrites"
        );
        c.tree(&src, &out, &[], &["checkpoint"], true).unwrap();
        assert!(check_space(dir.path(), u64::MAX / 2).is_err());
        assert!(check_space(dir.path(), 1).is_ok());
    }
}
