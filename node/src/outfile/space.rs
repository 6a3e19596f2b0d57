//! Free space for what the node writes: a ledger of the bytes running jobs have reserved on
//! each file system, and a floor kept free on the node directory's file system.
//!
//! A `statvfs` snapshot alone over-commits: up to sixteen pulls and a publish started together
//! each see the same free space, and all pass. So a job that will write first reserves its bytes
//! here ([`Space::reserve`]). A need is granted only if it fits in what `statvfs` says an
//! unprivileged writer may still use (`f_bavail × f_frsize`), less what the other running jobs
//! reserved on that file system and have not written yet, less the floor; needs of one job on
//! one file system are added up. The check and the reservation are one step (under the ledger's
//! lock). The [`Reservation`] is given back when dropped, however the job ends.
//!
//! Bytes a job has already written are counted by `statvfs`, so they stop counting as reserved:
//! a job says how much of its reservation has landed ([`Reservation::track`]). A job whose
//! estimate was short asks for more as it goes ([`Reservation::grow_to`], checked like a new
//! need), so it fails with the same clear error instead of filling the disk. A file pull
//! allocates its partial file whole while it holds the ledger ([`Space::reserve_allocating`]),
//! so no other check sees the allocation half done; once allocated, the bytes are held on disk
//! and nothing stays reserved.
//!
//! The floor ([`Floor`]): when its file system fills, RocksDB stops taking writes (gossip ingest
//! and appends stall), and the chunk store and the audit log fail. Pulls, exports and publishes
//! leave the floor free on the file systems of the node directory, `db/`, `chunks/` and
//! `audit/`: by default the larger of 1 GiB and 5 % of the file system, but at most a quarter of
//! it (a small file system — a test's, a small testnet's — stays usable);
//! `storage.keep_free_mib` sets it (0: none). Other file systems (an exchange directory mounted
//! elsewhere) keep no floor.
//!
//! Limits: the ledger lives in this process; other programs writing to the disk are seen only
//! through `statvfs`. `statvfs` (one call per file system a need touches) and a file pull's
//! `fallocate` run under the ledger's lock, so a hung mount holding an output directory holds
//! other jobs' checks with it. Bytes landing while a check runs may count twice for that check
//! (refusing a little early), never not at all.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{io_err, OutError};

/// The smallest default floor: 1 GiB.
pub const AUTO_FLOOR_MIN: u64 = 1 << 30;
/// The default floor is this percentage of the file system (when more than [`AUTO_FLOOR_MIN`]).
pub const AUTO_FLOOR_PERCENT: u64 = 5;

/// Bytes kept free on the node directory's file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// The larger of [`AUTO_FLOOR_MIN`] and [`AUTO_FLOOR_PERCENT`] % of the file system, at
    /// most a quarter of it.
    Auto,
    /// Exactly this many bytes (`storage.keep_free_mib`).
    Bytes(u64),
}

impl Floor {
    /// The floor of `storage.keep_free_mib` (unset: [`Floor::Auto`]).
    pub fn from_mib(mib: Option<u64>) -> Self {
        mib.map_or(Floor::Auto, |m| Floor::Bytes(m.saturating_mul(1 << 20)))
    }

    /// The bytes kept free on a file system of `size` bytes.
    pub fn bytes(self, size: u64) -> u64 {
        match self {
            Floor::Bytes(b) => b,
            Floor::Auto => (size / 100 * AUTO_FLOOR_PERCENT)
                .max(AUTO_FLOOR_MIN)
                .min(size / 4),
        }
    }
}

/// What `statvfs` says of a file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail × f_frsize`).
    pub available: u64,
    /// Its size (`f_blocks × f_frsize`).
    pub size: u64,
}

