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
//! Layering: a leaf of [`crate::collect`] over the file system.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use huitong_config::SourceConfig;
use tracing::{info, warn};

use crate::dataset::input::InputFormat;

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
                },
            ));
        }
    }
    Ok(best.map(|(_, p)| p))
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
    let moved = std::fs::create_dir_all(&to).and_then(|()| std::fs::rename(&file.path, &target));
    if let Err(e) = moved {
        warn!(code = %src.code, file = %file.path.display(), error = %e, "cannot move a collected file out of the folder; it will be taken again");
        return Some(format!(
            "cannot move {} into {}: {e}; move it yourself, or it is taken again",
            file.path.display(),
            to.display()
        ));
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
        if let Err(e) = std::fs::write(&note, text) {
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
    let Ok(entries) = std::fs::read_dir(done) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .take(MAX_ENTRIES)
        .filter_map(Result::ok)
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
            code: "301001/000001".into(),
            kind: huitong_config::SourceKind::Folder,
            url: String::new(),
            table: None,
            query: None,
            columns: Default::default(),
            schedule: None,
            path: Some(dir.display().to_string()),
            settle_secs: Some(settle),
            key: Vec::new(),
            records: None,
            paging: None,
            watermark: None,
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
}
