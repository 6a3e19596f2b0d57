//! `huitong audit verify` and `export-proof`: proving records' inclusion against checkpoints
//! this node has checked itself, checking proof files offline, and checking the log as a whole
//! (on the hub, every tile on disk; on every node, the checkpoints seen, any split view or
//! withheld proof, and any omission). Records are proved only against **final** checkpoints
//! (with the charter's witness quorum); a record only in a newer one is *pending witness*.

use std::sync::Arc;

use huitong_protocol::audit::note::SignedCheckpoint;
use huitong_protocol::audit::proof::{check_inclusion, TlogProof};
use huitong_protocol::audit::{Record, RecordKind};
use serde::{Deserialize, Serialize};
use tlog_tiles::{record_hash, Hash};

use super::{client, watch};
use crate::audit::appender::on_log;
use crate::audit::{checkpoints, is_final, keys, omission, quorum};
use crate::audit_log::tiles::{self, verify_dir, DiskReport};
use crate::link::Transport;
use crate::state::NodeState;

/// A checkpoint, for people.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Tree size.
    pub size: u64,
    /// Root hash (base64).
    pub root: String,
    /// Names of the witnesses whose cosignature verified.
    pub cosigned_by: Vec<String>,
}

/// One record proved to be in the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordReport {
    /// Entry index.
    pub index: u64,
    /// Record kind.
    pub kind: String,
    /// Record id.
    pub id: String,
    /// Who signed the event (member name, or key).
    pub signer: String,
    /// Feed seq (charter version).
    pub seq: u64,
    /// Event hash (hex).
    pub hash: String,
    /// The checkpoint proved against.
    pub checkpoint: CheckpointView,
    /// Whether this node holds the event and it hashes the same (`None`: not held here).
    pub matches_local: Option<bool>,
    /// Proved from this node's own copy of the log, without asking the hub.
    #[serde(default)]
    pub offline: bool,
    /// For an API call proved through its call log anchor: the call and how it was chained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<super::calls::CallProof>,
}

/// An alarm found: a split view (or withheld proof), or an omission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alarm {
    /// When (ms).
    pub detected_at_ms: u64,
    /// What is wrong.
    pub reason: String,
}

/// What `huitong audit verify` (whole log) found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogReport {
    /// The log origin.
    pub origin: String,
    /// Whether this node keeps the log.
    pub hub: bool,
    /// The largest final checkpoint (with the witness quorum) this node holds.
    pub latest: Option<CheckpointView>,
    /// How many checkpoints it holds.
    pub checkpoints_seen: u64,
    /// Split views found, including withheld consistency proofs (any makes `verify` fail).
    pub split_views: Vec<Alarm>,
    /// Events missing from the hub's log (any makes `verify` fail).
    #[serde(default)]
    pub omissions: Vec<Alarm>,
    /// A newer checkpoint than `latest`, still waiting for the witness quorum.
    #[serde(default)]
    pub pending_witness: Option<CheckpointView>,
    /// The check of every file of this node's copy (the hub's log, or a member's mirror).
    pub disk: Option<DiskReport>,
    /// On the hub: records queued, not yet in the log.
    pub pending: u64,
}

pub(super) fn name_of(state: &NodeState, key: &huitong_protocol::NodeId) -> String {
    state
        .with_charter(|c| {
            let c = c?;
            if c.authority == *key {
                return Some("the federation authority".to_string());
            }
            c.member(key).map(|m| m.name.clone())
        })
        .unwrap_or_else(|| key.to_hex())
}

/// A checkpoint as shown.
pub fn view(state: &NodeState, c: &SignedCheckpoint) -> CheckpointView {
    CheckpointView {
        size: c.size,
        root: c.root.to_string(),
        cosigned_by: c
            .cosigned_by
            .iter()
            .map(|(w, _)| name_of(state, w))
            .collect(),
    }
}

/// The latest final checkpoint, refreshed from the hub when it can be reached, and a newer one
/// pending witness cosignatures, if any.
async fn current(
    state: &Arc<NodeState>,
    t: &Transport,
) -> Result<(SignedCheckpoint, Option<SignedCheckpoint>), String> {
    if let Err(e) = watch::poll(state, t).await {
        tracing::debug!(error = %e, "could not refresh the checkpoint; using the latest held");
    }
    let pending = checkpoints::pending(state).map_err(|e| e.to_string())?;
    match checkpoints::latest_final(state).map_err(|e| e.to_string())? {
        Some(cp) => Ok((cp, pending)),
        None => Err(match pending {
            Some(p) => pending_witness(state, &p),
            None => "this node has seen no audit checkpoint yet: the hub publishes one once something is logged; try again in a few seconds".to_string(),
        }),
    }
}

