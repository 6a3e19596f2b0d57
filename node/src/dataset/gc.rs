//! Garbage collection of the chunk store: which dataset versions this node keeps, and removing
//! the chunk files no kept version needs.
//!
//! What is kept (conservative: a chunk is removed only when no kept manifest names it):
//! - every version this node published, whatever its age: the node serves all of them;
//! - of another provider's resource, the newest version this node holds a manifest of (pulled,
//!   or being pulled), and each older one until `grace` after the newest arrived; then the older
//!   one's manifest record is removed (durably, before any chunk), so pulling that version again
//!   fetches what it lacks;
//! - nothing else: chunk files no kept manifest names — chunks of superseded versions, of a
//!   publish that failed half-way — are removed.
//!
//! It runs only under the chunk store's exclusive lease ([`crate::chunks::ChunkStore::try_exclusive`]),
//! never beside a publish or a pull: then it does nothing and says so ([`GcError::Busy`]), and
//! the next run tries again. A held manifest that cannot be read stops it before anything is
//! removed.
//!
//! Layering: beside the dataset records it reads; the housekeeping task and the admin API call it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use huitong_protocol::dataset::{ChunkHash, Manifest, MAX_MANIFEST_BYTES};
use huitong_protocol::{codec, Envelope, Kind, NodeId};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::records::{self, StoredManifest};
use crate::chunks::ChunkError;
use crate::state::{now_ms, NodeState};
use crate::store::StoreError;

/// What one collection did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Versions whose chunks are kept.
    pub versions_kept: u64,
    /// Older versions of other providers let go (their manifests removed).
    pub versions_dropped: Vec<DroppedVersion>,
    /// Chunk files kept.
    pub chunks_kept: u64,
    /// Their bytes.
    pub bytes_kept: u64,
    /// Chunk files removed.
    pub chunks_removed: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Time taken.
    pub elapsed_ms: u64,
}

/// A version let go.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DroppedVersion {
    /// The provider's node key.
    pub provider: NodeId,
    /// Resource code.
    pub code: String,
    /// Version.
    pub version: u64,
}

/// Why nothing (or not everything) was collected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// A publish or a pull is running.
    #[error("a publish or a pull is running; nothing was removed (the chunk store is collected when none is: run `huitong gc` again later)")]
    Busy,
    /// A held manifest does not decode.
    #[error("held manifest {hash} cannot be read ({detail}); nothing was removed")]
    Manifest {
        /// Its hash.
        hash: ChunkHash,
        /// Why.
        detail: String,
    },
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Chunk store failure.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

fn decode(hash: &ChunkHash, m: &StoredManifest) -> Result<Manifest, GcError> {
    let bad = |detail: String| GcError::Manifest {
        hash: *hash,
        detail,
    };
    let env = Envelope::open_limited(&m.envelope, Kind::Manifest, MAX_MANIFEST_BYTES)
        .map_err(|e| bad(e.to_string()))?;
    codec::decode(env.payload(), MAX_MANIFEST_BYTES).map_err(|e| bad(e.to_string()))
}

/// Decides which held manifests to keep: `(kept, dropped)`.
fn choose(
    me: &NodeId,
    held: Vec<(ChunkHash, StoredManifest, Manifest)>,
    now: u64,
    grace: Duration,
) -> (Vec<Manifest>, Vec<(ChunkHash, Manifest)>) {
    // The newest held version of each other provider's resource, and when it arrived.
    let mut newest: HashMap<(NodeId, String), (u64, u64)> = HashMap::new();
    for (_, s, m) in &held {
        if m.provider == *me {
            continue;
        }
        let e = newest
            .entry((m.provider, m.code.to_string()))
            .or_insert((m.version, s.held_at_ms));
        if m.version > e.0 {
            *e = (m.version, s.held_at_ms);
        }
    }
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (hash, _, m) in held {
        let keep = m.provider == *me
            || newest
                .get(&(m.provider, m.code.to_string()))
                .is_none_or(|&(v, at)| m.version >= v || now < at.saturating_add(grace_ms));
        if keep {
            kept.push(m);
        } else {
            dropped.push((hash, m));
        }
    }
    (kept, dropped)
}

