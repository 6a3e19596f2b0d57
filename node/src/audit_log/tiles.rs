//! The hub's audit log on disk, in the C2SP tlog-tiles layout under `<node dir>/audit/`:
//! `checkpoint`, `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`.
//!
//! Appends are batched: a batch's entry bundles and hash tiles are written to temporary files,
//! fsynced and renamed, their directories fsynced, and only then is the new checkpoint signed
//! and written the same way. A crash at any point leaves the previous checkpoint and every tile
//! it needs intact (new tiles have new `.p/<W>` names), so nothing is acknowledged that is not
//! durable. Every stored hash is also kept in memory (64 bytes per entry on average); opening
//! rebuilds them from the entry bundles and checks them against the signed checkpoint.
//!
//! **The checkpoint decides what the log holds.** A crash after a batch's tiles and before its
//! checkpoint leaves files beyond the checkpoint — a full tile, a wider partial, tiles of a new
//! place or level — holding entries that were never committed; after the restart the hub
//! appends *other* entries at those positions. So opening removes every tile and bundle beyond
//! the checkpoint before reading anything, and no read ([`read_tile`]) ever takes a file wider
//! than the committed tree's tile at its place.
//!
//! Proofs are computed from the tiles **on disk** (not from memory), so a tampered tile gives a
//! proof that members' checks refuse; [`verify_dir`] checks every file against the checkpoint.
//!
//! Partial tiles (`.p/<W>`) are removed once they are superseded: after each append or mirror
//! update, once the new tiles and the checkpoint covering them are durable, the whole `<N>.p/`
//! directory of each new full tile goes, and so does every narrower partial at the place of a
//! new, wider partial — hash tiles and entry bundles, on the hub and on every mirror; at open,
//! whatever a crash or an older version left. C2SP tlog-tiles lets a log delete partial tiles
//! once the full tile exists; narrower partials go too because this log's tiles are read only
//! here (members fetch entries and proofs, not tile files). A reader that needs a tile at an
//! older, smaller tree size (a proof against an earlier checkpoint) takes the first `W` hashes
//! (or entries) of the narrowest wider tile the committed tree holds — the wider partial, else
//! the full tile: the same bytes ([`read_tile`]).
//!
//! Because files come and go, anything that reads the directory must hold the log
//! ([`TileLog`], kept under the node's audit lock) or be able to follow it: [`verify_dir`]
//! follows a log that moves on while it checks it (it needs no lock), and a copy of a live log
//! is made with [`TileLog::snapshot`] while it is held — never by copying the directory file by
//! file, which can miss a tile pruned between listing and copying.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use huitong_protocol::audit::note::{open_checkpoint, sign_checkpoint, SignedCheckpoint};
use huitong_protocol::audit::{
    decode_bundle, encode_bundle, parse_tile_path, tile_path, Record, TILE_HEIGHT, TILE_WIDTH,
};
use huitong_protocol::{NodeId, SecretKey};
use tlog_tiles::{
    prove_record, prove_tree, record_hash, split_stored_hash_index, stored_hashes, tree_hash, Hash,
    HashReader, Tile,
};

/// The checkpoint file.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Why the log could not be read, written or proved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// What is on disk does not agree with the signed checkpoint.
    #[error("audit log: {0}")]
    Inconsistent(String),
    /// Tree maths failed (a request outside the tree, or a tile that does not fit).
    #[error("audit log: {0}")]
    Tree(#[from] tlog_tiles::Error),
    /// A mirror was given entries that do not hash to the hub's checkpoint.
    #[error("the hub's entries make a tree of size {size} with root {root}, but its signed checkpoint says size {expected_size} root {expected_root}")]
    NotTheCheckpoint {
        /// Size reached.
        size: u64,
        /// Root computed.
        root: String,
        /// Checkpoint size.
        expected_size: u64,
        /// Checkpoint root.
        expected_root: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A tile, sized for a tree of `size` entries: level `l`, index `n`, of its width at that size.
fn tile_at(l: u8, n: u64, size: u64, data: bool) -> Option<Tile> {
    let at_level = size >> (u64::from(TILE_HEIGHT) * u64::from(l));
    let start = n.checked_mul(TILE_WIDTH)?;
    let w = at_level.checked_sub(start)?.min(TILE_WIDTH);
    (w > 0).then(|| Tile::new(TILE_HEIGHT, l, n, w as u32, data))
}

/// Hashes held in memory, indexed by stored-hash index.
struct Memory<'a>(&'a [Hash]);

impl HashReader for Memory<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.0.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Hashes read from the hash tiles on disk, for a tree of `size` entries, from tiles no wider
/// than the committed tree of `committed` entries holds ([`read_tile`]).
struct Disk<'a> {
    dir: &'a Path,
    size: u64,
    committed: u64,
}

impl HashReader for Disk<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut files: HashMap<Tile, Vec<u8>> = HashMap::new();
        indexes
            .iter()
            .map(|&index| {
                let (level, n) = split_stored_hash_index(index);
                let l = level / TILE_HEIGHT;
                let within = level - l * TILE_HEIGHT;
                let tile_n = (n << within) >> TILE_HEIGHT;
                let tile = tile_at(l, tile_n, self.size, false)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)?;
                let data = match files.entry(tile) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(
                        read_tile(self.dir, &tile, self.committed)
                            .map_err(|_| tlog_tiles::Error::InvalidTile)?
                            .0,
                    ),
                };
                tile.hash_at_index(data, index)
            })
            .collect()
    }
}

/// The hub's log.
pub struct TileLog {
    dir: PathBuf,
    origin: String,
    hashes: Vec<Hash>,
    size: u64,
    /// Entries of the last, partial bundle.
    tail: Vec<Vec<u8>>,
    ids: HashMap<String, Vec<u64>>,
    keys: HashMap<[u8; 32], u64>,
    checkpoint: Option<SignedCheckpoint>,
    /// An append failed part-way: memory may be ahead of the disk.
    poisoned: bool,
}