fn pending_witness(state: &NodeState, p: &SignedCheckpoint) -> String {
    format!(
        "pending witness: the checkpoint of size {} has {} of the {} witness cosignature(s) the charter requires; it is not final until the witness cosigns it (try again in a few seconds; if it stays pending, the witness is down or refuses it)",
        p.size,
        p.cosigned_by.len(),
        quorum(state)
    )
}

/// Whether this node's own copy of the log (the hub's log, or a member's mirror) reaches `size`.
async fn local_covers(state: &Arc<NodeState>, size: u64) -> bool {
    on_log(state, move |l| Ok(l.size() >= size))
        .await
        .unwrap_or(false)
}

async fn find(
    state: &Arc<NodeState>,
    t: &Transport,
    id: &str,
    local: bool,
) -> Result<Vec<u64>, String> {
    if local {
        let id = id.to_owned();
        return on_log(state, move |l| Ok(l.find(&id)))
            .await
            .map_err(|e| e.to_string());
    }
    let (_, hub, _) = keys(state).ok_or("no charter naming a hub")?;
    client::find(t, &hub, id).await.map_err(|e| e.to_string())
}

async fn inclusion(
    state: &Arc<NodeState>,
    t: &Transport,
    index: u64,
    size: u64,
    local: bool,
) -> Result<(Vec<u8>, Vec<Hash>), String> {
    if local {
        return on_log(state, move |l| l.inclusion(index, size))
            .await
            .map_err(|e| e.to_string());
    }
    let (_, hub, _) = keys(state).ok_or("no charter naming a hub")?;
    client::inclusion(t, &hub, index, size)
        .await
        .map_err(|e| e.to_string())
}

/// Whether this node holds the event a record names, and it hashes the same.
fn matches_local(state: &NodeState, r: &Record) -> Option<bool> {
    if r.kind == RecordKind::Charter {
        return None;
    }
    let (hash, _) = state.store.entry(&r.signer, r.seq).ok()??;
    Some(hash.0 == r.hash)
}

fn report(
    state: &NodeState,
    index: u64,
    r: &Record,
    cp: &SignedCheckpoint,
) -> Result<RecordReport, String> {
    let local = matches_local(state, r);
    if local == Some(false) {
        return Err(format!(
            "entry {index}: the log records {} seq {} with hash {}, but this node holds a different entry there",
            name_of(state, &r.signer),
            r.seq,
            hex::encode(r.hash)
        ));
    }
    Ok(RecordReport {
        index,
        kind: r.kind.as_str().into(),
        id: r.id.clone(),
        signer: name_of(state, &r.signer),
        seq: r.seq,
        hash: hex::encode(r.hash),
        checkpoint: view(state, cp),
        matches_local: local,
        offline: true,
        call: None,
    })
}

/// Proves every entry with record id `id` against the latest checkpoint this node checked.
/// `only`: just this index. Returns the reports and, per entry, a tlog-proof file.
pub async fn records(
    state: &Arc<NodeState>,
    t: &Transport,
    id: &str,
    only: Option<u64>,
) -> Result<Vec<(RecordReport, TlogProof)>, String> {
    let (cp, pending) = current(state, t).await?;
    if let Err(e) = super::mirror::sync(state, t).await {
        tracing::debug!(error = %e, "could not update the audit mirror");
    }
    // Offline when this node's own copy reaches the checkpoint; else ask the hub.
    let local = local_covers(state, cp.size).await;
    let mut found = find(state, t, id, local).await?;
    if let Some(i) = only {
        found.retain(|&x| x == i);
    }
    if found.is_empty() {
        return Err(format!("no audit record {id:?} in the hub's log (record ids are application ids, receipt ids, transfer ids, API call ids and charter-N)"));
    }
    let covered: Vec<u64> = found.iter().copied().filter(|&i| i < cp.size).collect();
    if covered.is_empty() {
        if let Some(p) = pending.filter(|p| found.iter().any(|&i| i < p.size)) {
            return Err(format!("record {id}: {}", pending_witness(state, &p)));
        }
        return Err(format!(
            "record {id} is at index {:?}, beyond the latest checkpoint this node has checked (size {}); try again in a few seconds",
            found, cp.size
        ));
    }
    let mut out = Vec::new();
    for index in covered {
        let (entry, hashes) = inclusion(state, t, index, cp.size, local).await?;
        check_inclusion(&hashes, &cp, index, record_hash(&entry)).map_err(|e| e.to_string())?;
        let r = Record::decode(&entry)
            .map_err(|e| format!("entry {index}: not an audit record: {e}"))?;
        if r.id != id {
            return Err(format!(
                "entry {index}: the hub answered with record {:?}, not {id:?}",
                r.id
            ));
        }
        let mut rep = report(state, index, &r, &cp)?;
        rep.offline = local;
        out.push((
            rep,
            TlogProof {
                entry,
                index,
                hashes,
                checkpoint: cp.note.clone(),
            },
        ));
    }
    Ok(out)
}

