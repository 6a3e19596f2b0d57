//! A folder source: a directory that receives CSV, JSONL or XLSX files (also Parquet), each a
//! whole new state of the resource's table. A run takes the oldest complete file, publishes it
//! as `dataset publish` would, and moves it out of the way: into `done/` when it was published
//! (or was the latest version already), into `failed/` with a `NAME.error.txt` saying why when it
//! was refused — so a broken file is reported once, never retried forever, and can be fixed
//! and dropped in again.
//!
//! A file is complete when a `NAME.done` file stands beside it, or when it has not changed for
//! the source's `settle_secs`. Hidden files (`.name`, the usual way to write then rename), Office
//! lock files (`~$name`), partial downloads (`.part`, `.tmp`, `.crdownload` …), files of other
//! formats, directories and symbolic links are left alone. `done/` keeps the newest
//! [`KEEP_DONE`] files.
//!
//! Whoever drops files may be hostile to the node: a file is opened without following links and
//! must be the very file that was picked (device and inode), a file that changes while it is
//! read fails the run, a new file dropped under the same name meanwhile is left for the next
//! run, and `done/` and `failed/` must be real directories (a link there is refused, never
//! followed), their notes created new without following links.
//!
//! Layering: a leaf of [`crate::collect`] over the file system.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use huitong_config::SourceConfig;
use tracing::{info, warn};

use crate::dataset::input::{InputError, InputFormat, Row};

/// Files kept in `done/` (the oldest go first).
pub const KEEP_DONE: usize = 100;
/// Where published files go.
pub const DONE_DIR: &str = "done";
/// Where refused files go, each with its reason.
pub const FAILED_DIR: &str = "failed";
/// The suffix of the file that says a file is complete.
const DONE_MARK: &str = ".done";
/// Most directory entries looked at in one pass (a folder is not a file store).
const MAX_ENTRIES: usize = 100_000;

/// A file to take.
#[derive(Clone, Debug)]
pub struct Picked {
    /// The file.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its device and inode: the file, whatever its name becomes.
    id: (u64, u64),
    /// When it was last changed.
    modified: SystemTime,
}

/// Why the folder cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the folder {path}: {why}; create it and let the node's user read and write it"
)]
pub struct FolderError {
    /// The folder.
    pub path: String,
    /// The system's reason.
    pub why: String,
}

/// Whether `name` is a file still being written or not a data file at all.
fn ignored(name: &str) -> bool {
    const PARTIAL: [&str; 8] = [
        ".part",
        ".partial",
        ".tmp",
        ".temp",
        ".crdownload",
        ".filepart",
        ".swp",
        DONE_MARK,
    ];
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with('~')
        || PARTIAL.iter().any(|s| lower.ends_with(s))
        || InputFormat::of(Path::new(name)).is_none()
}

