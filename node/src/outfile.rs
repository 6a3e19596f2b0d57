//! Files this node writes for a person — a pull's output, an export, a reject report — are
//! never written through a symbolic link and only when their file system has room.
//!
//! - [`check_target`]: the final path must not be a symbolic link, a directory or a special
//!   file (outputs are renamed into place; a link there is refused, not replaced).
//! - [`create_new`]: a new file (a reject report) is created with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW`, so the kernel refuses any file or link already at its name (no write can follow
//!   a link planted there). Partial outputs are [`crate::partial`]'s, opened the same way.
//! - [`Space`]: before writing, a job reserves the bytes it needs in an in-process ledger per
//!   file system; a need is granted only if it fits in what `statvfs(2)` says an unprivileged
//!   writer may still use (`f_bavail × f_frsize`), less what other running jobs reserved and
//!   have not written yet, less a floor kept free on the node directory's file system for the
//!   store, the chunk store and the audit log (see [`space`]). The error names every number.
//! - [`preallocate`]: a file pull's partial output is allocated whole with `fallocate(2)`
//!   (`posix_fallocate` semantics) before anything is written, so its space is held on disk
//!   and not only promised; where the file system cannot (`EOPNOTSUPP`), the ledger's
//!   reservation holds it instead.
//!
//! `statvfs` and `fallocate` come from `rustix` (safe bindings to the system calls; already
//! built for `tempfile` and `polling`), not hand-written `libc` calls.
//!
//! Layering: a leaf (no other module of the node).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub mod space;

pub use space::{Floor, Reservation, Space};

/// Why an output file was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutError {
    /// The path is a symbolic link.
    #[error("{path} is a symbolic link; huitong does not write through links: give the real path, or remove the link")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path is a directory or a special file.
    #[error("{path} is a {kind}, not a regular file: give a file path")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The directory lets other users replace files in it.
    #[error("{dir} can be written by other users (mode {mode:o}) and is not sticky, so any of them could replace the file while it is written; write into a directory only you (or the node) can write, or make it sticky with `chmod +t {dir}` (the shipped exchange directory is mode 3770)")]
    SharedDir {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not enough free space.
    #[error("{}", no_space(path, *.needed, *.available, *.reserved, *.jobs, *.floor))]
    NoSpace {
        /// The file (or directory) to be written.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes `statvfs` says may still be written on its file system.
        available: u64,
        /// Of those, bytes reserved by other running jobs and not written yet.
        reserved: u64,
        /// How many other running jobs hold them.
        jobs: usize,
        /// Of those, bytes kept free for the node's own files (0 off the node's file system).
        floor: u64,
    },
    /// A file system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutError + '_ {
    move |source| OutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The message of [`OutError::NoSpace`]: what was needed, what is free, what of it other
/// running jobs and the floor take, and what to do.
fn no_space(
    path: &Path,
    needed: u64,
    available: u64,
    reserved: u64,
    jobs: usize,
    floor: u64,
) -> String {
    let mut m = format!(
        "not enough free space to write {}: {} needed, {} free on its file system",
        path.display(),
        show(needed),
        show(available)
    );
    let mut parts = Vec::new();
    if reserved > 0 {
        let s = if jobs == 1 { "" } else { "s" };
        parts.push(format!(
            "{} reserved by {jobs} other running job{s} (pulls, exports, publishes) and not yet written",
            show(reserved)
        ));
    }
    if floor > 0 {
        parts.push(format!(
            "{} kept free for the node's database, chunk store and audit log (`storage.keep_free_mib`)",
            show(floor)
        ));
    }
    if !parts.is_empty() {
        m.push_str(", less ");
        m.push_str(&parts.join(" and "));
    }
    m.push_str("; ");
    if reserved > 0 {
        m.push_str("wait for the running jobs to end (`huitong pulls`), ");
    }
    m.push_str("free some space (`huitong gc` removes chunks no kept version needs) or write to another file system");
    m
}

/// `1234567890 bytes (1.1 GiB)`.
fn show(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS[unit])
}

fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "named pipe"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Checks what is at `path` now: nothing, or a regular file (to be replaced). A symbolic link,
/// a directory or a special file is refused, and so is a directory other users can write to
/// without the sticky bit (they could rename their own file over the output or its partial
/// file while it is written).
pub fn check_target(path: &Path) -> Result<(), OutError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
        Ok(m) if m.file_type().is_symlink() => Err(OutError::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(m) if !m.is_file() => Err(OutError::NotAFile {
            path: path.to_path_buf(),
            kind: kind(m.file_type()),
        }),
        Ok(_) => Ok(()),
    }
}

/// Refuses a directory that users other than its owner may write to (group or other write
/// bit) unless it is sticky (then only a file's owner may rename or remove it).
fn check_dir(dir: &Path) -> Result<(), OutError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(io_err(dir))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(OutError::SharedDir {
            dir: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Creates a new file for reading and writing; fails if anything (a file, a link) is at `path`.
pub fn create_new(path: &Path) -> Result<File, OutError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| refusal(path, e))
}

/// Turns `ELOOP` (a link where `O_NOFOLLOW` forbids one) into [`OutError::Symlink`].
fn refusal(path: &Path, e: io::Error) -> OutError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return OutError::Symlink {
            path: path.to_path_buf(),
        };
    }
    if e.kind() == io::ErrorKind::AlreadyExists {
        if let Err(refused) = check_target(path) {
            return refused;
        }
    }
    io_err(path)(e)
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
pub fn available(dir: &Path) -> Result<u64, OutError> {
    Ok(space::statvfs(dir)?.available)
}

/// Allocates `len` bytes of `file` from its start (`fallocate(2)` with no flags: what
/// `posix_fallocate` does, without glibc's block-by-block emulation), extending it to `len`
/// when shorter; bytes already there are kept. Returns `false` when the file system does not
/// support it (`EOPNOTSUPP`, e.g. some network and copy-on-write file systems): the caller
/// then relies on its reservation alone. `ENOSPC` and other failures are errors.
pub fn preallocate(file: &File, len: u64) -> io::Result<bool> {
    use rustix::io::Errno;
    if len == 0 {
        return Ok(true);
    }
    loop {
        return match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(false),
            Err(e) => Err(e.into()),
        };
    }
}

/// Bytes already allocated to a file (a resumed output), 0 when there is none.
pub fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.blocks().saturating_mul(512).min(m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_at_the_target_and_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(matches!(check_target(&link), Err(OutError::Symlink { .. })));
        assert!(matches!(create_new(&link), Err(OutError::Symlink { .. })));
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            create_new(&dangling),
            Err(OutError::Symlink { .. })
        ));
        assert!(
            !dir.path().join("nowhere").exists(),
            "no file created through the link"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(matches!(
            check_target(dir.path()),
            Err(OutError::NotAFile {
                kind: "directory",
                ..
            })
        ));
        let plain = dir.path().join("plain");
        create_new(&plain).unwrap();
        check_target(&plain).unwrap();
        // Review s7, M4: a directory others may write to, not sticky, is refused; sticky is not.
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let e = check_target(&shared.join("out.csv")).unwrap_err();
        assert!(matches!(e, OutError::SharedDir { mode: 0o2770, .. }), "{e}");
        assert!(e.to_string().contains("chmod +t"), "{e}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o3770)).unwrap();
        check_target(&shared.join("out.csv")).unwrap();
        assert!(create_new(&plain).is_err(), "never over an existing file");
    }

    #[test]
    fn preallocation_holds_the_space_and_keeps_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = create_new(&path).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"kept", 1 << 20).unwrap();
        let len = 8u64 << 20;
        let before = allocated(&path);
        if preallocate(&file, len).unwrap() {
            assert_eq!(file.metadata().unwrap().len(), len);
            assert_eq!(allocated(&path), len, "every block allocated, not sparse");
            assert!(before < len);
        }
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(&buf, b"kept");
        assert!(preallocate(&file, 0).unwrap());
    }
}
