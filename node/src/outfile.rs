//! Files this node writes for a person — a pull's output, an export, a reject report — are
//! never written through a symbolic link and only when their file system has room.
//!
//! - [`check_target`]: the final path must not be a symbolic link, a directory or a special
//!   file (outputs are renamed into place; a link there is refused, not replaced).
//! - [`create_new`]: a new file (a reject report) is created with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW`, so the kernel refuses any file or link already at its name (no write can follow
//!   a link planted there). Partial outputs are [`crate::partial`]'s, opened the same way.
//! - [`ensure_space`]: before writing, the bytes needed are compared with what `statvfs(2)` says
//!   an unprivileged writer may still use (`f_bavail × f_frsize`); needs on one file system are
//!   added up. The error names both numbers.
//!
//! `statvfs` comes from `rustix` (safe bindings to the system calls; already built for
//! `tempfile` and `polling`), not hand-written `libc` calls.
//!
//! Layering: a leaf (no other module of the node).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    #[error("not enough free space to write {path}: {} needed, {} available on its file system; free some space or write elsewhere", show(*.needed), show(*.available))]
    NoSpace {
        /// The file (or directory) to be written.
        path: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
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
    let s = rustix::fs::statvfs(dir).map_err(|e| io_err(dir)(e.into()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Bytes already allocated to a file (a resumed output), 0 when there is none.
pub fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.blocks().saturating_mul(512).min(m.len()))
}

/// The directory a file at `path` goes into.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks that each file system has room for what will be written on it: `needs` are
/// `(file or directory to be written, bytes)`; needs on the same file system are added up.
pub fn ensure_space(needs: &[(&Path, u64)]) -> Result<(), OutError> {
    // (device, a directory on it, the first path named, bytes).
    let mut by_fs: Vec<(u64, &Path, &Path, u64)> = Vec::new();
    for &(path, bytes) in needs {
        let dir = if path.is_dir() { path } else { dir_of(path) };
        let dev = std::fs::metadata(dir).map_err(io_err(dir))?.dev();
        match by_fs.iter_mut().find(|(d, ..)| *d == dev) {
            Some(e) => e.3 = e.3.saturating_add(bytes),
            None => by_fs.push((dev, dir, path, bytes)),
        }
    }
    for (_, dir, path, needed) in by_fs {
        let available = available(dir)?;
        if needed > available {
            return Err(OutError::NoSpace {
                path: path.to_path_buf(),
                needed,
                available,
            });
        }
    }
    Ok(())
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
    fn space_is_checked_per_file_system_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        assert!(free > 0);
        let out = dir.path().join("out.csv");
        ensure_space(&[(out.as_path(), 1)]).unwrap();
        // Two needs on one file system are added up (each fits alone; together they exceed
        // what is free by a quarter, a margin other writers on the machine will not close).
        let part = free / 2 + free / 8;
        ensure_space(&[(out.as_path(), part)]).unwrap();
        match ensure_space(&[(out.as_path(), part), (dir.path(), part)]) {
            Err(OutError::NoSpace {
                needed, available, ..
            }) => {
                assert_eq!(needed, 2 * part);
                assert!(available < needed);
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
        let e = ensure_space(&[(out.as_path(), u64::MAX)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("18446744073709551615 bytes") && e.contains("available"),
            "{e}"
        );
    }
}