impl TileLog {
    /// Opens (or creates) the log in `dir`, rebuilding its hashes from the entry bundles and
    /// checking them against the checkpoint signed by `hub`.
    pub fn open(dir: &Path, origin: &str, hub: &NodeId) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut log = Self {
            dir: dir.to_owned(),
            origin: origin.to_owned(),
            hashes: Vec::new(),
            size: 0,
            tail: Vec::new(),
            ids: HashMap::new(),
            keys: HashMap::new(),
            checkpoint: None,
            poisoned: false,
        };
        let path = dir.join(CHECKPOINT_FILE);
        let note = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(log),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut checkpoint = open_checkpoint(&note, origin, hub, &[])
            .map_err(|e| LogError::Inconsistent(format!("{}: {e}", path.display())))?;
        // This node wrote the file: keep it as it is, with the witnesses' cosignatures a mirror's
        // checkpoint carries (opened without the witness list, they are not in the canonical note).
        checkpoint.note = note;
        // What a crash between the tiles and the checkpoint left is not part of the log: it
        // goes before anything is read, so no reader can ever take it for committed content.
        remove_uncommitted(dir, checkpoint.size);
        for (i, entry) in read_entries(dir, checkpoint.size, checkpoint.size)?
            .into_iter()
            .enumerate()
        {
            log.add(i as u64, entry)?;
        }
        let root = tree_hash(log.size, &Memory(&log.hashes))?;
        if root != checkpoint.root {
            return Err(LogError::Inconsistent(format!(
                "the {} entries in {} hash to {root}, the checkpoint says {}; run `huitong audit verify` to find the entry",
                log.size,
                dir.display(),
                checkpoint.root
            )));
        }
        log.checkpoint = Some(checkpoint);
        log.prune(Tile::new_tiles(TILE_HEIGHT, 0, log.size));
        Ok(log)
    }

    /// Hashes and indexes entry `index` in memory.
    fn absorb(&mut self, index: u64, entry: &[u8]) -> Result<(), LogError> {
        let new = stored_hashes(index, entry, &Memory(&self.hashes))?;
        self.hashes.extend(new);
        if let Ok(r) = Record::decode(entry) {
            self.ids.entry(r.id.clone()).or_default().push(index);
            self.keys.insert(r.key(), index);
        }
        self.size = index + 1;
        Ok(())
    }

    fn add(&mut self, index: u64, entry: Vec<u8>) -> Result<(), LogError> {
        self.absorb(index, &entry)?;
        self.tail.push(entry);
        if self.tail.len() as u64 == TILE_WIDTH {
            self.tail.clear();
        }
        Ok(())
    }

    /// Entries in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The latest checkpoint (none while empty).
    pub fn checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.checkpoint.as_ref()
    }

    /// Whether the event with this record key is logged.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.keys.contains_key(key)
    }

    /// Indexes of the entries with this record id.
    pub fn find(&self, id: &str) -> Vec<u64> {
        self.ids.get(id).cloned().unwrap_or_default()
    }

    /// Whether an append failed part-way (the log must be reopened from disk).
    pub fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Appends entries and makes them durable, then signs and writes the new checkpoint.
    /// On error the log is [`TileLog::poisoned`] and must be reopened.
    pub fn append(
        &mut self,
        key: &SecretKey,
        entries: Vec<Vec<u8>>,
    ) -> Result<SignedCheckpoint, LogError> {
        let origin = self.origin.clone();
        self.grow(entries, |size, root| {
            Ok(SignedCheckpoint {
                size,
                root,
                note: sign_checkpoint(key, &origin, size, root),
                cosigned_by: Vec::new(),
            })
        })
    }

    /// A member's mirror: appends the hub's entries up to `checkpoint`, but only if they hash to
    /// its root ([`LogError::NotTheCheckpoint`] otherwise, before anything is written).
    pub fn extend(
        &mut self,
        entries: Vec<Vec<u8>>,
        checkpoint: &SignedCheckpoint,
    ) -> Result<(), LogError> {
        self.grow(entries, |size, root| {
            if size == checkpoint.size && root == checkpoint.root {
                Ok(checkpoint.clone())
            } else {
                Err(LogError::NotTheCheckpoint {
                    size,
                    root: root.to_string(),
                    expected_size: checkpoint.size,
                    expected_root: checkpoint.root.to_string(),
                })
            }
        })
        .map(|_| ())
    }

    /// Adds entries in memory, seals the new tree (`seal(size, root)`), then writes bundles and
    /// tiles durably and the checkpoint last.
    fn grow(
        &mut self,
        entries: Vec<Vec<u8>>,
        seal: impl FnOnce(u64, Hash) -> Result<SignedCheckpoint, LogError>,
    ) -> Result<SignedCheckpoint, LogError> {
        self.poisoned = true;
        let old = self.size;
        let mut bundles: Vec<(Tile, Vec<u8>)> = Vec::new();
        let mut pending = std::mem::take(&mut self.tail);
        let first_bundle = old / TILE_WIDTH;
        for (i, e) in entries.into_iter().enumerate() {
            self.absorb(old + i as u64, &e)?;
            pending.push(e);
            if pending.len() as u64 == TILE_WIDTH {
                let n = first_bundle + bundles.len() as u64;
                bundles.push((
                    Tile::new(TILE_HEIGHT, 0, n, TILE_WIDTH as u32, true),
                    encode_bundle(pending.iter().map(Vec::as_slice)),
                ));
                pending.clear();
            }
        }
        if !pending.is_empty() {
            let n = first_bundle + bundles.len() as u64;
            bundles.push((
                Tile::new(TILE_HEIGHT, 0, n, pending.len() as u32, true),
                encode_bundle(pending.iter().map(Vec::as_slice)),
            ));
        }
        self.tail = pending;
        let root = tree_hash(self.size, &Memory(&self.hashes))?;
        let checkpoint = seal(self.size, root)?;
        let mut dirs = BTreeSet::new();
        for (tile, bytes) in &bundles {
            dirs.insert(self.write(&tile_path(tile), bytes)?);
        }
        for tile in Tile::new_tiles(TILE_HEIGHT, old, self.size) {
            let data = tile.read_data(&Memory(&self.hashes))?;
            dirs.insert(self.write(&tile_path(&tile), &data)?);
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        let dir = self.write(CHECKPOINT_FILE, &checkpoint.note)?;
        sync_dir(&dir)?;
        self.checkpoint = Some(checkpoint.clone());
        self.poisoned = false;
        // The new tiles and the checkpoint covering them are durable: what they supersede goes.
        self.prune(Tile::new_tiles(TILE_HEIGHT, old, self.size));
        Ok(checkpoint)
    }

    /// Removes the partial tiles these (durable) tiles supersede: every partial at the place of
    /// a full tile (the whole `<N>.p/` directory), and every narrower partial at the place of a
    /// partial one; at level 0 the entry bundles likewise. A failure is logged, never fatal: a
    /// partial left behind is only space.
    fn prune(&self, tiles: impl IntoIterator<Item = Tile>) {
        let mut removed = 0u64;
        for tile in tiles {
            let kinds: &[bool] = if tile.level() == 0 {
                &[false, true]
            } else {
                &[false]
            };
            for &data in kinds {
                let dir = self.dir.join(partials_dir(&tile, data));
                let result = if u64::from(tile.width()) == TILE_WIDTH {
                    fs::remove_dir_all(&dir).map(|()| 1)
                } else {
                    remove_narrower(&dir, tile.width())
                };
                match result {
                    Ok(n) => removed += n,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(target: "huitong::audit", dir = %dir.display(), error = %e, "cannot remove superseded partial tiles")
                    }
                }
            }
        }
        if removed > 0 {
            tracing::debug!(target: "huitong::audit", removed, "removed superseded partial tiles");
        }
    }

    /// The size of the tree the checkpoint on disk commits to: no tile is read beyond it.
    fn committed(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |c| c.size)
    }

    /// Up to `count` entries from `from`, read from the bundles on disk.
    pub fn entries(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let committed = self.committed();
        let to = from.saturating_add(count).min(committed);
        let mut out = Vec::new();
        let mut n = from / TILE_WIDTH;
        while n * TILE_WIDTH < to {
            for (i, e) in read_bundle(&self.dir, n, committed, committed)?
                .into_iter()
                .enumerate()
            {
                let index = n * TILE_WIDTH + i as u64;
                if (from..to).contains(&index) {
                    out.push(e);
                }
            }
            n += 1;
        }
        Ok(out)
    }

    /// Writes a file durably (temporary file, fsync, rename); returns its directory.
    fn write(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf, LogError> {
        let path = self.dir.join(rel);
        let dir = path.parent().unwrap_or(&self.dir).to_owned();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        crate::durable::replace(&path, bytes).map_err(io(&path))?;
        Ok(dir)
    }

    /// Entry `index` and its inclusion proof in the tree of `size`, from the tiles on disk.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<(Vec<u8>, Vec<Hash>), LogError> {
        let committed = self.committed();
        if index >= size || size > committed {
            return Err(LogError::Inconsistent(format!(
                "no entry {index} in a tree of size {size} (the log has {committed})"
            )));
        }
        let entry = read_bundle(&self.dir, index / TILE_WIDTH, size, committed)?
            .into_iter()
            .nth((index % TILE_WIDTH) as usize)
            .ok_or_else(|| LogError::Inconsistent(format!("entry {index} is missing")))?;
        let proof = prove_record(
            size,
            index,
            &Disk {
                dir: &self.dir,
                size,
                committed,
            },
        )?;
        Ok((entry, proof))
    }

    /// A consistency proof from `old` to `new`, from the tiles on disk.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        let committed = self.committed();
        if old == 0 || old > new || new > committed {
            return Err(LogError::Inconsistent(format!(
                "no consistency proof from size {old} to {new} (the log has {committed})"
            )));
        }
        Ok(prove_tree(
            new,
            old,
            &Disk {
                dir: &self.dir,
                size: new,
                committed,
            },
        )?)
    }

    /// Puts a copy of the log as committed into `dest` (a new directory, or an empty one): the
    /// checkpoint and exactly the tiles and entry bundles it needs, each under its own name.
    /// Files are hard-linked (tile files are never changed in place: a new version of a tile is
    /// a new file renamed over the old name), or copied where a link cannot be made (another
    /// file system).
    /// Taken while the log is held (`&self`), the copy cannot race an append or its pruning,
    /// and it stays whole whatever the log does afterwards. Nothing in `dest` is fsynced: it is
    /// a staging area, to be copied (as `huitong backup` does) or checked ([`verify_dir`]).
    /// Returns the checkpoint copied, `None` for an empty log (nothing is written then).
    pub fn snapshot(&self, dest: &Path) -> Result<Option<SignedCheckpoint>, LogError> {
        let Some(checkpoint) = self.checkpoint.clone() else {
            return Ok(None);
        };
        if self.poisoned {
            return Err(LogError::Inconsistent(
                "an append failed part-way: reopen the log before copying it".into(),
            ));
        }
        let size = checkpoint.size;
        for tile in Tile::new_tiles(TILE_HEIGHT, 0, size) {
            self.snapshot_tile(dest, &tile)?;
            if tile.level() == 0 {
                let bundle = Tile::new(TILE_HEIGHT, 0, tile.level_index(), tile.width(), true);
                self.snapshot_tile(dest, &bundle)?;
            }
        }
        let path = dest.join(CHECKPOINT_FILE);
        crate::durable::replace(&path, &checkpoint.note).map_err(io(&path))?;
        Ok(Some(checkpoint))
    }

    /// Puts `tile` into the snapshot in `dest` (see [`Self::snapshot`]).
    fn snapshot_tile(&self, dest: &Path, tile: &Tile) -> Result<(), LogError> {
        let rel = tile_path(tile);
        let (from, to) = (self.dir.join(&rel), dest.join(&rel));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        if fs::hard_link(&from, &to).is_ok() {
            return Ok(());
        }
        // No link (another file system, or one without links): a copy. A tile missing here
        // is missing from the log itself.
        let bytes = fs::read(&from).map_err(|e| {
            LogError::Inconsistent(format!(
                "{}: {e}: a tile the checkpoint needs is missing; run `huitong audit verify` to check the log",
                from.display()
            ))
        })?;
        crate::durable::replace(&to, &bytes).map_err(io(&to))
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::durable::sync_dir(dir).map_err(io(dir))
}

