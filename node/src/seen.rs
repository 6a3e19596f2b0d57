//! Whether the node sees the same file as the `huitong` command that named it.
//!
//! Pulls and publishes run in the node process, on paths an operator typed into the CLI. Under
//! the shipped systemd unit, or in a container, the node can have its own view of the file
//! system (`PrivateTmp`, `ProtectHome`, other mounts): `/tmp/out.csv` would then be written to
//! the node's private `/tmp` and vanish, and the pull would still report success. So the CLI
//! sends the identity (device and inode) of what it sees — the output's directory, the input
//! file — and the node refuses when it sees something else there.
//!
//! Layering: a leaf.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A file's or directory's identity as one process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

impl FileId {
    /// The identity of what `path` names for this process (following symlinks).
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Checks that `path` names for this node what the CLI saw as `seen` (nothing to check when
/// the caller sent no identity, e.g. another API client); the error says what to do.
pub fn same_as_cli(path: &Path, seen: Option<FileId>) -> Result<(), String> {
    let Some(seen) = seen else {
        return Ok(());
    };
    match FileId::of(path) {
        Ok(here) if here == seen => Ok(()),
        Ok(_) => Err(format!(
            "the node sees another {} at {} than this shell does: it runs with its own view of \
             the file system (systemd PrivateTmp or ProtectHome, a container). Use a directory \
             the node shares with you, such as /srv/huitong-exchange (operator guide: 部署 / \
             Deployment)",
            if path.is_dir() { "directory" } else { "file" },
            path.display()
        )),
        Err(e) => Err(format!(
            "the node cannot see {} ({e}), which this shell can: it runs with its own view of \
             the file system (systemd PrivateTmp or ProtectHome, a container). Use a directory \
             the node shares with you, such as /srv/huitong-exchange (operator guide: 部署 / \
             Deployment)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_directory_passes_another_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let id = FileId::of(a.path()).unwrap();
        assert_eq!(same_as_cli(a.path(), Some(id)), Ok(()));
        assert_eq!(same_as_cli(b.path(), None), Ok(()));
        let err = same_as_cli(b.path(), Some(id)).unwrap_err();
        assert!(
            err.contains("another directory") && err.contains("PrivateTmp"),
            "{err}"
        );
        let gone = a.path().join("missing");
        let err = same_as_cli(&gone, Some(id)).unwrap_err();
        assert!(err.contains("cannot see"), "{err}");
    }
}