/// Checks a tlog-proof file with the charter's keys only (no network).
pub fn proof_file(state: &NodeState, bytes: &[u8]) -> Result<RecordReport, String> {
    let (origin, hub, witnesses) = keys(state).ok_or("no charter naming a hub")?;
    let proof = TlogProof::from_bytes(bytes).map_err(|e| e.to_string())?;
    let ok = proof
        .verify(&origin, &hub, &witnesses)
        .map_err(|e| e.to_string())?;
    if !is_final(state, &ok.checkpoint) {
        return Err(pending_witness(state, &ok.checkpoint));
    }
    report(state, ok.index, &ok.record, &ok.checkpoint)
}

/// Alarms as shown, from stored evidence: `parts` gives when and why.
fn alarms<T>(
    found: Result<Vec<T>, crate::store::StoreError>,
    parts: impl Fn(T) -> (u64, String),
) -> Result<Vec<Alarm>, String> {
    Ok(found
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(parts)
        .map(|(detected_at_ms, reason)| Alarm {
            detected_at_ms,
            reason,
        })
        .collect())
}

/// Checks the log as a whole. Fails on any split view, and on the hub on any file that does not
/// match the signed checkpoint (naming the entry index).
pub async fn log(state: &Arc<NodeState>, t: &Transport) -> Result<LogReport, String> {
    let (origin, hub, _) = keys(state).ok_or("no charter naming a hub")?;
    if let Err(e) = watch::poll(state, t).await {
        tracing::debug!(error = %e, "could not refresh the checkpoint");
    }
    let is_hub = hub == state.id();
    if !is_hub {
        if let Err(e) = super::mirror::sync(state, t).await {
            tracing::debug!(error = %e, "could not update the audit mirror");
        }
    }
    let disk = {
        // Without the log's lock (a long check must not hold up appends and members' proofs):
        // `verify_dir` follows a log that grows and prunes its partial tiles meanwhile.
        let dir = state.audit.dir.clone();
        let o = origin.clone();
        let checked = tokio::task::spawn_blocking(move || verify_dir(&dir, &o, &hub))
            .await
            .map_err(|e| e.to_string())?;
        match checked {
            Ok(r) => Some(r),
            Err(tiles::LogError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && !state.audit.dir.join(tiles::CHECKPOINT_FILE).exists() =>
            {
                None
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let split_views = alarms(checkpoints::evidence(state), |e| {
        (e.detected_at_ms, e.reason)
    })?;
    let omissions = alarms(omission::list(state), |o| (o.detected_at_ms, o.reason))?;
    let latest = checkpoints::latest_final(state).map_err(|e| e.to_string())?;
    let pending_witness = checkpoints::pending(state).map_err(|e| e.to_string())?;
    let pending = {
        let s = &state.store;
        s.db()
            .iterator_cf(
                s.cf(crate::store::CF_AUDIT_PENDING),
                rocksdb::IteratorMode::Start,
            )
            .count() as u64
    };
    Ok(LogReport {
        origin,
        hub: is_hub,
        latest: latest.as_ref().map(|c| view(state, c)),
        checkpoints_seen: checkpoints::count(state),
        split_views,
        omissions,
        pending_witness: pending_witness.as_ref().map(|c| view(state, c)),
        disk,
        pending,
    })
}