/// Collects the chunk store once (see the module doc).
pub fn collect(state: &NodeState, grace: Duration) -> Result<GcReport, GcError> {
    let started = Instant::now();
    let exclusive = state.chunks.try_exclusive().ok_or(GcError::Busy)?;
    let mut held = Vec::new();
    for (hash, stored) in records::manifests(&state.store)? {
        let m = decode(&hash, &stored)?;
        held.push((hash, stored, m));
    }
    let (kept, dropped) = choose(&state.id(), held, now_ms(), grace);
    // The records go first: a version is never held as complete without its chunks.
    let hashes: Vec<ChunkHash> = dropped.iter().map(|(h, _)| *h).collect();
    records::drop_manifests(&state.store, &hashes)?;
    let needed: HashSet<ChunkHash> = kept
        .iter()
        .flat_map(|m| m.chunks().chain(m.change_chunks()).map(|c| c.hash))
        .collect();
    let mut report = GcReport {
        versions_kept: kept.len() as u64,
        versions_dropped: dropped
            .into_iter()
            .map(|(_, m)| DroppedVersion {
                provider: m.provider,
                code: m.code.to_string(),
                version: m.version,
            })
            .collect(),
        ..GcReport::default()
    };
    for chunk in state.chunks.list()? {
        if needed.contains(&chunk.hash) {
            report.chunks_kept += 1;
            report.bytes_kept += chunk.len;
        } else {
            state.chunks.remove(&exclusive, &chunk.hash)?;
            report.chunks_removed += 1;
            report.bytes_freed += chunk.len;
        }
    }
    if report.chunks_removed > 0 {
        // Removed rows give their space back only as compaction reaches them.
        state.chunks.reclaim(&exclusive);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    for d in &report.versions_dropped {
        info!(provider = %d.provider, code = %d.code, version = d.version, "let go of a superseded dataset version");
    }
    info!(
        chunks_removed = report.chunks_removed,
        bytes_freed = report.bytes_freed,
        chunks_kept = report.chunks_kept,
        bytes_kept = report.bytes_kept,
        versions_kept = report.versions_kept,
        elapsed_ms = report.elapsed_ms,
        "chunk store collected"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::dataset::{Body, ChunkRef, MANIFEST_VERSION};
    use huitong_protocol::{ResourceCode, SecretKey};

    fn manifest(provider: &SecretKey, code: &str, version: u64) -> Manifest {
        Manifest {
            layout: MANIFEST_VERSION,
            provider: provider.public(),
            code: ResourceCode::parse(code).unwrap(),
            version,
            created_at_ms: 0,
            body: Body::File {
                name: "f".into(),
                chunks: vec![ChunkRef {
                    hash: ChunkHash::of(&version.to_be_bytes()),
                    len: 8,
                }],
            },
            rejects: None,
            changes: None,
        }
    }

    fn held(m: Manifest, held_at_ms: u64) -> (ChunkHash, StoredManifest, Manifest) {
        let sealed = m.seal(&SecretKey::from_bytes([1; 32]));
        (
            sealed.hash,
            StoredManifest {
                envelope: sealed.bytes,
                complete: true,
                held_at_ms,
            },
            m,
        )
    }

    #[test]
    fn own_versions_stay_and_superseded_ones_go_after_the_grace() {
        let (me, other) = (
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([2; 32]),
        );
        let code = "301001/000001";
        let grace = Duration::from_secs(100);
        let all = || {
            vec![
                held(manifest(&me, code, 1), 0),
                held(manifest(&me, code, 2), 0),
                held(manifest(&other, code, 1), 0),
                held(manifest(&other, code, 2), 1_000_000),
                held(manifest(&other, "301001/000002", 1), 0),
            ]
        };
        let versions = |v: &[Manifest]| {
            let mut v: Vec<_> = v
                .iter()
                .map(|m| (m.provider == me.public(), m.code.to_string(), m.version))
                .collect();
            v.sort();
            v
        };
        // Within the grace after v2 arrived, v1 is still kept.
        let (kept, dropped) = choose(&me.public(), all(), 1_000_000 + 99_999, grace);
        assert_eq!(kept.len(), 5);
        assert!(dropped.is_empty());
        // After it, only the other provider's v1 goes; own versions all stay.
        let (kept, dropped) = choose(&me.public(), all(), 1_000_000 + 100_000, grace);
        let gone: Vec<Manifest> = dropped.into_iter().map(|(_, m)| m).collect();
        assert_eq!(versions(&gone), vec![(false, code.to_string(), 1)]);
        assert_eq!(
            versions(&kept),
            vec![
                (false, code.to_string(), 2),
                (false, "301001/000002".to_string(), 1),
                (true, code.to_string(), 1),
                (true, code.to_string(), 2),
            ]
        );
    }
}