/// The oldest complete file in the source's folder (by modification time, then name), if any.
pub fn pick(src: &SourceConfig, now: SystemTime) -> Result<Option<Picked>, FolderError> {
    let dir = PathBuf::from(src.path.clone().unwrap_or_default());
    let err = |e: std::io::Error| FolderError {
        path: dir.display().to_string(),
        why: e.to_string(),
    };
    let settle = Duration::from_secs(src.settle_secs());
    let mut best: Option<(SystemTime, Picked)> = None;
    for entry in std::fs::read_dir(&dir).map_err(err)?.take(MAX_ENTRIES) {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if ignored(&name) {
            continue;
        }
        // Not followed: a link could lead anywhere the node's user can read.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(modified) = meta.modified() else {
            continue;
        };
        let marked = dir.join(format!("{name}{DONE_MARK}")).is_file();
        let settled = now.duration_since(modified).is_ok_and(|age| age >= settle);
        if !marked && !settled {
            continue;
        }
        let older = best
            .as_ref()
            .is_none_or(|(t, b)| (modified, &name) < (*t, &b.name));
        if older {
            best = Some((
                modified,
                Picked {
                    path: entry.path(),
                    name,
                    bytes: meta.len(),
                    id: (meta.dev(), meta.ino()),
                    modified,
                },
            ));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Opens the picked file: not through a link, and only if it is still the file picked.
pub fn open(file: &Picked) -> Result<File, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO put in its place must not block the run.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&file.path)
        .map_err(|e| format!("cannot open {}: {e}", file.path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", file.path.display()))?;
    if !meta.is_file() || (meta.dev(), meta.ino()) != file.id {
        return Err(format!(
            "{} was replaced after it was picked; it is taken at the next look",
            file.path.display()
        ));
    }
    Ok(f)
}

/// The rows of a picked file, failing at their end when the file changed while it was read
/// (it was still being written: the rows may be cut short).
pub struct Steady<I> {
    rows: I,
    file: File,
    picked: Picked,
    ended: bool,
}

impl<I> Steady<I> {
    /// `rows` read from `file`, the handle of `picked`.
    pub fn new(rows: I, file: File, picked: Picked) -> Self {
        Self {
            rows,
            file,
            picked,
            ended: false,
        }
    }
}

impl<I: Iterator<Item = Result<Row, InputError>>> Iterator for Steady<I> {
    type Item = Result<Row, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.rows.next() {
            Some(row) => Some(row),
            None => {
                self.ended = true;
                let same = self.file.metadata().is_ok_and(|m| {
                    m.len() == self.picked.bytes && m.modified().ok() == Some(self.picked.modified)
                });
                (!same).then(|| {
                    Err(InputError {
                        path: self.picked.path.display().to_string(),
                        message: "the file changed while it was read: it was still being written. Write it under a hidden name (.name) and rename it when complete, or put a NAME.done file beside it when it is".into(),
                    })
                })
            }
        }
    }
}

/// `dir`, a real directory (created if missing; a link or a file there is refused).
fn real_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a directory (a link or a file is in the way); remove it",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Moves a taken file out of the folder: into `done/`, or into `failed/` with `error` beside
/// it. `stamp` (the run's start, ms) keeps names apart. A move that fails is logged: the file
/// would be taken again, so the run's record says so too (the returned text).
pub fn put_away(
    src: &SourceConfig,
    file: &Picked,
    stamp: u64,
    error: Option<&str>,
) -> Option<String> {
    let dir = PathBuf::from(src.path.clone().unwrap_or_default());
    let to = dir.join(if error.is_some() {
        FAILED_DIR
    } else {
        DONE_DIR
    });
    let target = to.join(format!("{stamp}-{}", file.name));
    // A new file dropped under the same name while this one was read stays for the next run.
    let same = std::fs::symlink_metadata(&file.path).is_ok_and(|m| (m.dev(), m.ino()) == file.id);
    if !same {
        info!(code = %src.code, file = %file.path.display(), "the collected file was replaced meanwhile; the new one is taken at the next look");
        return None;
    }
    let moved = real_dir(&to).and_then(|()| {
        std::fs::rename(&file.path, &target).map_err(|e| {
            format!(
                "cannot move {} into {}: {e}",
                file.path.display(),
                to.display()
            )
        })
    });
    if let Err(why) = moved {
        warn!(code = %src.code, file = %file.path.display(), error = %why, "cannot move a collected file out of the folder; it will be taken again");
        return Some(format!("{why}; fix it, or the file is taken again"));
    }
    let mark = dir.join(format!("{}{DONE_MARK}", file.name));
    if let Err(e) = std::fs::remove_file(&mark) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(file = %mark.display(), error = %e, "cannot remove a file's completion mark");
        }
    }
    if let Some(why) = error {
        let note = to.join(format!("{stamp}-{}.error.txt", file.name));
        let text = format!(
            "{why}\n\nFix the file and put it back into {} to collect it again.\n修正文件后放回 {} 即可重新采集。\n",
            dir.display(),
            dir.display()
        );
        // Never through a link planted at the name.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&note)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = written {
            warn!(file = %note.display(), error = %e, "cannot write why a file was refused");
        }
    } else {
        prune(&to);
    }
    info!(code = %src.code, file = %target.display(), failed = error.is_some(), "collected file put away");
    None
}

