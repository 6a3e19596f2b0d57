//! Partial outputs: the temporary file an output is written to beside its target before it is
//! renamed into place. Each writer gets its own file (`.NAME.huitong-partial.<16 hex>`), held
//! under an exclusive `flock` for as long as it is open. A new file is created under a claim
//! name (`.NAME.huitong-partial.<16 hex>.claim`, which no writer adopts or removes), locked
//! there, and only then renamed to its partial name, so no other writer ever finds it unlocked
//! under that name: two writers can never race on one partial file — not two pulls of one
//! node, nor pulls of two nodes on one host.
//!
//! A writer that stopped without finishing (a node killed with `kill -9`, a power loss) leaves
//! its partial file unlocked: the next writer of the same target either adopts it, renaming it
//! to its own name, to resume from the bytes in it ([`Partial::claim`] with `resume`), or removes
//! it. A partial file that another live process holds locked is left alone. A writer stopped
//! between creating and renaming its file leaves a claim file: one unlocked and not written for
//! [`CLAIM_LEFT_AFTER`] is removed by the next writer of the target (a live writer holds its
//! claim file unlocked for only the two system calls between `open` and `flock`).
//!
//! Only a partial file this process could have written itself is adopted or removed: a regular
//! file owned by the effective user, with one link and no group or other write permission
//! ([`trusted`]). Anything else at a partial name — planted in a shared output directory by
//! another user, who could keep it open and read or rewrite the verified output, or a second
//! link to some other file — is ignored (neither adopted nor deleted), and the writer starts a
//! file of its own. So that this writer's own files always qualify whatever the umask, partial
//! files are created without group or other write permission (mode `0644`, less the umask).
//!
//! Invariants: a [`Partial`] is locked by this process while it exists, and its file is locked
//! before it has a partial name; only the writer holding it renames or removes its file; a stale
//! partial (or claim file) is touched only under its lock, and only if it is [`trusted`].
//!
//! Layering: a leaf (no other module of the node); [`crate::durable`] makes the rename durable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long an unlocked claim file must have been left alone before a writer removes it.
pub const CLAIM_LEFT_AFTER: Duration = Duration::from_secs(600);

/// What every partial file of a target is named after: `.NAME.huitong-partial`.
pub fn prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.huitong-partial")
}

/// Whether `name` (a file name in the target's directory) is a partial file of the target with
/// this [`prefix`]: the prefix itself (as written by earlier versions) or the prefix, a dot and
/// 16 hex digits.
fn is_partial_of(name: &str, prefix: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|tag| tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())),
        None => false,
    }
}

/// The name a new partial file is created and locked under before it is renamed to `partial`:
/// `partial` and `.claim`, which is no target's partial name ([`is_partial_of`]).
fn claim_name(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(".claim");
    PathBuf::from(name)
}

/// Whether `name` is a claim file of a partial file of the target with this [`prefix`].
fn is_claim_of(name: &str, prefix: &str) -> bool {
    name.strip_suffix(".claim")
        .is_some_and(|partial| partial != prefix && is_partial_of(partial, prefix))
}

/// The files in the target's directory whose names pass `matches` with the target's prefix.
fn listed(target: &Path, matches: fn(&str, &str) -> bool) -> Vec<PathBuf> {
    let (Some(dir), prefix) = (target.parent(), prefix(target)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| matches(&e.file_name().to_string_lossy(), &prefix))
        .map(|e| e.path())
        .collect()
}

/// The partial files of `target` found in its directory (any writer's, locked or not).
pub fn existing(target: &Path) -> Vec<PathBuf> {
    listed(target, is_partial_of)
}

/// A partial output being written by this process, locked until it is finished or dropped.
#[derive(Debug)]
pub struct Partial {
    file: File,
    path: PathBuf,
    target: PathBuf,
    resumed: bool,
}