/// The directory holding the partial tiles at `tile`'s place (`tile/<L>/<N>.p`, or
/// `tile/entries/<N>.p` for `data`), relative to the log's directory.
fn partials_dir(tile: &Tile, data: bool) -> PathBuf {
    let one = Tile::new(TILE_HEIGHT, tile.level(), tile.level_index(), 1, data);
    let rel = tile_path(&one);
    Path::new(&rel)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The widths of the partial tiles in a `.p` directory, narrowest first.
fn partial_widths(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut widths: Vec<u32> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    widths.sort_unstable();
    Ok(widths)
}

/// Removes the partial tiles narrower than `width` in a `.p` directory; returns how many.
fn remove_narrower(dir: &Path, width: u32) -> std::io::Result<u64> {
    let mut n = 0;
    for w in partial_widths(dir)?.into_iter().filter(|&w| w < width) {
        fs::remove_file(dir.join(w.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// How many times [`read_tile`] lists a `.p` directory again when every tile it listed was
/// removed before it could read it (a reader without the log's lock racing the pruning).
const LIST_AGAIN: usize = 3;

/// The bytes of `tile` and the width of the tile file they came from. `committed` is the size of
/// the tree whose tiles may be read (the checkpoint's): no file wider than that tree's tile at
/// this place is ever read, since beyond it a file can only hold what a crash left uncommitted.
///
/// Its own file first; for a partial tile removed once superseded, the narrowest wider tile at
/// the same place that the committed tree holds (the wider partials, narrowest first, then the
/// full tile): its first hashes (entries) are the same. A reader without the log's lock
/// (`verify_dir` on a live log) passes `u64::MAX`: the narrowest wider tile is then the one
/// committed by the newest checkpoint (an uncommitted one is always wider), and a tile pruned
/// while it was being listed is looked for again. Hash tiles come back cut to `tile`'s width;
/// an entry bundle whole ([`read_bundle`] cuts it).
fn read_tile(dir: &Path, tile: &Tile, committed: u64) -> std::io::Result<(Vec<u8>, u32)> {
    let (l, n, data) = (tile.level(), tile.level_index(), tile.is_data());
    let widest = tile_at(l, n, committed, data).map_or(0, |t| t.width());
    if tile.width() > widest {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is beyond the log's checkpoint (size {committed})",
                tile_path(tile)
            ),
        ));
    }
    let missing = match fs::read(dir.join(tile_path(tile))) {
        Ok(bytes) => return Ok((bytes, tile.width())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && u64::from(tile.width()) < TILE_WIDTH =>
        {
            e
        }
        Err(e) => return Err(e),
    };
    for _ in 0..LIST_AGAIN {
        let mut widths: Vec<u32> = partial_widths(&dir.join(partials_dir(tile, data)))
            .unwrap_or_default()
            .into_iter()
            .filter(|&w| w > tile.width() && w <= widest && u64::from(w) < TILE_WIDTH)
            .collect();
        if u64::from(widest) == TILE_WIDTH {
            widths.push(widest);
        }
        for w in widths {
            match fs::read(dir.join(tile_path(&Tile::new(TILE_HEIGHT, l, n, w, data)))) {
                Ok(mut bytes) => {
                    if !data {
                        bytes.truncate(tile.width() as usize * 32);
                    }
                    return Ok((bytes, w));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Err(missing)
}

/// Removes every tile and entry bundle, at every level, beyond the tree of `size` entries (the
/// checkpoint's): full tiles whose range ends past it, partials wider than its own, tiles at
/// places it does not reach, and the temporary files of an interrupted write. They are what a
/// crash between writing a batch's tiles and its checkpoint left: content that was never
/// committed, and that later appends replace with different entries. Failures are logged, not
/// fatal: [`read_tile`] never reads such a file anyway.
fn remove_uncommitted(dir: &Path, size: u64) {
    let mut removed = 0u64;
    remove_uncommitted_under(dir, &dir.join("tile"), size, &mut removed);
    if removed > 0 {
        tracing::info!(target: "huitong::audit", removed, size, "removed tiles a crash left beyond the audit log's checkpoint");
    }
}

fn remove_uncommitted_under(root: &Path, at: &Path, size: u64, removed: &mut u64) {
    let entries = match fs::read_dir(at) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(target: "huitong::audit", dir = %at.display(), error = %e, "cannot list the audit log's tiles to remove uncommitted ones");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            remove_uncommitted_under(root, &path, size, removed);
            // A directory left empty (a `.p` directory, or one of a place beyond the tree).
            if fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none()) {
                let _ = fs::remove_dir(&path);
            }
            continue;
        }
        if !kind.is_file() || !is_uncommitted(root, &path, size) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => *removed += 1,
            Err(e) => {
                tracing::warn!(target: "huitong::audit", file = %path.display(), error = %e, "cannot remove a tile beyond the audit log's checkpoint")
            }
        }
    }
}

/// Whether the file at `path` (under the log directory `root`) is a tile or entry bundle beyond
/// the tree of `size` entries, or a temporary file. Other files are left alone.
fn is_uncommitted(root: &Path, path: &Path, size: u64) -> bool {
    if path.extension().is_some_and(|e| e == "tmp") {
        return true;
    }
    let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
        return false;
    };
    // `<N>.p/0` is no tile (and the path parser does not take it).
    let zero_width = path
        .file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.parse::<u32>() == Ok(0));
    if zero_width {
        return false;
    }
    let Some(tile) = parse_tile_path(rel) else {
        return false;
    };
    let widest =
        tile_at(tile.level(), tile.level_index(), size, tile.is_data()).map_or(0, |t| t.width());
    tile.width() > widest
}

/// The entries of bundle `n` of a tree of `size`, read from files no wider than the tree of
/// `committed` entries holds ([`read_tile`]).
fn read_bundle(dir: &Path, n: u64, size: u64, committed: u64) -> Result<Vec<Vec<u8>>, LogError> {
    let tile = tile_at(0, n, size, true)
        .ok_or_else(|| LogError::Inconsistent(format!("no bundle {n} at size {size}")))?;
    let rel = tile_path(&tile);
    let (bytes, read_width) = read_tile(dir, &tile, committed).map_err(io(&dir.join(&rel)))?;
    let mut entries = decode_bundle(&bytes).map_err(|e| {
        LogError::Inconsistent(format!("{rel}: {e} (first entry {})", n * TILE_WIDTH))
    })?;
    if read_width > tile.width() && entries.len() == read_width as usize {
        // A wider bundle, read for a smaller tree: its first entries are the narrower one's.
        entries.truncate(tile.width() as usize);
    }
    if entries.len() != tile.width() as usize {
        return Err(LogError::Inconsistent(format!(
            "{rel} holds {} entries, expected {} (entries {}..)",
            entries.len(),
            tile.width(),
            n * TILE_WIDTH
        )));
    }
    Ok(entries.into_iter().map(<[u8]>::to_vec).collect())
}

fn read_entries(dir: &Path, size: u64, committed: u64) -> Result<Vec<Vec<u8>>, LogError> {
    let mut out = Vec::with_capacity(size as usize);
    for n in 0..size.div_ceil(TILE_WIDTH) {
        out.extend(read_bundle(dir, n, size, committed)?);
    }
    Ok(out)
}

/// What a full check of the files found.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DiskReport {
    /// Entries checked.
    pub size: u64,
    /// The checkpoint's root (base64).
    pub root: String,
    /// Hash tiles checked.
    pub tiles: u64,
}

