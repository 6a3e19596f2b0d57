//! Durable file replacement, the one way files are put in place: write a temporary file beside
//! the target, fsync it, rename it over the target, then fsync the directory — so after a crash
//! a reader finds the old file or the whole new one, never a part.
//!
//! Layering: a leaf (no other module of the node).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Makes the written temporary `file` (at `tmp`) durable and renames it to `dest`, then syncs
/// `dest`'s directory.
pub fn finish(file: &File, tmp: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(tmp, dest)?;
    sync_parent(dest)
}

/// Writes `bytes` to `dest` through a temporary file beside it (`dest` with `.tmp` added),
/// fsynced before the rename. The directory is not synced: a caller that writes several files
/// syncs their directories once ([`sync_dir`]); one that writes one file calls [`sync_parent`].
pub fn replace(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = dest.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = std::path::PathBuf::from(name);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, dest)
}

/// Fsyncs a directory (so a rename or a new file in it survives a crash).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fsyncs the directory holding `path` (the current directory for a bare file name).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}