/// Opens a file for reading and writing without following a symlink; a new file gets no group
/// or other write permission (see the module doc).
fn open_rw(path: &Path, create_new: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Whether an open stale partial file may be adopted or removed: this process's effective user
/// owns it, it has a single link, and neither its group nor others may write to it. Otherwise
/// another user may hold it open (and read or rewrite what this writer puts in it), or it is
/// another name of some other file.
fn trusted(file: &File) -> bool {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    let euid = unsafe { libc::geteuid() };
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == euid && m.nlink() == 1 && m.mode() & 0o022 == 0)
}

/// Whether `file` is still the regular file at `path` (not renamed away or replaced since it
/// was opened).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => b.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The error for a file that another one took the place of while it was written.
fn replaced(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} was replaced by another file while it was written (someone else can write to its directory): what is there is not this node's output; write into a directory only you (or the node) can write, or make it sticky (chmod +t)",
        path.display()
    ))
}

#[cfg(test)]
thread_local! {
    /// A test's second writer, run once between creating a new partial file and locking it.
    static BEFORE_LOCK: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Removes the claim files of `target` that a writer left behind (stopped between creating and
/// renaming its file): unlocked, [`trusted`], and not written for [`CLAIM_LEFT_AFTER`].
fn remove_left_claims(target: &Path) {
    for p in listed(target, is_claim_of) {
        let Ok(f) = open_rw(&p, false) else { continue };
        let left = f.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age >= CLAIM_LEFT_AFTER)
        });
        if left && f.try_lock().is_ok() && still_at(&f, &p) && trusted(&f) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Creates a new partial file at `path`: created and locked under its [`claim_name`], then
/// renamed, so it is never at a partial name unlocked.
fn create_locked(path: &Path) -> io::Result<File> {
    let claim = claim_name(path);
    let f = open_rw(&claim, true)?;
    #[cfg(test)]
    if let Some(second_writer) = BEFORE_LOCK.with(|h| h.borrow_mut().take()) {
        second_writer();
    }
    let named = f
        .try_lock()
        .map_err(io::Error::from)
        .and_then(|()| std::fs::rename(&claim, path));
    if let Err(e) = named {
        let _ = std::fs::remove_file(&claim);
        return Err(e);
    }
    if !still_at(&f, path) {
        return Err(replaced(path));
    }
    Ok(f)
}

impl Partial {
    /// Claims a new partial file for `target`. Stale partial files of the target (no process
    /// holds them) are adopted — the most recently written one, renamed to this writer's name,
    /// when `resume` — or removed; partial files locked by a live writer, and files this
    /// process could not have written itself (not [`trusted`]), are left alone. A new file is
    /// locked under its claim name before it has its partial name; claim files left behind are
    /// removed once old ([`CLAIM_LEFT_AFTER`]).
    pub fn claim(target: &Path, resume: bool) -> io::Result<Self> {
        let path =
            target.with_file_name(format!("{}.{:016x}", prefix(target), rand::random::<u64>()));
        let mut stale: Vec<(PathBuf, SystemTime)> = existing(target)
            .into_iter()
            .map(|p| {
                let at = std::fs::symlink_metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (p, at)
            })
            .collect();
        stale.sort_by_key(|s| std::cmp::Reverse(s.1));
        remove_left_claims(target);
        let mut adopted = None;
        for (p, _) in stale {
            let Ok(f) = open_rw(&p, false) else { continue };
            // Held by a live writer (this node or another process): not stale.
            if f.try_lock().is_err() || !still_at(&f, &p) {
                continue;
            }
            // Another user's file, or another name of some file: neither adopt nor delete it.
            if !trusted(&f) {
                tracing::warn!(path = %p.display(), "ignoring a partial file this node did not write (another owner, group or other write permission, or a second link); remove it if it is stale");
                continue;
            }
            if resume && adopted.is_none() && std::fs::rename(&p, &path).is_ok() {
                adopted = Some(f);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        let (file, resumed) = match adopted {
            Some(f) => (f, true),
            None => (create_locked(&path)?, false),
        };
        Ok(Self {
            file,
            path,
            target: target.to_path_buf(),
            resumed,
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it was adopted from a writer that stopped (its bytes may be reused).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Fsyncs the file and renames it over the target (durably, see [`crate::durable`]).
    /// Fails, leaving the target alone, if the partial file is no longer this writer's own
    /// (another user renamed a file over it), and fails loudly if the file renamed into place
    /// is not it (replaced in between).
    pub fn finish(self) -> io::Result<()> {
        if !still_at(&self.file, &self.path) {
            return Err(replaced(&self.path));
        }
        crate::durable::finish(&self.file, &self.path, &self.target)?;
        if !still_at(&self.file, &self.target) {
            return Err(replaced(&self.target));
        }
        Ok(())
    }

    /// Removes the file (an output that will not be finished; the writer stops writing to it).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review s7, M4: a file renamed over the partial while it is written (another user, in a
    /// shared directory) is never renamed into place as the output.
    #[test]
    fn a_partial_replaced_while_written_is_not_finished() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let c = Partial::claim(&target, false).unwrap();
        c.file().write_all(b"verified").unwrap();
        let other = dir.path().join("evil");
        std::fs::write(&other, b"evil").unwrap();
        std::fs::rename(&other, c.path()).unwrap();
        let e = c.finish().unwrap_err();
        assert!(e.to_string().contains("was replaced"), "{e}");
        assert!(!target.exists(), "the target is left alone");
    }

    #[test]
    fn names() {
        let p = prefix(Path::new("/x/data.csv"));
        assert_eq!(p, ".data.csv.huitong-partial");
        assert!(is_partial_of(".data.csv.huitong-partial", &p));
        assert!(is_partial_of(
            ".data.csv.huitong-partial.0123456789abcdef",
            &p
        ));
        assert!(!is_partial_of(".data.csv.huitong-partial.12", &p));
        assert!(!is_partial_of(".data.csv.huitong-partialx", &p));
        assert!(!is_partial_of("data.csv", &p));
        let partial = Path::new("/x/.data.csv.huitong-partial.0123456789abcdef");
        let claim = claim_name(partial);
        let claim = claim.file_name().unwrap().to_str().unwrap();
        assert!(!is_partial_of(claim, &p), "a claim file is no partial file");
        assert!(is_claim_of(claim, &p));
        assert!(!is_claim_of(".data.csv.huitong-partial.claim", &p));
        assert!(!is_claim_of(
            ".data.csv.huitong-partial.0123456789abcdef",
            &p
        ));
    }

    /// Review 10, L3: a second writer listing the target's partial files while the first is
    /// between creating its file and locking it neither adopts nor removes that file; both
    /// writers get their own.
    #[test]
    fn a_new_partial_is_locked_before_another_writer_can_see_it() {
        use std::cell::RefCell;
        use std::io::Write;
        use std::rc::Rc;
        for resume in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("out.csv");
            let second: Rc<RefCell<Option<io::Result<Partial>>>> = Rc::default();
            let (slot, t) = (Rc::clone(&second), target.clone());
            BEFORE_LOCK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    *slot.borrow_mut() = Some(Partial::claim(&t, resume));
                }))
            });
            let first = Partial::claim(&target, resume);
            let second = second.borrow_mut().take().expect("the second writer ran");
            let (first, second) = (first.unwrap(), second.unwrap());
            assert!(
                !second.resumed(),
                "resume {resume}: adopted a live writer's file"
            );
            assert_ne!(first.path(), second.path());
            assert!(
                first.path().exists() && still_at(first.file(), first.path()),
                "resume {resume}: the first writer's file was taken away"
            );
            assert!(still_at(second.file(), second.path()));
            let mut listed = existing(&target);
            listed.sort();
            let mut both = vec![first.path().to_path_buf(), second.path().to_path_buf()];
            both.sort();
            assert_eq!(listed, both, "no claim file is left");
            first.file().write_all(b"first").unwrap();
            first.finish().unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"first");
            second.discard();
        }
    }

    /// A claim file left by a writer stopped before it renamed its file is removed once it is
    /// old enough; a recent one (a writer about to lock it) and a locked one are left alone.
    #[test]
    fn claim_files_left_behind_are_removed_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let claim = |tag: &str| {
            let p = dir
                .path()
                .join(format!(".out.bin.huitong-partial.{tag}.claim"));
            let f = open_rw(&p, true).unwrap();
            (p, f)
        };
        let (old, f) = claim("0000000000000001");
        f.set_modified(SystemTime::now() - CLAIM_LEFT_AFTER - Duration::from_secs(1))
            .unwrap();
        drop(f);
        let (recent, f) = claim("0000000000000002");
        drop(f);
        let (held, f) = claim("0000000000000003");
        f.set_modified(SystemTime::now() - CLAIM_LEFT_AFTER - Duration::from_secs(1))
            .unwrap();
        f.try_lock().unwrap();
        let c = Partial::claim(&target, true).unwrap();
        assert!(!c.resumed(), "a claim file is never adopted");
        assert!(!old.exists(), "an old unlocked claim file is removed");
        assert!(recent.exists() && held.exists());
        drop(f);
    }

    #[test]
    fn writers_never_share_a_partial_and_stale_ones_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let a = Partial::claim(&target, true).unwrap();
        let b = Partial::claim(&target, true).unwrap();
        assert_ne!(a.path(), b.path(), "one file per writer");
        assert!(!b.resumed(), "a live writer's file is not adopted");
        assert!(a.path().exists() && b.path().exists());
        std::fs::write(a.path(), b"abc").unwrap();
        let a_path = a.path().to_path_buf();
        drop(a); // the writer stopped without finishing: its file is stale now
        let c = Partial::claim(&target, true).unwrap();
        assert!(c.resumed());
        assert_eq!(std::fs::read(c.path()).unwrap(), b"abc");
        assert!(!a_path.exists(), "adopted under the new writer's name");
        b.discard();
        c.finish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        assert!(existing(&target).is_empty());

        // Without resume, stale partial files (the legacy name too) are removed.
        std::fs::write(dir.path().join(".out.bin.huitong-partial"), b"old").unwrap();
        let d = Partial::claim(&target, false).unwrap();
        assert!(!d.resumed());
        assert_eq!(existing(&target), vec![d.path().to_path_buf()]);
    }

    /// Review 10, M6: a stale partial file another user planted (or could still write, or that
    /// is a second link to another file) is neither adopted nor removed; the writer starts its
    /// own file, and its own stale files (0644 less the umask) are still adopted.
    #[test]
    fn partial_files_this_process_did_not_write_are_not_adopted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("people.bin");
        let planted = |tag: &str| {
            let p = dir
                .path()
                .join(format!(".people.bin.huitong-partial.{tag}"));
            std::fs::write(&p, b"planted").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            p
        };
        let not_adopted = |p: &Path, why: &str| {
            for resume in [true, false] {
                let c = Partial::claim(&target, resume).unwrap();
                assert!(!c.resumed(), "{why}: adopted");
                assert_ne!(c.path(), p);
                assert_eq!(std::fs::read(p).unwrap(), b"planted", "{why}: left alone");
                c.discard();
            }
        };

        // Owned by another user (the tests run as root, so the node could open it).
        let other = planted("0000000000000001");
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        not_adopted(&other, "another owner");
        std::fs::remove_file(&other).unwrap();

        // Writable by group and others (someone may hold it open).
        let open = planted("0000000000000002");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        not_adopted(&open, "mode 0666");
        std::fs::remove_file(&open).unwrap();

        // A second link to another file (writes would go through to that file).
        let linked = planted("0000000000000003");
        std::fs::hard_link(&linked, dir.path().join("elsewhere")).unwrap();
        not_adopted(&linked, "two links");
        std::fs::remove_file(&linked).unwrap();

        // This process's own stale file is still adopted; a new one is created 0644 at most.
        let own = Partial::claim(&target, true).unwrap();
        let mode = own.file().metadata().unwrap().mode();
        assert_eq!(
            mode & 0o022,
            0,
            "created without group/other write: {mode:o}"
        );
        std::fs::write(own.path(), b"mine").unwrap();
        drop(own);
        let again = Partial::claim(&target, true).unwrap();
        assert!(again.resumed());
        assert_eq!(std::fs::read(again.path()).unwrap(), b"mine");
    }
}
