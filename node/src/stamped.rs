//! A small file kept parsed until it changes: a request costs one `stat`, not a read and a
//! parse. Used for the files operators edit while the node runs and requests read on every
//! call (`gateway-clients`, `secrets.toml`).
//!
//! A file's state is its device, inode, size, and modification and change times (ns). A file
//! written by rename gets a new inode; an edit in place changes the times. A file changed within
//! [`SETTLED_SECS`] is read again every time: a clock tick may hold two writes with the same
//! times (and a reused inode), so its stamp is not trusted yet (git's "racy" rule).
//!
//! Layering: a leaf.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Seconds after a change during which a file is always read again.
pub const SETTLED_SECS: i64 = 2;

type Stamp = (u64, u64, u64, i64, i64, i64, i64);

fn stamp(m: &Metadata) -> Stamp {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// The last file read through it: its path, state and parsed contents.
pub struct Stamped<T>(Mutex<Option<(PathBuf, Stamp, T)>>);

impl<T: Clone> Stamped<T> {
    /// Nothing read yet.
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// The contents of `path`, whose metadata is `m`: the kept ones when the file is unchanged
    /// (and settled), else what `load` reads now (kept for next time).
    pub fn get<E>(
        &self,
        path: &Path,
        m: &Metadata,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let s = stamp(m);
        let now = i64::try_from(crate::clock::now_ms() / 1000).unwrap_or(i64::MAX);
        let settled = now.saturating_sub(m.mtime().max(m.ctime())) >= SETTLED_SECS;
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, was, value)) = kept.as_ref() {
            if settled && at == path && *was == s {
                return Ok(value.clone());
            }
        }
        let value = load()?;
        *kept = Some((path.to_path_buf(), s, value.clone()));
        Ok(value)
    }
}

impl<T: Clone> Default for Stamped<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_an_unchanged_settled_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "1").unwrap();
        let cache: Stamped<String> = Stamped::new();
        let read = || std::fs::read_to_string(&p).map_err(|e| e.to_string());
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(cache.get(&p, &m, read).unwrap(), "1");
        // Replaced by rename (as the node writes its files): read again at once.
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "2").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(cache.get(&p, &m, read).unwrap(), "2");
        // Unchanged but not settled: read again (the loader's answer is used).
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            cache
                .get(&p, &m, || Ok::<_, String>("fresh".into()))
                .unwrap(),
            "fresh"
        );
    }
}
