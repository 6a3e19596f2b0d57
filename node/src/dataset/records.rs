//! Dataset records in RocksDB: the version announcements every node learns from the feeds
//! (`datasets`, a view over the feeds: [`View`]), and the manifests this node holds
//! (`manifests`) with whether all their chunks are here and verified.
//!
//! Layering: a view over [`crate::feeds`] (registered by the daemon), beside the catalogue; it
//! names no other view.

use huitong_protocol::dataset::{ChunkHash, DatasetVersion};
use huitong_protocol::{codec, Event, NodeId};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::feeds::{Accepted, Applied};
use crate::state::NodeState;
use crate::store::{Store, StoreError, CF_DATASETS, CF_MANIFESTS};

/// A manifest held by this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredManifest {
    /// The sealed manifest envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// All chunks are stored, verified and synced: the version is visible as complete.
    pub complete: bool,
    /// When this node stored it (ms; 0 in records of older versions): how long a newer version
    /// has been held decides when an older one is let go (`dataset::gc`).
    #[serde(default)]
    pub held_at_ms: u64,
}

fn prefix(feed: &NodeId, code: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + code.len() + 9);
    k.extend_from_slice(&feed.0);
    k.extend_from_slice(code.as_bytes());
    k.push(0);
    k
}

fn corrupt(cf: &'static str) -> impl Fn(codec::DecodeError) -> StoreError {
    move |e| StoreError::Corrupt {
        cf,
        detail: e.to_string(),
    }
}

/// The dataset versions announced in the feeds, as a view.
pub struct View;

impl crate::feeds::View for View {
    fn reset(&self, state: &NodeState, batch: &mut WriteBatch) -> Result<(), StoreError> {
        state.store.clear(batch, CF_DATASETS)
    }

    fn apply(&self, state: &NodeState, batch: &mut WriteBatch, a: &Accepted<'_>) -> Applied {
        let e = &a.entry.entry;
        if let Event::DatasetPublished(d) = &e.event {
            stage_version(&state.store, batch, &e.feed, d);
        }
        Ok(Vec::new())
    }
}

/// Stages a version announcement of `feed`.
fn stage_version(store: &Store, batch: &mut WriteBatch, feed: &NodeId, d: &DatasetVersion) {
    let mut k = prefix(feed, d.code.as_str());
    k.extend_from_slice(&d.version.to_be_bytes());
    batch.put_cf(store.cf(CF_DATASETS), k, codec::encode(d));
}

/// All announced versions of `feed`'s resource `code`, oldest first.
pub fn versions(
    store: &Store,
    feed: &NodeId,
    code: &str,
) -> Result<Vec<DatasetVersion>, StoreError> {
    let p = prefix(feed, code);
    let mut out = Vec::new();
    let it = store.db().iterator_cf(
        store.cf(CF_DATASETS),
        IteratorMode::From(&p, Direction::Forward),
    );
    for item in it {
        let (k, v) = item?;
        if !k.starts_with(&p) {
            break;
        }
        out.push(codec::decode(&v, usize::MAX).map_err(corrupt(CF_DATASETS))?);
    }
    Ok(out)
}

/// One version (`None`: the latest). A point read either way (a service answers every call
/// from the latest version, however many a resource has).
pub fn version(
    store: &Store,
    feed: &NodeId,
    code: &str,
    version: Option<u64>,
) -> Result<Option<DatasetVersion>, StoreError> {
    let mut k = prefix(feed, code);
    let Some(v) = version else {
        return latest(store, k);
    };
    k.extend_from_slice(&v.to_be_bytes());
    store
        .db()
        .get_cf(store.cf(CF_DATASETS), &k)?
        .map(|v| codec::decode(&v, usize::MAX).map_err(corrupt(CF_DATASETS)))
        .transpose()
}