/// How many times [`verify_dir`] starts again when the log moved on while it was being checked.
const VERIFY_ATTEMPTS: usize = 4;

/// Checks every file of the log in `dir` against its checkpoint signed by `hub`: each entry's
/// hash against the level-0 tiles, every higher tile against the hashes below it, and the root.
/// The error names the first entry index (or tile) that does not match.
///
/// It needs no lock: the log may grow meanwhile (the hub's appender, a member's mirror). The
/// tiles of the checkpoint it read are then read through [`read_tile`] (once superseded and
/// pruned, from the tile that replaced them, cut to the width this checkpoint needs), and if a
/// check still fails while the checkpoint on disk changed, the whole check starts again from
/// the new checkpoint (up to [`VERIFY_ATTEMPTS`] times). A failure against a checkpoint that
/// stayed the same is the log's own.
pub fn verify_dir(dir: &Path, origin: &str, hub: &NodeId) -> Result<DiskReport, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let mut note = fs::read(&path).map_err(io(&path))?;
    let mut attempt = 1;
    loop {
        let failure = match verify_at(dir, &note, origin, hub) {
            Ok(report) => return Ok(report),
            Err(e) => e,
        };
        let now = fs::read(&path).map_err(io(&path))?;
        if now == note || attempt >= VERIFY_ATTEMPTS {
            return Err(failure);
        }
        tracing::debug!(target: "huitong::audit", attempt, error = %failure, "the audit log moved on during its check; checking its new checkpoint");
        note = now;
        attempt += 1;
    }
}