/// `statvfs(2)` of the file system holding `dir`.
pub fn statvfs(dir: &Path) -> Result<FsSpace, OutError> {
    let s = rustix::fs::statvfs(dir).map_err(|e| io_err(dir)(e.into()))?;
    Ok(FsSpace {
        available: s.f_bavail.saturating_mul(s.f_frsize),
        size: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// Reads a file system's space (`statvfs`, or a stand-in in tests).
pub(crate) type Probe = dyn Fn(&Path) -> Result<FsSpace, OutError> + Send + Sync;
/// Says how many bytes of a reservation are on disk already; called under the ledger's lock,
/// so it must not block for long (it reads a counter, or stats the job's own file).
type Landed = dyn Fn() -> u64 + Send + Sync;

/// One running job's reservation on one file system.
struct Held {
    dev: u64,
    bytes: u64,
    landed: Option<Box<Landed>>,
}

impl Held {
    /// Reserved and not yet written.
    fn outstanding(&self) -> u64 {
        self.bytes
            .saturating_sub(self.landed.as_ref().map_or(0, |f| f()))
    }
}

#[derive(Default)]
struct Ledger {
    next: u64,
    held: HashMap<u64, Held>,
}

impl Ledger {
    /// Bytes reserved and not written on `dev`, and by how many reservations.
    fn outstanding(&self, dev: u64) -> (u64, usize) {
        self.held
            .values()
            .filter(|h| h.dev == dev)
            .map(Held::outstanding)
            .filter(|&b| b > 0)
            .fold((0, 0), |(sum, n), b| (sum.saturating_add(b), n + 1))
    }
}

struct Inner {
    ledger: Mutex<Ledger>,
    floor: Floor,
    /// The devices of the node directory, `db/`, `chunks/` and `audit/`.
    floor_devs: Vec<u64>,
    probe: Box<Probe>,
}

/// The node's free-space ledger (cheap to clone: one ledger per node process).
#[derive(Clone)]
pub struct Space(Arc<Inner>);

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("floor", &self.0.floor)
            .field("floor_devs", &self.0.floor_devs)
            .finish_non_exhaustive()
    }
}

/// The directory a file at `path` goes into (a directory stands for itself).
fn dir_of(path: &Path) -> &Path {
    if path.is_dir() {
        return path;
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn dev_of(dir: &Path) -> Result<u64, OutError> {
    Ok(std::fs::metadata(dir).map_err(io_err(dir))?.dev())
}

impl Space {
    /// The ledger of the node in `node_dir`, keeping `floor` free on its file system(s).
    pub fn new(node_dir: &Path, floor: Floor) -> Self {
        Self::build(node_dir, floor, Box::new(statvfs))
    }

    /// Like [`Space::new`], reading file systems with `probe` instead of `statvfs` (tests).
    #[cfg(test)]
    pub(crate) fn with_probe(node_dir: &Path, floor: Floor, probe: Box<Probe>) -> Self {
        Self::build(node_dir, floor, probe)
    }

    fn build(node_dir: &Path, floor: Floor, probe: Box<Probe>) -> Self {
        let mut floor_devs = Vec::new();
        for dir in [
            node_dir.to_path_buf(),
            node_dir.join("db"),
            node_dir.join("chunks"),
            node_dir.join("audit"),
        ] {
            if let Ok(dev) = dev_of(&dir) {
                if !floor_devs.contains(&dev) {
                    floor_devs.push(dev);
                }
            }
        }
        Self(Arc::new(Inner {
            ledger: Mutex::new(Ledger::default()),
            floor,
            floor_devs,
            probe,
        }))
    }

    /// The floor kept free on the node directory's file system.
    pub fn floor(&self) -> Floor {
        self.0.floor
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refusal of `needed` bytes at `path` on `dev` (holding `dir`) with the numbers as
    /// they stand; `None` when they fit.
    fn assess(
        &self,
        ledger: &Ledger,
        dev: u64,
        dir: &Path,
        path: &Path,
        needed: u64,
    ) -> Result<Option<OutError>, OutError> {
        // What has landed is read before statvfs: bytes landing in between then count twice
        // (refusing too early), never not at all.
        let (reserved, jobs) = ledger.outstanding(dev);
        let fs = (self.0.probe)(dir)?;
        let floor = if self.0.floor_devs.contains(&dev) {
            self.0.floor.bytes(fs.size)
        } else {
            0
        };
        let usable = fs.available.saturating_sub(floor).saturating_sub(reserved);
        Ok((needed > usable).then(|| OutError::NoSpace {
            path: path.to_path_buf(),
            needed,
            available: fs.available,
            reserved,
            jobs,
            floor,
        }))
    }

    /// Fails unless `needed` more bytes fit on `dev` (holding `dir`; `path` names the need in
    /// the error), given the ledger as it stands.
    fn fits(
        &self,
        ledger: &Ledger,
        dev: u64,
        dir: &Path,
        path: &Path,
        needed: u64,
    ) -> Result<(), OutError> {
        match self.assess(ledger, dev, dir, path, needed)? {
            None => Ok(()),
            Some(refused) => {
                tracing::info!(path = %path.display(), error = %refused, "not enough free space; refused");
                Err(refused)
            }
        }
    }

    /// Enters a reservation granted (the caller holds the ledger and checked it fits).
    fn insert(
        &self,
        ledger: &mut Ledger,
        dev: u64,
        dir: &Path,
        path: &Path,
        bytes: u64,
    ) -> Reservation {
        let id = ledger.next;
        ledger.next += 1;
        ledger.held.insert(
            id,
            Held {
                dev,
                bytes,
                landed: None,
            },
        );
        tracing::debug!(path = %path.display(), bytes, dev, "space reserved");
        Reservation {
            space: self.clone(),
            id,
            dev,
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            bytes,
        }
    }

    /// Reserves room for each need `(file or directory to be written, bytes)`, or fails naming
    /// the first file system without room (nothing reserved then). Needs on one file system are
    /// added up. Returns one reservation per need, in order; each is given back when dropped.
    pub fn reserve(&self, needs: &[(&Path, u64)]) -> Result<Vec<Reservation>, OutError> {
        // (device, a directory on it, the first path named, bytes).
        let mut by_fs: Vec<(u64, &Path, &Path, u64)> = Vec::new();
        let mut devs = Vec::with_capacity(needs.len());
        for &(path, bytes) in needs {
            let dir = dir_of(path);
            let dev = dev_of(dir)?;
            devs.push((dev, dir.to_path_buf()));
            match by_fs.iter_mut().find(|(d, ..)| *d == dev) {
                Some(e) => e.3 = e.3.saturating_add(bytes),
                None => by_fs.push((dev, dir, path, bytes)),
            }
        }
        let mut ledger = self.lock();
        for &(dev, dir, path, needed) in &by_fs {
            self.fits(&ledger, dev, dir, path, needed)?;
        }
        let mut out = Vec::with_capacity(needs.len());
        for ((path, bytes), (dev, dir)) in needs.iter().zip(devs) {
            out.push(self.insert(&mut ledger, dev, &dir, path, *bytes));
        }
        Ok(out)
    }

    /// Reserves room for `bytes` written at `path` (see [`Space::reserve`]).
    pub fn reserve_one(&self, path: &Path, bytes: u64) -> Result<Reservation, OutError> {
        self.reserve(&[(path, bytes)])?
            .pop()
            .ok_or_else(|| io_err(path)(std::io::Error::other("no reservation made")))
    }

    /// Reserves room for `bytes` at `path` and, still holding the ledger (no other job is
    /// checked meanwhile), runs `allocate`, which allocates them on disk (`fallocate`): when it
    /// says it did (`Ok(true)`), `statvfs` counts them and nothing stays reserved (`None`); when
    /// the file system cannot (`Ok(false)`), the reservation stays (`Some`). `ENOSPC` from it
    /// (another program took the room since the check) is refused like a need that does not
    /// fit, with the numbers as they stand.
    pub fn reserve_allocating(
        &self,
        path: &Path,
        bytes: u64,
        allocate: impl FnOnce() -> std::io::Result<bool>,
    ) -> Result<Option<Reservation>, OutError> {
        let dir = dir_of(path);
        let dev = dev_of(dir)?;
        let mut ledger = self.lock();
        self.fits(&ledger, dev, dir, path, bytes)?;
        match allocate() {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(self.insert(&mut ledger, dev, dir, path, bytes))),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                let refused = self.assess(&ledger, dev, dir, path, bytes)?;
                Err(refused.unwrap_or_else(|| OutError::NoSpace {
                    // It fits again (the other program gave the room back): numbers are moot.
                    path: path.to_path_buf(),
                    needed: bytes,
                    available: 0,
                    reserved: 0,
                    jobs: 0,
                    floor: 0,
                }))
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Bytes reserved on the file system holding `dir` and not written yet, by every running
    /// job, and how many jobs hold them.
    pub fn reserved(&self, dir: &Path) -> Result<(u64, usize), OutError> {
        let dev = dev_of(dir_of(dir))?;
        Ok(self.lock().outstanding(dev))
    }
}

/// Room reserved for one job on one file system; given back when dropped.
pub struct Reservation {
    space: Space,
    id: u64,
    dev: u64,
    dir: PathBuf,
    path: PathBuf,
    bytes: u64,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// Bytes reserved (including those already written).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Says how many of the reserved bytes are on disk already (a counter the job keeps, or a
    /// stat of its own file; `landed` runs under the ledger's lock and must not block for long). Those count in `statvfs` and no longer as reserved.
    pub fn track(&self, landed: impl Fn() -> u64 + Send + Sync + 'static) {
        if let Some(h) = self.space.lock().held.get_mut(&self.id) {
            h.landed = Some(Box::new(landed));
        }
    }

    /// Reserves up to `total` bytes in all (nothing when already as much), checked like a new
    /// need of the difference.
    pub fn grow_to(&mut self, total: u64) -> Result<(), OutError> {
        if total <= self.bytes {
            return Ok(());
        }
        let space = self.space.clone();
        let mut ledger = space.lock();
        space.fits(&ledger, self.dev, &self.dir, &self.path, total - self.bytes)?;
        if let Some(h) = ledger.held.get_mut(&self.id) {
            h.bytes = total;
        }
        tracing::debug!(path = %self.path.display(), from = self.bytes, to = total, "space reservation grown");
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.space.lock().held.remove(&self.id);
        tracing::debug!(path = %self.path.display(), bytes = self.bytes, "space reservation released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MIB: u64 = 1 << 20;

    /// A ledger over a pretend file system of `size` bytes of which `free` are free.
    fn fake(dir: &Path, floor: Floor, size: u64, free: Arc<AtomicU64>) -> Space {
        Space::with_probe(
            dir,
            floor,
            Box::new(move |_| {
                Ok(FsSpace {
                    available: free.load(Ordering::Relaxed),
                    size,
                })
            }),
        )
    }

    #[test]
    fn the_default_floor_scales_with_the_file_system() {
        let gib = 1u64 << 30;
        // The larger of 1 GiB and 5 %, at most a quarter.
        assert_eq!(Floor::Auto.bytes(1000 * gib), 50 * gib);
        assert_eq!(Floor::Auto.bytes(10 * gib), gib);
        assert_eq!(Floor::Auto.bytes(2 * gib), gib / 2);
        assert_eq!(Floor::Auto.bytes(200 * MIB), 50 * MIB);
        assert_eq!(Floor::from_mib(Some(256)).bytes(1000 * gib), 256 * MIB);
        assert_eq!(Floor::from_mib(Some(0)).bytes(1000 * gib), 0);
        assert_eq!(Floor::from_mib(None), Floor::Auto);
    }

    /// Review 10, M9: two reservations on one file system never together exceed what is free
    /// less the floor — the second is refused up front, naming what it needed, what is free, what
    /// the first holds and the floor — and a dropped reservation gives its room back.
    #[test]
    fn reservations_add_up_against_free_space_less_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(200 * MIB));
        let space = fake(dir.path(), Floor::Bytes(16 * MIB), 1 << 40, free.clone());
        let out = |n: &str| dir.path().join(n);
        // 184 MiB usable: 60 + 60 + 60 fit, a fourth 60 does not.
        let a = space.reserve_one(&out("a"), 60 * MIB).unwrap();
        let b = space.reserve_one(&out("b"), 60 * MIB).unwrap();
        let c = space.reserve_one(&out("c"), 60 * MIB).unwrap();
        assert_eq!(space.reserved(dir.path()).unwrap(), (180 * MIB, 3));
        let e = space.reserve_one(&out("d"), 60 * MIB).unwrap_err();
        match &e {
            OutError::NoSpace {
                needed,
                available,
                reserved,
                jobs,
                floor,
                ..
            } => {
                assert_eq!(
                    (*needed, *available, *reserved, *jobs, *floor),
                    (60 * MIB, 200 * MIB, 180 * MIB, 3, 16 * MIB)
                );
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
        let msg = e.to_string();
        for part in [
            "62914560 bytes (60.0 MiB) needed",
            "209715200 bytes (200.0 MiB) free",
            "188743680 bytes (180.0 MiB) reserved by 3 other running jobs",
            "16777216 bytes (16.0 MiB) kept free for the node's database",
            "storage.keep_free_mib",
            "huitong pulls",
            "huitong gc",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // Needs of one job on one file system add up: 4 MiB are left, so 3 + 1 fit, 3 + 2 do
        // not (though each fits alone).
        assert!(space
            .reserve(&[(out("e").as_path(), 3 * MIB), (dir.path(), MIB)])
            .is_ok());
        assert!(space.reserve_one(dir.path(), 2 * MIB).is_ok());
        assert!(space
            .reserve(&[(out("e").as_path(), 3 * MIB), (dir.path(), 2 * MIB)])
            .is_err());
        // A dropped reservation gives its room back.
        drop(b);
        let d = space.reserve_one(&out("d"), 60 * MIB).unwrap();
        assert_eq!(space.reserved(dir.path()).unwrap(), (180 * MIB, 3));
        // Bytes on disk count in statvfs, not twice: once `a` wrote 50 MiB (free fell by as
        // much), 50 MiB more fit than before.
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        a.track(move || w.load(Ordering::Relaxed));
        written.store(50 * MIB, Ordering::Relaxed);
        free.fetch_sub(50 * MIB, Ordering::Relaxed);
        assert_eq!(space.reserved(dir.path()).unwrap(), (130 * MIB, 3));
        let g = space.reserve_one(&out("g"), 4 * MIB).unwrap();
        assert!(space.reserve_one(&out("h"), 1).is_err());
        drop((a, c, d, g));
        assert_eq!(space.reserved(dir.path()).unwrap(), (0, 0));
    }

    #[test]
    fn a_reservation_grows_only_within_the_room_left() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(100 * MIB));
        let space = fake(dir.path(), Floor::Bytes(0), 1 << 40, free);
        let mut a = space.reserve_one(&dir.path().join("a"), 10 * MIB).unwrap();
        let _b = space.reserve_one(&dir.path().join("b"), 50 * MIB).unwrap();
        a.grow_to(5 * MIB).unwrap();
        assert_eq!(a.bytes(), 10 * MIB, "never shrinks");
        a.grow_to(50 * MIB).unwrap();
        assert_eq!(space.reserved(dir.path()).unwrap(), (100 * MIB, 2));
        assert!(matches!(
            a.grow_to(50 * MIB + 1),
            Err(OutError::NoSpace { needed: 1, .. })
        ));
        assert_eq!(a.bytes(), 50 * MIB);
    }

    /// An allocation made while the ledger is held leaves nothing reserved; one the file
    /// system cannot make leaves the reservation; `ENOSPC` from it is a refusal.
    #[test]
    fn allocating_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(100 * MIB));
        let space = fake(dir.path(), Floor::Bytes(0), 1 << 40, free.clone());
        let out = dir.path().join("o");
        let f = free.clone();
        let none = space
            .reserve_allocating(&out, 40 * MIB, || {
                f.fetch_sub(40 * MIB, Ordering::Relaxed);
                Ok(true)
            })
            .unwrap();
        assert!(none.is_none());
        assert_eq!(space.reserved(dir.path()).unwrap(), (0, 0));
        let kept = space
            .reserve_allocating(&out, 40 * MIB, || Ok(false))
            .unwrap();
        assert_eq!(kept.as_ref().map(Reservation::bytes), Some(40 * MIB));
        assert_eq!(space.reserved(dir.path()).unwrap(), (40 * MIB, 1));
        let mut ran = false;
        let e = space
            .reserve_allocating(&out, 40 * MIB, || {
                ran = true;
                Ok(true)
            })
            .unwrap_err();
        assert!(!ran, "nothing allocated when it does not fit");
        assert!(matches!(e, OutError::NoSpace { reserved, .. } if reserved == 40 * MIB));
        drop(kept);
        let e = space
            .reserve_allocating(&out, 10 * MIB, || {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            })
            .unwrap_err();
        assert!(
            matches!(e, OutError::NoSpace { needed, .. } if needed == 10 * MIB),
            "{e}"
        );
        assert_eq!(space.reserved(dir.path()).unwrap(), (0, 0));
    }

    /// The floor applies on the node directory's file system only.
    #[test]
    fn the_floor_is_kept_on_the_node_file_system_only() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(100 * MIB));
        let space = fake(dir.path(), Floor::Bytes(90 * MIB), 1 << 40, free.clone());
        assert!(space.reserve_one(&dir.path().join("x"), 11 * MIB).is_err());
        space.reserve_one(&dir.path().join("x"), 10 * MIB).unwrap();
        // A node elsewhere (its directory on no device of this one): no floor here.
        let other = Space::with_probe(
            Path::new("/nonexistent/node"),
            Floor::Bytes(90 * MIB),
            Box::new(move |_| {
                Ok(FsSpace {
                    available: free.load(Ordering::Relaxed),
                    size: 1 << 40,
                })
            }),
        );
        other.reserve_one(&dir.path().join("x"), 100 * MIB).unwrap();
    }

    /// The real `statvfs`: needs are checked per file system and named.
    #[test]
    fn real_space_is_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), Floor::Bytes(0));
        let free = statvfs(dir.path()).unwrap().available;
        assert!(free > 0);
        let out = dir.path().join("out.csv");
        space.reserve_one(&out, 1).unwrap();
        let e = space.reserve_one(&out, u64::MAX).unwrap_err().to_string();
        assert!(
            e.contains("18446744073709551615 bytes") && e.contains("free on its file system"),
            "{e}"
        );
        assert!(
            !e.contains("reserved by") && !e.contains("kept free"),
            "{e}"
        );
    }
}