/// The highest version under `prefix` (a feed's resource): the last key of the prefix, read
/// backwards from past its largest version number.
fn latest(store: &Store, prefix: Vec<u8>) -> Result<Option<DatasetVersion>, StoreError> {
    let mut past = prefix.clone();
    past.extend_from_slice(&[0xff; 9]);
    let mut it = store.db().iterator_cf(
        store.cf(CF_DATASETS),
        IteratorMode::From(&past, Direction::Reverse),
    );
    match it.next().transpose()? {
        // A code holds no 0 byte, so a key under the prefix is this resource's.
        Some((k, v)) if k.starts_with(&prefix) => Ok(Some(
            codec::decode(&v, usize::MAX).map_err(corrupt(CF_DATASETS))?,
        )),
        _ => Ok(None),
    }
}

/// Stores a manifest envelope (durably).
pub fn put_manifest(store: &Store, hash: &ChunkHash, m: &StoredManifest) -> Result<(), StoreError> {
    let w = store.writer();
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(CF_MANIFESTS), hash.0, codec::encode(m));
    store.commit(&w, batch, true)
}

/// Every held manifest, by hash.
pub fn manifests(store: &Store) -> Result<Vec<(ChunkHash, StoredManifest)>, StoreError> {
    let mut out = Vec::new();
    for item in store
        .db()
        .iterator_cf(store.cf(CF_MANIFESTS), IteratorMode::Start)
    {
        let (k, v) = item?;
        let hash = <[u8; 32]>::try_from(&k[..]).map_err(|_| StoreError::Corrupt {
            cf: CF_MANIFESTS,
            detail: format!("a key of {} bytes", k.len()),
        })?;
        let m = codec::decode(&v, usize::MAX).map_err(corrupt(CF_MANIFESTS))?;
        out.push((ChunkHash(hash), m));
    }
    Ok(out)
}

/// Removes held manifests (durably), so the versions they describe are no longer held here.
pub fn drop_manifests(store: &Store, hashes: &[ChunkHash]) -> Result<(), StoreError> {
    let w = store.writer();
    let mut batch = WriteBatch::default();
    for h in hashes {
        batch.delete_cf(store.cf(CF_MANIFESTS), h.0);
    }
    store.commit(&w, batch, true)
}

/// A held manifest.
pub fn manifest(store: &Store, hash: &ChunkHash) -> Result<Option<StoredManifest>, StoreError> {
    store
        .db()
        .get_cf(store.cf(CF_MANIFESTS), hash.0)?
        .map(|v| codec::decode(&v, usize::MAX).map_err(corrupt(CF_MANIFESTS)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::ResourceCode;

    fn announce(store: &Store, feed: &NodeId, code: &str, version: u64) {
        let d = DatasetVersion {
            code: ResourceCode::parse(code).unwrap(),
            version,
            manifest: ChunkHash([version as u8; 32]),
            rows: Some(version),
            bytes: 1,
            chunks: 1,
            created_at_ms: version,
        };
        let mut batch = WriteBatch::default();
        stage_version(store, &mut batch, feed, &d);
        store.db().write(batch).unwrap();
    }

    #[test]
    fn the_latest_version_is_the_highest_of_that_resource_alone() {
        let (_dir, state) = crate::state::testing::department(&NodeId([9; 32]));
        let store = &state.store;
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        assert_eq!(version(store, &a, "301001/000002", None).unwrap(), None);
        for v in [3, 1, 300, 2] {
            announce(store, &a, "301001/000002", v);
        }
        // Neighbours in key order: the code after it, and the next feed's same code.
        announce(store, &a, "301001/000003", 900);
        announce(store, &b, "301001/000002", 901);
        announce(store, &a, "301001/000001", 902);
        let latest = version(store, &a, "301001/000002", None).unwrap().unwrap();
        assert_eq!(
            (latest.version, latest.code.as_str()),
            (300, "301001/000002")
        );
        assert_eq!(
            version(store, &a, "301001/000002", Some(2))
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(version(store, &a, "301001/000002", Some(4)).unwrap(), None);
        assert_eq!(version(store, &b, "301001/000001", None).unwrap(), None);
        assert_eq!(
            version(store, &b, "301001/000002", None)
                .unwrap()
                .unwrap()
                .version,
            901
        );
        let all: Vec<u64> = versions(store, &a, "301001/000002")
            .unwrap()
            .iter()
            .map(|d| d.version)
            .collect();
        assert_eq!(all, vec![1, 2, 3, 300]);
    }
}
