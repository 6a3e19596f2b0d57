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
//! Proofs are computed from the tiles **on disk** (not from memory), so a tampered tile gives a
//! proof that members' checks refuse; [`verify_dir`] checks every file against the checkpoint.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use huitong_protocol::audit::note::{open_checkpoint, sign_checkpoint, SignedCheckpoint};
use huitong_protocol::audit::{
    decode_bundle, encode_bundle, tile_path, Record, TILE_HEIGHT, TILE_WIDTH,
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

/// Hashes read from the hash tiles on disk, for a tree of `size` entries.
struct Disk<'a> {
    dir: &'a Path,
    size: u64,
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
                        fs::read(self.dir.join(tile_path(&tile)))
                            .map_err(|_| tlog_tiles::Error::InvalidTile)?,
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
        let checkpoint = open_checkpoint(&note, origin, hub, &[])
            .map_err(|e| LogError::Inconsistent(format!("{}: {e}", path.display())))?;
        for (i, entry) in read_entries(dir, checkpoint.size)?.into_iter().enumerate() {
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
        Ok(checkpoint)
    }

    /// Up to `count` entries from `from`, read from the bundles on disk.
    pub fn entries(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let to = from.saturating_add(count).min(self.size);
        let mut out = Vec::new();
        let mut n = from / TILE_WIDTH;
        while n * TILE_WIDTH < to {
            for (i, e) in read_bundle(&self.dir, n, self.size)?
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
        if index >= size || size > self.size {
            return Err(LogError::Inconsistent(format!(
                "no entry {index} in a tree of size {size} (the log has {})",
                self.size
            )));
        }
        let entry = read_bundle(&self.dir, index / TILE_WIDTH, size)?
            .into_iter()
            .nth((index % TILE_WIDTH) as usize)
            .ok_or_else(|| LogError::Inconsistent(format!("entry {index} is missing")))?;
        let proof = prove_record(
            size,
            index,
            &Disk {
                dir: &self.dir,
                size,
            },
        )?;
        Ok((entry, proof))
    }

    /// A consistency proof from `old` to `new`, from the tiles on disk.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        if old == 0 || old > new || new > self.size {
            return Err(LogError::Inconsistent(format!(
                "no consistency proof from size {old} to {new} (the log has {})",
                self.size
            )));
        }
        Ok(prove_tree(
            new,
            old,
            &Disk {
                dir: &self.dir,
                size: new,
            },
        )?)
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::durable::sync_dir(dir).map_err(io(dir))
}

/// The entries of bundle `n` of a tree of `size`.
fn read_bundle(dir: &Path, n: u64, size: u64) -> Result<Vec<Vec<u8>>, LogError> {
    let tile = tile_at(0, n, size, true)
        .ok_or_else(|| LogError::Inconsistent(format!("no bundle {n} at size {size}")))?;
    let rel = tile_path(&tile);
    let path = dir.join(&rel);
    let bytes = fs::read(&path).map_err(io(&path))?;
    let entries = decode_bundle(&bytes).map_err(|e| {
        LogError::Inconsistent(format!("{rel}: {e} (first entry {})", n * TILE_WIDTH))
    })?;
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

fn read_entries(dir: &Path, size: u64) -> Result<Vec<Vec<u8>>, LogError> {
    let mut out = Vec::with_capacity(size as usize);
    for n in 0..size.div_ceil(TILE_WIDTH) {
        out.extend(read_bundle(dir, n, size)?);
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

/// Checks every file of the log in `dir` against its checkpoint signed by `hub`: each entry's
/// hash against the level-0 tiles, every higher tile against the hashes below it, and the root.
/// The error names the first entry index (or tile) that does not match.
pub fn verify_dir(dir: &Path, origin: &str, hub: &NodeId) -> Result<DiskReport, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let note = fs::read(&path).map_err(io(&path))?;
    let checkpoint = open_checkpoint(&note, origin, hub, &[])
        .map_err(|e| LogError::Inconsistent(format!("{}: {e}", path.display())))?;
    let size = checkpoint.size;
    let mut hashes = Vec::new();
    let entries = read_entries(dir, size)?;
    for (i, e) in entries.iter().enumerate() {
        let new = stored_hashes(i as u64, e, &Memory(&hashes))?;
        hashes.extend(new);
    }
    let memory = Memory(&hashes);
    let mut tiles = 0;
    for tile in Tile::new_tiles(TILE_HEIGHT, 0, size) {
        let rel = tile_path(&tile);
        let on_disk = fs::read(dir.join(&rel)).map_err(io(&dir.join(&rel)))?;
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