/// Keeps the newest [`KEEP_DONE`] files of `done/`.
fn prune(done: &Path) {
    // Through a handle of the directory itself: a link swapped in for `done/` meanwhile is
    // never followed, so no file elsewhere is removed.
    let Ok(handle) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(done)
    else {
        return;
    };
    let done = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let Ok(entries) = std::fs::read_dir(&done) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .take(MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter(|e| {
            // Only the files this node put there (`STAMP-name`).
            e.file_name()
                .to_str()
                .and_then(|n| n.split_once('-'))
                .is_some_and(|(stamp, _)| {
                    !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit())
                })
        })
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            (m.is_file()).then(|| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
        })
        .collect();
    if files.len() <= KEEP_DONE {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - KEEP_DONE] {
        if let Err(e) = std::fs::remove_file(path) {
            warn!(file = %path.display(), error = %e, "cannot remove an old collected file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, settle: u64) -> SourceConfig {
        SourceConfig {
            path: Some(dir.display().to_string()),
            settle_secs: Some(settle),
            ..SourceConfig::new("301001/000001", huitong_config::SourceKind::Folder, "")
        }
    }

    #[test]
    fn only_complete_data_files_are_taken_oldest_first_and_put_away() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), 60);
        let now = SystemTime::now();
        for name in [
            "b.csv",
            "a.jsonl",
            ".hidden.csv",
            "c.csv.part",
            "notes.txt",
            "~$d.xlsx",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.csv")).unwrap();
        // Nothing has settled yet.
        assert!(pick(&src, now).unwrap().is_none());
        // A completion mark makes a file complete at once.
        std::fs::write(dir.path().join("b.csv.done"), "").unwrap();
        assert_eq!(pick(&src, now).unwrap().unwrap().name, "b.csv");
        // Once settled, the oldest (then by name) comes first; temporary files never.
        let later = now + Duration::from_secs(120);
        let first = pick(&src, later).unwrap().unwrap();
        assert_eq!(first.name, "a.jsonl");
        assert!(put_away(&src, &first, 7, None).is_none());
        assert!(dir.path().join("done/7-a.jsonl").is_file());
        let next = pick(&src, later).unwrap().unwrap();
        assert_eq!(next.name, "b.csv");
        assert!(put_away(&src, &next, 8, Some("row 3: bad")).is_none());
        assert!(dir.path().join("failed/8-b.csv").is_file());
        let why = std::fs::read_to_string(dir.path().join("failed/8-b.csv.error.txt")).unwrap();
        assert!(why.starts_with("row 3: bad"), "{why}");
        assert!(
            !dir.path().join("b.csv.done").exists(),
            "the mark goes with it"
        );
        assert!(pick(&src, later).unwrap().is_none());
        let missing = source(&dir.path().join("nowhere"), 1);
        assert!(pick(&missing, later)
            .unwrap_err()
            .to_string()
            .contains("create it"));
    }

    #[test]
    fn links_and_swapped_files_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("precious"), "keep me").unwrap();
        let src = source(dir.path(), 0);
        let later = SystemTime::now() + Duration::from_secs(60);
        // `done` is a link to another directory: refused, nothing moved there or removed.
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join(DONE_DIR)).unwrap();
        std::fs::write(dir.path().join("a.csv"), "x").unwrap();
        let a = pick(&src, later).unwrap().unwrap();
        let why = put_away(&src, &a, 1, None).unwrap();
        assert!(why.contains("not a directory"), "{why}");
        assert!(dir.path().join("a.csv").exists());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 1);
        // The picked file swapped for a link before it is opened: refused.
        std::fs::remove_file(dir.path().join("a.csv")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("precious"), dir.path().join("a.csv"))
            .unwrap();
        assert!(open(&a).is_err());
        // A file that grows while it is read fails at its end.
        std::fs::remove_file(dir.path().join("a.csv")).unwrap();
        std::fs::write(dir.path().join("b.csv"), "x").unwrap();
        let b = pick(&src, later).unwrap().unwrap();
        let f = open(&b).unwrap();
        std::fs::write(dir.path().join("b.csv"), "xy").unwrap();
        let mut rows = Steady::new(std::iter::empty(), f, b);
        assert!(rows.next().is_some_and(|r| r.is_err()));
    }

    #[test]
    fn an_unreadable_folder_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let later = SystemTime::now();
        let missing = source(&dir.path().join("nowhere"), 1);
        assert!(pick(&missing, later)
            .unwrap_err()
            .to_string()
            .contains("create it"));
    }
}