/// [`verify_dir`] against the checkpoint `note` (the bytes of the `checkpoint` file).
fn verify_at(dir: &Path, note: &[u8], origin: &str, hub: &NodeId) -> Result<DiskReport, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let checkpoint = open_checkpoint(note, origin, hub, &[])
        .map_err(|e| LogError::Inconsistent(format!("{}: {e}", path.display())))?;
    let size = checkpoint.size;
    let mut hashes = Vec::new();
    let entries = read_entries(dir, size, u64::MAX)?;
    for (i, e) in entries.iter().enumerate() {
        let new = stored_hashes(i as u64, e, &Memory(&hashes))?;
        hashes.extend(new);
    }
    let memory = Memory(&hashes);
    let mut tiles = 0;
    for tile in Tile::new_tiles(TILE_HEIGHT, 0, size) {
        let (on_disk, read_width) =
            read_tile(dir, &tile, u64::MAX).map_err(io(&dir.join(tile_path(&tile))))?;
        // The file the bytes came from (a wider one once this tile was superseded).
        let rel = tile_path(&Tile::new(
            TILE_HEIGHT,
            tile.level(),
            tile.level_index(),
            read_width,
            false,
        ));
        let expected = tile.read_data(&memory)?;
        if on_disk != expected {
            let first = on_disk
                .chunks(32)
                .zip(expected.chunks(32))
                .position(|(a, b)| a != b)
                .unwrap_or(0) as u64;
            let span = 1u64 << (u64::from(TILE_HEIGHT) * u64::from(tile.level()));
            let index = (tile.level_index() * TILE_WIDTH + first) * span;
            let what = if tile.level() == 0 {
                let leaf = record_hash(&entries[index as usize]);
                format!(
                    "entry {index}: {rel} holds hash {} but the entry hashes to {leaf}",
                    Hash(
                        on_disk
                            .get(first as usize * 32..first as usize * 32 + 32)
                            .and_then(|s| s.try_into().ok())
                            .unwrap_or_default()
                    ),
                )
            } else {
                format!("entry {index}: {rel} holds a hash that does not match the entries below it (entries {index}..{})", index + span)
            };
            return Err(LogError::Inconsistent(what));
        }
        tiles += 1;
    }
    let root = tree_hash(size, &memory)?;
    if root != checkpoint.root {
        return Err(LogError::Inconsistent(format!(
            "the entries hash to {root}, the signed checkpoint says {}",
            checkpoint.root
        )));
    }
    Ok(DiskReport {
        size,
        root: root.to_string(),
        tiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::audit::RecordKind;

    fn record(i: u64) -> Vec<u8> {
        Record {
            kind: RecordKind::Receipt,
            id: format!("{i:016x}"),
            signer: SecretKey::from_bytes([9; 32]).public(),
            seq: i,
            hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            at_ms: i,
        }
        .encode()
    }

    /// Allocated bytes of every file under `dir` (what `du` counts).
    fn disk_usage(dir: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let (mut files, mut bytes) = (0, 0);
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                let (f, b) = disk_usage(&e.path());
                files += f;
                bytes += b + m.blocks() * 512;
            } else {
                files += 1;
                bytes += m.blocks() * 512;
            }
        }
        (files, bytes)
    }

    /// Issue #10, point 6: a log appended in small batches, as the hub does, keeps no partial
    /// tile once the full tile and a checkpoint covering it are durable; proofs against older,
    /// smaller checkpoints still come out right from the full tiles.
    #[test]
    fn superseded_partial_tiles_are_removed_and_old_proofs_still_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let origin = "huitong.audit/test";
        let mut log = TileLog::open(dir.path(), origin, &key.public()).expect("opens");
        let mut checkpoints = Vec::new();
        let mut n = 0;
        while n < 301 {
            let batch = 12.min(301 - n);
            let c = log
                .append(&key, (n..n + batch).map(record).collect())
                .expect("appends");
            checkpoints.push(c);
            n += batch;
        }
        for gone in ["tile/0/000.p", "tile/entries/000.p"] {
            assert!(!dir.path().join(gone).exists(), "{gone} removed");
        }
        for kept in [
            "tile/0/000",
            "tile/entries/000",
            "tile/0/001.p/45",
            "tile/entries/001.p/45",
            "tile/1/000.p/1",
        ] {
            assert!(dir.path().join(kept).is_file(), "{kept} kept");
        }
        // Narrower partials of tile 001 (widths 8, 20, 32, 44) went when wider ones came.
        for p in ["tile/0/001.p", "tile/entries/001.p"] {
            assert_eq!(
                partial_widths(&dir.path().join(p)).expect("dir"),
                vec![45],
                "{p}"
            );
        }
        let (files, bytes) = disk_usage(dir.path());
        eprintln!(
            "301 entries in {} appends: {files} files, {bytes} bytes on disk",
            checkpoints.len()
        );
        verify_dir(dir.path(), origin, &key.public()).expect("files verify");
        // Every older checkpoint: inclusion of its first and last entries, and consistency
        // with the latest, all read from the tiles now on disk.
        let last = checkpoints.last().expect("checkpoints").clone();
        for c in &checkpoints {
            for index in [0, c.size / 2, c.size - 1] {
                let (entry, proof) = log.inclusion(index, c.size).expect("proves");
                assert_eq!(entry, record(index));
                huitong_protocol::audit::proof::check_inclusion(
                    &proof,
                    c,
                    index,
                    record_hash(&entry),
                )
                .expect("inclusion checks");
            }
            if c.size < last.size {
                let p = log.consistency(c.size, last.size).expect("consistency");
                tlog_tiles::check_tree(&p, last.size, last.root, c.size, c.root)
                    .expect("consistent");
            }
        }
        // Reopening (which also cleans up after a crash) keeps it all.
        drop(log);
        let log = TileLog::open(dir.path(), origin, &key.public()).expect("reopens");
        assert_eq!(log.size(), 301);
        assert_eq!(log.entries(0, 301).expect("entries").len(), 301);
    }

    /// What an older node (or a crash before the clean-up) left is removed at open.
    #[test]
    fn partial_tiles_left_behind_are_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let origin = "huitong.audit/test";
        let mut log = TileLog::open(dir.path(), origin, &key.public()).expect("opens");
        log.append(&key, (0..300).map(record).collect())
            .expect("appends");
        drop(log);
        let stale = dir.path().join("tile/0/000.p/100");
        fs::create_dir_all(stale.parent().expect("parent")).expect("dir");
        fs::write(&stale, [0u8; 3200]).expect("stale partial");
        let log = TileLog::open(dir.path(), origin, &key.public()).expect("reopens");
        assert!(!dir.path().join("tile/0/000.p").exists());
        assert_eq!(log.size(), 300);
    }

    const ORIGIN: &str = "huitong.audit/test";

    /// A log in `dir` holding `record(0..n)`, appended in the batch sizes given.
    fn log_of(dir: &Path, key: &SecretKey, batches: &[u64]) -> (TileLog, Vec<SignedCheckpoint>) {
        let mut log = TileLog::open(dir, ORIGIN, &key.public()).expect("opens");
        let mut checkpoints = Vec::new();
        let mut n = log.size();
        for &b in batches {
            checkpoints.push(
                log.append(key, (n..n + b).map(record).collect())
                    .expect("appends"),
            );
            n += b;
        }
        (log, checkpoints)
    }

    /// Every file under `dir`, relative to it.
    fn files(dir: &Path) -> BTreeSet<String> {
        fn walk(root: &Path, at: &Path, out: &mut BTreeSet<String>) {
            for e in fs::read_dir(at).expect("dir").flatten() {
                if e.file_type().expect("type").is_dir() {
                    walk(root, &e.path(), out);
                } else {
                    let rel = e.path().strip_prefix(root).expect("under").to_owned();
                    out.insert(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(dir, dir, &mut out);
        out
    }

    /// Checks inclusion of `index` in, and consistency of `old` with, checkpoint `c`.
    fn proves(log: &TileLog, c: &SignedCheckpoint, index: u64, old: &SignedCheckpoint) {
        let (entry, proof) = log.inclusion(index, c.size).expect("proves");
        assert_eq!(entry, record(index), "entry {index} at size {}", c.size);
        huitong_protocol::audit::proof::check_inclusion(&proof, c, index, record_hash(&entry))
            .unwrap_or_else(|e| panic!("inclusion of {index} at size {}: {e}", c.size));
        if old.size < c.size {
            let p = log.consistency(old.size, c.size).expect("consistency");
            tlog_tiles::check_tree(&p, c.size, c.root, old.size, old.root)
                .unwrap_or_else(|e| panic!("consistency {} → {}: {e}", old.size, c.size));
        }
    }

    /// Review 10, M2: a crash between a batch's tiles and its checkpoint leaves tiles beyond the
    /// checkpoint (here a full `tile/0/005`, its bundle, and tiles of places further on) holding
    /// entries that were never committed. After the restart other entries take those positions;
    /// once the committed partials are pruned, proofs against the older, smaller checkpoints
    /// must still come from committed tiles, never from what the crash left.
    #[test]
    fn tiles_a_crash_left_beyond_the_checkpoint_never_serve_proofs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let (log, cps) = log_of(dir.path(), &key, &[1280, 17]);
        let c17 = cps[1].clone();
        drop(log);
        // What the crashed batch wrote: the same 1297 entries, then 242 others (positions
        // 1297..1539, which the hub later fills with different records).
        let other = tempfile::tempdir().expect("tempdir");
        let mut crashed = TileLog::open(other.path(), ORIGIN, &key.public()).expect("opens");
        crashed
            .append(&key, (0..1297).map(record).collect())
            .expect("appends");
        crashed
            .append(&key, (1297..1539).map(|i| record(1_000_000 + i)).collect())
            .expect("appends");
        let committed = files(dir.path());
        let left: Vec<String> = files(other.path())
            .difference(&committed)
            .filter(|f| f.starts_with("tile/"))
            .cloned()
            .collect();
        for f in [
            "tile/0/005",
            "tile/entries/005",
            "tile/0/006.p/3",
            "tile/1/000.p/6",
        ] {
            assert!(left.iter().any(|l| l == f), "{f} in {left:?}");
        }
        for f in &left {
            let to = dir.path().join(f);
            fs::create_dir_all(to.parent().expect("parent")).expect("dir");
            fs::copy(other.path().join(f), &to).expect("copy");
        }
        fs::write(dir.path().join("tile/0/006.p/3.tmp"), b"half").expect("temporary file");

        // The restart: what the crash left goes, the committed tiles stay.
        let mut log = TileLog::open(dir.path(), ORIGIN, &key.public()).expect("reopens");
        assert_eq!(log.size(), 1297);
        assert_eq!(
            files(dir.path()),
            committed,
            "only the committed files are left"
        );
        let c27 = log
            .append(&key, (1297..1307).map(record).collect())
            .expect("appends");
        let c35 = log
            .append(&key, (1307..1315).map(record).collect())
            .expect("appends");
        assert!(!dir.path().join("tile/0/005.p/27").exists(), "pruned");
        for index in [1290, 1296, 1297, 1300, 1306] {
            proves(&log, &c27, index, &c17);
        }
        proves(&log, &c35, 1314, &c27);
        assert_eq!(
            log.entries(1297, 18).expect("entries"),
            (1297..1315).map(record).collect::<Vec<_>>()
        );
        verify_dir(dir.path(), ORIGIN, &key.public()).expect("files verify");

        // Were such a file to appear while the log is open (an append that failed part-way),
        // no read takes it either: nothing wider than the committed tile is read.
        for f in ["tile/0/005", "tile/entries/005"] {
            fs::copy(other.path().join(f), dir.path().join(f)).expect("copy");
        }
        for index in [1290, 1300] {
            proves(&log, &c27, index, &c17);
        }
        assert_eq!(log.entries(1300, 1).expect("entries"), vec![record(1300)]);
        // And with the committed tile gone too (a damaged log), a proof fails loudly rather
        // than come from the uncommitted file.
        for f in ["tile/0/005.p/35", "tile/entries/005.p/35"] {
            fs::remove_file(dir.path().join(f)).expect("remove");
        }
        assert!(log.inclusion(1290, c27.size).is_err());
        assert!(log.entries(1300, 1).is_err());
    }

    /// Review 10, M3: `huitong audit verify` checks the files without the log's lock while the
    /// hub appends (every 100 ms) or a member's mirror grows, and every append prunes the
    /// partial tiles the previous checkpoint needed. Every check must still succeed.
    #[test]
    fn verify_dir_succeeds_while_the_log_grows_and_prunes() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let (mut log, _) = log_of(dir.path(), &key, &[3000]);
        let stop = Arc::new(AtomicBool::new(false));
        let checked = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let verifier = {
            let (path, hub) = (dir.path().to_owned(), key.public());
            let (stop, checked, failed) = (stop.clone(), checked.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut sizes = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match verify_dir(&path, ORIGIN, &hub) {
                        Ok(r) => sizes.push(r.size),
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            return Err(format!("check {}: {e}", sizes.len() + 1));
                        }
                    }
                    checked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(sizes)
            })
        };
        // Small batches, as the hub appends: each one supersedes (and prunes) the partials the
        // previous checkpoint needed. At least 200 appends and 10 checks overlapping them,
        // bounded: 5,000 appends at most.
        let mut n = log.size();
        let mut appends = 0;
        while appends < 5_000
            && !failed.load(Ordering::SeqCst)
            && (appends < 200 || checked.load(Ordering::SeqCst) < 10)
        {
            log.append(&key, (n..n + 3).map(record).collect())
                .expect("appends");
            n += 3;
            appends += 1;
        }
        stop.store(true, Ordering::SeqCst);
        let sizes = verifier
            .join()
            .expect("verifier thread")
            .unwrap_or_else(|e| panic!("verify_dir failed while the log grew: {e}"));
        assert!(
            sizes.len() >= 10,
            "only {} checks in {appends} appends",
            sizes.len()
        );
        assert!(sizes.iter().all(|&s| (3000..=n).contains(&s)), "{sizes:?}");
        assert_eq!(
            verify_dir(dir.path(), ORIGIN, &key.public())
                .expect("verifies")
                .size,
            n
        );
    }

    /// Review 10, M4: a copy of a live log for a backup holds the checkpoint and exactly the
    /// tiles it needs, and stays whole however the log moves on afterwards (here past a tile
    /// boundary, which prunes the partials the copied checkpoint needs).
    #[test]
    fn a_snapshot_holds_what_its_checkpoint_needs_while_the_log_moves_on() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let empty = TileLog::open(dir.path(), ORIGIN, &key.public()).expect("opens");
        let out = tempfile::tempdir().expect("tempdir");
        assert!(empty
            .snapshot(&out.path().join("none"))
            .expect("snapshot")
            .is_none());
        assert!(
            !out.path().join("none").exists(),
            "nothing written for an empty log"
        );
        drop(empty);
        let (mut log, cps) = log_of(dir.path(), &key, &[1000, 280, 10, 7]);
        let c = cps[3].clone();
        let snap = out.path().join("audit");
        assert_eq!(log.snapshot(&snap).expect("snapshot"), Some(c.clone()));
        let mut expected: BTreeSet<String> = (0..5)
            .flat_map(|n| [format!("tile/0/00{n}"), format!("tile/entries/00{n}")])
            .collect();
        expected.extend(
            [
                "checkpoint",
                "tile/0/005.p/17",
                "tile/entries/005.p/17",
                "tile/1/000.p/5",
            ]
            .map(String::from),
        );
        assert_eq!(files(&snap), expected, "exactly what the checkpoint needs");
        let inode = |p: &Path| fs::metadata(p).expect("metadata").ino();
        assert_eq!(
            inode(&snap.join("tile/0/005.p/17")),
            inode(&dir.path().join("tile/0/005.p/17")),
            "hard-linked"
        );
        // The log moves on past the tile boundary: 005.p goes from the live directory.
        log.append(&key, (1297..1540).map(record).collect())
            .expect("appends");
        log.append(&key, (1540..1545).map(record).collect())
            .expect("appends");
        assert!(!dir.path().join("tile/0/005.p").exists(), "pruned");
        assert_eq!(files(&snap), expected, "the copy does not move");
        let report = verify_dir(&snap, ORIGIN, &key.public()).expect("the copy verifies");
        assert_eq!((report.size, report.root), (1297, c.root.to_string()));
        let copy = TileLog::open(&snap, ORIGIN, &key.public()).expect("the copy opens");
        proves(&copy, &c, 1290, &cps[0]);
    }

    #[test]
    fn append_reopen_prove_and_detect_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SecretKey::from_bytes([7; 32]);
        let origin = "huitong.audit/test";
        let mut log = TileLog::open(dir.path(), origin, &key.public()).expect("opens");
        // Batches across bundle boundaries: 1, 300, 200 → 501 entries, 2 full bundles + 1 partial.
        let mut n = 0;
        for batch in [1u64, 300, 200] {
            let entries = (n..n + batch).map(record).collect();
            let c = log.append(&key, entries).expect("appends");
            n += batch;
            assert_eq!(c.size, n);
        }
        let c = log.checkpoint().expect("checkpoint").clone();
        drop(log);
        let log = TileLog::open(dir.path(), origin, &key.public()).expect("reopens");
        assert_eq!(log.size(), 501);
        assert_eq!(log.find(&format!("{:016x}", 300)), vec![300]);
        for index in [0, 255, 256, 300, 500] {
            let (entry, proof) = log.inclusion(index, 501).expect("proves");
            assert_eq!(entry, record(index));
            huitong_protocol::audit::proof::check_inclusion(&proof, &c, index, record_hash(&entry))
                .expect("inclusion checks");
        }
        let p = log.consistency(1, 501).expect("consistency");
        let first = tree_hash(1, &Memory(&log.hashes)).expect("root of 1");
        tlog_tiles::check_tree(&p, 501, c.root, 1, first).expect("consistent");
        verify_dir(dir.path(), origin, &key.public()).expect("files verify");

        // Flip a byte of the hash of entry 300 in its level-0 tile.
        let tile = dir.path().join("tile/0/001.p/245");
        let mut bytes = fs::read(&tile).expect("tile");
        bytes[(300 - 256) * 32] ^= 1;
        fs::write(&tile, bytes).expect("write");
        let e = verify_dir(dir.path(), origin, &key.public()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("audit log: entry 300: tile/0/001.p/245 holds hash"),
            "{e}"
        );
        // A proof that passes through the tampered hash (entry 301's sibling) no longer checks.
        let (entry, proof) = log.inclusion(301, 501).expect("proof still computes");
        assert!(huitong_protocol::audit::proof::check_inclusion(
            &proof,
            &c,
            301,
            record_hash(&entry)
        )
        .is_err());
    }
}
