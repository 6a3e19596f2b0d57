//! The consumer side: pulling a dataset version from its provider.
//!
//! 1. Find the provider in the catalogue ([`plan`]), the grant to present, and connect
//!    (directly, or through the hub's circuit relay when no direct route works).
//! 2. Fetch the manifest and check it against the provider's signature and signed feed.
//! 3. Choose the chunks the output needs ([`plan`]), re-verify those already held (an earlier
//!    version, or an interrupted pull) and fetch the rest on [`STREAMS`] streams at once
//!    ([`fetch`]); each chunk is hashed before it is stored, so the store only ever holds
//!    verified chunks, and a killed pull resumes from them. The re-verification reads files
//!    (earlier outputs, see [`super::refs`]) on a blocking thread; a cancel ends the pull, and
//!    so frees its output and its chunk-store lease, even if that thread is stuck in a read
//!    (a hung mount): the thread is left to finish on its own.
//! 4. Fsync the chunks, mark the version complete when every chunk is held, and write the
//!    output (to a temporary file renamed into place); ask the provider for a receipt.
//!
//! [`job`] keeps the node's pulls, one per output file: a pull belongs to the node, not to the
//! CLI that started it, and a second start of the same pull attaches to it. A pull can be
//! cancelled ([`Pulls::cancel`]): it stops fetching at once, removes its partial output and
//! keeps the verified chunks of a table in the chunk store.

mod fetch;
mod job;
mod plan;

pub use job::{
    canonical_out, Cancel, Job, JobView, Phase, Pulls, StartError, MAX_FINISHED, MAX_RUNNING,
};

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huitong_protocol::dataset::{Body, ChunkHash, ChunkRef, Manifest, Part, SignedManifest};
use huitong_protocol::grant as grants;
use huitong_protocol::wire::RefusalKind;
use huitong_protocol::NodeId;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::assemble::FileOutput;
use crate::applications;
use crate::catalogue::Record;
use crate::chunks::ChunkError;
use crate::dataset::export::{self, OutFormat};
use crate::dataset::records::{self, StoredManifest};
use crate::feeds::Feeds;
use crate::link::Transport;
use crate::net::Route;
use crate::outfile::Reservation;
use crate::state::NodeState;

/// Streams (chunk requests) in flight at once.
pub const STREAMS: usize = 8;
/// A pull fails after this long without any chunk arriving (provider down, no route).
pub(super) const STALL: Duration = Duration::from_secs(90);

/// What to pull.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequest {
    /// Resource code.
    pub code: String,
    /// Provider USCC, when several providers use the same code.
    #[serde(default)]
    pub provider: Option<String>,
    /// Version (default: the latest).
    #[serde(default)]
    pub version: Option<u64>,
    /// Columns to pull (default: every 无条件共享 column).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Absolute output path on this node's host.
    pub out: PathBuf,
    /// Output format of a table.
    #[serde(default)]
    pub format: OutFormat,
    /// Present the grant of this application (default: this node's own grant, if any).
    #[serde(default)]
    pub grant: Option<String>,
    /// Present this grant token (base64) received out of band; `fields` says what it grants.
    #[serde(default)]
    pub token: Option<String>,
    /// Which part of the version: the whole table (the default), or its row changes since
    /// `changes_from` (the rows inserted or updated, or the keys deleted).
    #[serde(default)]
    pub part: huitong_protocol::dataset::Part,
    /// The version this node holds, whose changes a part pull asks for.
    #[serde(default)]
    pub changes_from: Option<u64>,
    /// The output directory as the CLI sees it: the node refuses a directory it sees
    /// differently ([`crate::seen`]).
    #[serde(default)]
    pub out_dir_seen: Option<crate::seen::FileId>,
    /// The signed-in person who started it (set by the server from the request's session,
    /// never read from the request; `None` for the node's admin token). Named in the receipt's
    /// countersigning entry.
    #[serde(skip)]
    pub started_by: Option<huitong_protocol::Actor>,
    /// Set by the server for a signed-in person: present only the grant named in `grant` (one
    /// of theirs, checked by the API), never the node's own grant for the resource.
    #[serde(skip)]
    pub own_grant_only: bool,
}

/// What a finished pull did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PullSummary {
    /// Resource code.
    pub code: String,
    /// Provider name.
    pub provider: String,
    /// Version pulled.
    pub version: u64,
    /// Rows written (tables).
    pub rows: Option<u64>,
    /// Columns written (tables).
    pub fields: Vec<String>,
    /// Columns left out because they are not 无条件共享.
    pub withheld: Vec<String>,
    /// Chunks the output needed.
    pub chunks: u64,
    /// Chunks fetched over the network.
    pub chunks_fetched: u64,
    /// Bytes the output needed.
    pub bytes: u64,
    /// Bytes fetched over the network.
    pub bytes_fetched: u64,
    /// Bytes reused from chunks already held (earlier versions, an interrupted pull).
    pub bytes_reused: u64,
    /// Bytes written to the output.
    pub bytes_written: u64,
    /// `direct`, `relayed` or `local`.
    pub route: String,
    /// What carried the chunks: `tls-tcp` (the provider's bulk data port), `libp2p` (the
    /// connection to the provider), or empty when nothing was fetched.
    #[serde(default)]
    pub data_plane: String,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Time spent fetching chunks (after connecting and re-verifying held chunks).
    pub fetch_ms: u64,
    /// Time spent syncing chunks and writing the output.
    pub write_ms: u64,
    /// The output file.
    pub out: PathBuf,
    /// The transfer receipt (provider-signed, countersigned here), when the provider gave one.
    #[serde(default)]
    pub receipt: Option<String>,
    /// Why there is no receipt.
    #[serde(default)]
    pub receipt_error: Option<String>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PullError {
    /// Bad request (unknown code, fields, …).
    #[error("{0}")]
    Invalid(String),
    /// The provider refused.
    #[error("the provider refused: {message}")]
    Refused {
        /// Why, by kind.
        kind: RefusalKind,
        /// The provider's message.
        message: String,
    },
    /// A chunk failed verification: nothing of it was stored.
    #[error("chunk {chunk} ({place}) from the provider failed verification ({detail}); it was not stored and nothing was written. The provider's copy is damaged: ask it to re-publish the version")]
    Corrupt {
        /// The chunk hash.
        chunk: String,
        /// Where the chunk belongs.
        place: String,
        /// What did not match.
        detail: String,
    },
    /// A chunk held on this node no longer verifies (a write torn by a crash, a damaged disk):
    /// the version was marked incomplete, so the next pull checks every chunk and fetches the
    /// damaged one again. A pull meeting this retries once on its own.
    #[error("chunk {chunk} held on this node no longer verifies ({detail}): the local copy is damaged (a write torn by a crash, or the disk); the version is marked incomplete, so pulling it again fetches that chunk from the provider")]
    Damaged {
        /// The chunk hash.
        chunk: String,
        /// What did not match.
        detail: String,
    },
    /// The provider could not be reached for too long.
    #[error("no progress for {secs} s: {reason}. The verified chunks are kept; run the same pull again to resume")]
    Stalled {
        /// Seconds waited.
        secs: u64,
        /// Last error.
        reason: String,
    },
    /// Local failure.
    #[error("{0}")]
    Local(String),
    /// Cancelled (`huitong pulls cancel`).
    #[error("cancelled; the partial output was removed (a table's verified chunks are kept for a later pull)")]
    Cancelled,
}

pub(super) fn local(e: impl std::fmt::Display) -> PullError {
    PullError::Local(e.to_string())
}

/// A pull started, or attached to.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    /// Its id.
    pub id: u64,
    /// Whether the same pull was already running (started by an earlier `huitong pull`).
    pub attached: bool,
}

/// Starts a pull in the background, or attaches to the same pull already writing this output;
/// returns its id for progress queries. Another pull into the same output is refused.
pub fn start(
    feeds: Arc<Feeds>,
    transport: Transport,
    pulls: &Arc<Pulls>,
    req: PullRequest,
) -> Result<Started, StartError> {
    let (job, attached) = pulls.start(req)?;
    let id = job.id();
    if attached {
        info!(pull = id, out = %job.out.display(), "attached to a running pull");
        return Ok(Started { id, attached });
    }
    let pulls = pulls.clone();
    tokio::spawn(async move {
        // The chunk store's garbage collector does not run while a pull holds a lease.
        let _lease = feeds.state().chunks.lease().await;
        let result = run(&feeds, &transport, &job).await;
        match &result {
            Ok(s) => {
                info!(pull = id, code = %s.code, version = s.version, bytes_fetched = s.bytes_fetched, bytes_reused = s.bytes_reused, route = %s.route, elapsed_ms = s.elapsed_ms, "pull complete");
            }
            Err(PullError::Cancelled) => info!(pull = id, code = %job.req.code, "pull cancelled"),
            Err(e) => warn!(pull = id, code = %job.req.code, error = %e, "pull failed"),
        }
        job.end(result);
        pulls.ended(&job);
    });
    Ok(Started { id, attached })
}

/// `signed` as a pull of `part` sees it: the row changes as its body, when the version carries
/// changes from exactly the version `from` this node holds.
fn changes_view(
    signed: &SignedManifest,
    part: Part,
    from: Option<u64>,
) -> Result<SignedManifest, PullError> {
    let m = &signed.manifest;
    let base = m.changes.as_ref().map(|c| c.base);
    if base.is_none() || base != from {
        return Err(PullError::Invalid(format!(
            "{} version {} carries no row changes from version {}; pull it whole",
            m.code,
            m.version,
            from.map_or("(none given)".to_string(), |v| v.to_string())
        )));
    }
    let view = m
        .part(part)
        .ok_or_else(|| PullError::Invalid("no such part".into()))?;
    Ok(SignedManifest {
        manifest: view,
        hash: signed.hash,
        bytes: signed.bytes.clone(),
    })
}

/// Runs `fut` unless the job is cancelled first.
async fn unless_cancelled<T>(
    job: &Job,
    fut: impl std::future::Future<Output = Result<T, PullError>>,
) -> Result<T, PullError> {
    tokio::select! {
        biased;
        _ = job.cancel.cancelled() => Err(PullError::Cancelled),
        r = fut => r,
    }
}

/// Test-only: waits at the start of `phase` while the node's fault `pull-hold:<phase>` is on,
/// so a test can act on a pull in a known phase (nothing without `fault-injection`).
async fn hold(state: &NodeState, job: &Job, phase: Phase) {
    while crate::faults::args(&state.dir, "pull-hold")
        .iter()
        .any(|p| p == phase.as_str())
        && !job.cancel.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Test-only: blocks the calling (blocking) thread while the node's fault `pull-stall:<phase>`
/// is on, deaf to cancels, as a read on a hung mount would (nothing without `fault-injection`).
fn stall(state: &NodeState, phase: &str) {
    while crate::faults::args(&state.dir, "pull-stall")
        .iter()
        .any(|p| p == phase)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a pull; a cancelled pull's partial output is removed. A pull that finds a held chunk
/// damaged ([`PullError::Damaged`]) has marked the version incomplete and runs once more, which
/// checks every held chunk and fetches the damaged one again.
async fn run(feeds: &Arc<Feeds>, t: &Transport, job: &Job) -> Result<PullSummary, PullError> {
    let mut result = pull(feeds, t, job).await;
    if let Err(PullError::Damaged { chunk, detail }) = &result {
        if !job.cancel.is_cancelled() {
            warn!(pull = job.id(), chunk = %chunk, detail = %detail, "a held chunk no longer verifies; checking every chunk and fetching the damaged ones again");
            job.restart_progress();
            result = pull(feeds, t, job).await;
        }
    }
    let result = match result {
        Err(e) if job.cancel.is_cancelled() && !matches!(e, PullError::Cancelled) => {
            Err(PullError::Cancelled)
        }
        r => r,
    };
    if matches!(result, Err(PullError::Cancelled)) {
        let partial = job.partial.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = partial {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

/// The grant a pull presents: a token received out of band (`--token`), or this node's own
/// grant (`--grant ID`, else the one it holds for the resource), and the 信息项 it grants.
struct Presented {
    token: Option<Vec<u8>>,
    granted: Option<Vec<String>>,
}

fn presented(
    state: &NodeState,
    req: &PullRequest,
    record: &Record,
) -> Result<Presented, PullError> {
    let provider = record.feed;
    if let Some(t) = &req.token {
        use base64::Engine as _;
        if req.grant.is_some() {
            return Err(PullError::Invalid(
                "give --grant or --token, not both".into(),
            ));
        }
        let token = base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .map_err(|_| PullError::Invalid("the token is not base64".into()))?;
        return Ok(Presented {
            token: Some(token),
            granted: req.fields.clone(),
        });
    }
    let granted = match &req.grant {
        Some(id) => Some(
            applications::get(state, id)
                .map_err(local)?
                .filter(|r| !r.token.is_empty() && !r.block.is_empty())
                .ok_or_else(|| {
                    PullError::Invalid(format!("application {id} has no issued and endorsed grant"))
                })?,
        ),
        None if req.own_grant_only => None,
        None => applications::grant_for(state, &state.id(), &provider, &req.code).map_err(local)?,
    };
    let Some(r) = granted else {
        // No grant: say why when the resource needs one and this node applied for it.
        if crate::access::need(record, crate::access::Scope::Resource)
            == Ok(crate::access::Need::Grant)
        {
            if req.own_grant_only {
                return Err(PullError::Refused {
                    kind: RefusalKind::NeedsGrant,
                    message: format!("you hold no grant of your own for {}: apply for it (a colleague's grant is theirs)", req.code),
                });
            }
            if let Some(r) =
                applications::latest_of(state, &state.id(), &provider, &req.code).map_err(local)?
            {
                let why = r.reason.clone().unwrap_or_default();
                let message = match r.state {
                    applications::AppState::Revoked => format!("the grant of application {} was revoked: {why}", r.app.id),
                    applications::AppState::Rejected => format!("application {} was rejected: {why}", r.app.id),
                    s => format!("application {} is {s:?}; pull once it is granted (`huitong applications --outgoing`)", r.app.id),
                };
                return Err(PullError::Refused {
                    kind: RefusalKind::NeedsGrant,
                    message,
                });
            }
        }
        return Ok(Presented {
            token: None,
            granted: None,
        });
    };
    Ok(Presented {
        token: Some(grants::assemble(&r.token, &r.block).map_err(local)?),
        granted: Some(r.granted_fields().to_vec()),
    })
}

/// The signed manifest of the version asked for: this node's own, or fetched from the provider.
async fn open_manifest(
    state: &Arc<NodeState>,
    t: &Transport,
    req: &PullRequest,
    provider: &NodeId,
    grant: Option<&[u8]>,
) -> Result<(SignedManifest, Route), PullError> {
    if *provider == state.id() {
        let d = records::version(&state.store, provider, &req.code, req.version)
            .map_err(local)?
            .ok_or_else(|| PullError::Invalid(format!("{} has no such version here", req.code)))?;
        let stored = records::manifest(&state.store, &d.manifest)
            .map_err(local)?
            .ok_or_else(|| local("own manifest missing"))?;
        let signed = SignedManifest::open(&stored.envelope, provider, &d).map_err(local)?;
        return Ok((signed, Route::Local));
    }
    let peer = provider_peer(provider)?;
    let route = t
        .net
        .connect(peer)
        .await
        .map_err(|reason| PullError::Stalled { secs: 0, reason })?;
    let signed = fetch::fetch_manifest(state, t, provider, peer, req, grant).await?;
    Ok((signed, route))
}

fn provider_peer(provider: &NodeId) -> Result<PeerId, PullError> {
    crate::net::peer_id(provider).ok_or_else(|| local("provider key is not a libp2p key"))
}

/// The chunks of `candidates` already held and still intact: in place in a resumed file
/// output, in an earlier pulled output (copied into place), or in the chunk store.
fn held_chunks(
    state: &NodeState,
    output: Option<&FileOutput>,
    candidates: &[ChunkRef],
    complete: bool,
    stop: &dyn Fn() -> bool,
) -> Result<HashSet<ChunkHash>, PullError> {
    stall(state, "verifying");
    let mut held = output.map(|o| o.held_in_place()).unwrap_or_default();
    for c in candidates {
        if stop() {
            return Err(PullError::Cancelled);
        }
        if held.contains(&c.hash) {
            continue;
        }
        if !state.chunks.has(&c.hash) {
            // A file's chunk may lie in an earlier pulled output, if still intact.
            if let (Some(o), Some(bytes)) = (output, super::refs::read(state, c)) {
                o.place(&c.hash, &bytes).map_err(local)?;
                held.insert(c.hash);
            }
            continue;
        }
        if complete && output.is_none() {
            // A complete table's chunks were verified when it became complete; the export
            // verifies each one again as it reads it (damage found there: `Damaged`).
            held.insert(c.hash);
            continue;
        }
        // Bytes copied into a file output are checked first, whatever the version's record says.
        let Some(bytes) = state.chunks.read_intact(c) else {
            continue;
        };
        if let Some(o) = output {
            o.place(&c.hash, &bytes).map_err(local)?;
        }
        held.insert(c.hash);
    }
    Ok(held)
}

/// Writes the output: a file's output is finished in place (and where its chunks lie is
/// remembered for later versions); a table's chunks are synced, the version marked complete
/// when every chunk is held, and the chosen columns exported (stopped when `stop` says so).
/// Returns `(rows, bytes written)`.
#[allow(clippy::too_many_arguments)]
fn write_output(
    state: &NodeState,
    signed: &SignedManifest,
    hashes: &[ChunkHash],
    fields: &[String],
    req: &PullRequest,
    output: Option<FileOutput>,
    room: Option<Reservation>,
    complete: bool,
    stop: &dyn Fn() -> bool,
) -> Result<(Option<u64>, u64), PullError> {
    let out = &req.out;
    if let Some(o) = output {
        let placements = o.placements();
        let n = o
            .finish()
            .map_err(|e| local(format!("{}: {e}", out.display())))?;
        if let Err(e) = super::refs::record(state, out, &placements) {
            warn!(error = %e, "cannot record where the pulled chunks are; later versions will fetch them again");
        }
        return Ok((None, n));
    }
    let manifest = &signed.manifest;
    state.chunks.sync(hashes).map_err(local)?;
    if !complete && manifest.chunks().all(|c| state.chunks.has(&c.hash)) {
        // The chunks this pull did not want (other columns) may come from an earlier pull cut
        // short by a crash, torn: the version is complete only once each of them verifies.
        let wanted: HashSet<_> = hashes.iter().collect();
        let others: Vec<&ChunkRef> = manifest
            .chunks()
            .filter(|c| !wanted.contains(&c.hash))
            .collect();
        if others
            .iter()
            .all(|c| !stop() && state.chunks.read_intact(c).is_some())
        {
            state
                .chunks
                .sync(others.iter().map(|c| &c.hash))
                .map_err(local)?;
            mark(state, signed, true)?;
        }
    }
    let room = match room {
        Some(r) => export::Room::Held(r),
        None => export::Room::Reserve(&state.space),
    };
    let n = export::export(&state.chunks, manifest, fields, req.format, out, room, stop).map_err(
        |e| match e {
            export::ExportError::Chunk(ChunkError::Mismatch { expected, actual }) => {
                // Local damage since the chunk was verified: the version is no longer complete
                // here, so the next pull verifies every chunk and fetches this one again.
                if let Err(e) = mark(state, signed, false) {
                    return e;
                }
                PullError::Damaged {
                    chunk: expected.to_hex(),
                    detail: format!("the stored bytes now hash to {actual}"),
                }
            }
            export::ExportError::Stopped => PullError::Cancelled,
            other => local(other),
        },
    )?;
    Ok((manifest.rows().map(|_| n), n))
}

/// Records whether every chunk of the version is held and verified.
fn mark(state: &NodeState, signed: &SignedManifest, complete: bool) -> Result<(), PullError> {
    records::put_manifest(
        &state.store,
        &signed.hash,
        &StoredManifest {
            envelope: signed.bytes.clone(),
            complete,
            held_at_ms: crate::state::now_ms(),
        },
    )
    .map_err(local)
}

/// Asks the provider for a receipt of what was fetched: `(receipt id, why there is none)`.
async fn ask_receipt(
    feeds: &Arc<Feeds>,
    t: &Transport,
    provider: &NodeId,
    manifest: &Manifest,
    fields: &[String],
    grant: Option<&[u8]>,
    by: Option<&huitong_protocol::Actor>,
) -> Result<(Option<String>, Option<String>), PullError> {
    let peer = provider_peer(provider)?;
    let pulled = super::receipt::Pulled {
        provider,
        code: &manifest.code,
        version: manifest.version,
        fields: match &manifest.body {
            Body::Table { .. } => fields,
            Body::File { .. } => &[],
        },
        grant,
        by,
    };
    Ok(
        match super::receipt::obtain(feeds, t, peer, &pulled).await {
            Ok(id) => (Some(id), None),
            Err(e) => {
                warn!(code = %manifest.code, error = %e, "no transfer receipt for this pull");
                (None, Some(e))
            }
        },
    )
}

async fn pull(feeds: &Arc<Feeds>, t: &Transport, job: &Job) -> Result<PullSummary, PullError> {
    let state = feeds.state();
    // The output as the job knows it: its directory resolved.
    let req = &PullRequest {
        out: job.out.clone(),
        ..job.req.clone()
    };
    hold(state, job, Phase::Connecting).await;
    let record = plan::find_record(state, req)?;
    let provider = record.feed;
    let Presented { token, granted } = presented(state, req, &record)?;
    let local_pull = provider == state.id();
    let (signed, route) = unless_cancelled(
        job,
        open_manifest(state, t, req, &provider, token.as_deref()),
    )
    .await?;
    let manifest = &signed.manifest;
    job.version.store(manifest.version, Ordering::Relaxed);
    let stored = records::manifest(&state.store, &signed.hash).map_err(local)?;
    if stored.is_none() {
        records::put_manifest(
            &state.store,
            &signed.hash,
            &StoredManifest {
                envelope: signed.bytes.clone(),
                complete: false,
                held_at_ms: crate::state::now_ms(),
            },
        )
        .map_err(local)?;
    }
    let complete = stored.is_some_and(|s| s.complete);
    // A pull of a version's row changes sees them as the body; it never marks the version
    // complete (the chunks it holds are the changes', not the table's).
    // A pull of a version's row changes sees them as the body; it checks the chunks it holds
    // like any pull, but never marks the version complete (they are the changes', not the
    // table's).
    let (signed, markable) = match req.part {
        Part::Whole => (signed, true),
        part => (changes_view(&signed, part, req.changes_from)?, false),
    };
    let manifest = &signed.manifest;
    let plan::Selection {
        mut wants,
        fields,
        withheld,
    } = plan::wants(manifest, &record, req.fields.as_deref(), granted.as_deref())?;
    let mut seen = HashSet::new();
    wants.retain(|w| seen.insert(w.chunk.hash));
    job.chunks_total
        .store(wants.len() as u64, Ordering::Relaxed);
    let total: u64 = wants.iter().map(|w| u64::from(w.chunk.len)).sum();
    job.bytes_total.store(total, Ordering::Relaxed);

    // Chunks already held count only if they still verify.
    job.set_phase(Phase::Verifying);
    hold(state, job, Phase::Verifying).await;
    if job.cancel.is_cancelled() {
        return Err(PullError::Cancelled);
    }
    // A file's partial output is allocated whole (fallocate) under the free-space ledger: off
    // the async threads.
    let output = {
        let (manifest, out, space) = (manifest.clone(), req.out.clone(), state.space.clone());
        tokio::task::spawn_blocking(move || FileOutput::create(&manifest, &out, &space))
            .await
            .map_err(local)?
            .map_err(local)?
            .map(Arc::new)
    };
    job.set_partial(output.as_ref().map(|o| o.temp().to_path_buf()));
    let held = {
        let (state, output) = (state.clone(), output.clone());
        let candidates: Vec<ChunkRef> = wants.iter().map(|w| w.chunk).collect();
        let cancel = job.cancel.clone();
        let verify = tokio::task::spawn_blocking(move || {
            let stop = || cancel.is_cancelled();
            held_chunks(&state, output.as_deref(), &candidates, complete, &stop)
        });
        unless_cancelled(job, async move { verify.await.map_err(local)? }).await?
    };
    let mut missing = VecDeque::new();
    let mut reused = 0u64;
    for w in &wants {
        if held.contains(&w.chunk.hash) {
            reused += u64::from(w.chunk.len);
            job.add_done(u64::from(w.chunk.len), false);
        } else {
            missing.push_back(w.clone());
        }
    }
    // A table: room for the missing chunks (chunk store) and the export (output) is reserved
    // before anything is fetched, and held until they are written (review 10, M9).
    let (mut fetch_room, out_room) = if output.is_none() {
        let fetch: u64 = missing.iter().map(|w| u64::from(w.chunk.len)).sum();
        crate::outfile::check_target(&req.out).map_err(local)?;
        // The output first: it is what an error names when both share a file system.
        let mut rooms = state
            .space
            .reserve(&[
                (
                    req.out.as_path(),
                    export::estimate(manifest, &fields, req.format),
                ),
                (state.chunks.root(), fetch),
            ])
            .map_err(local)?
            .into_iter();
        let (out_room, fetch_room) = (rooms.next(), rooms.next());
        if let Some(r) = &fetch_room {
            // What this run fetched is in the chunk store already.
            let fetched = job.bytes_fetched.clone();
            let before = fetched.load(Ordering::Relaxed);
            r.track(move || fetched.load(Ordering::Relaxed).saturating_sub(before));
        }
        (fetch_room, out_room)
    } else {
        (None, None)
    };
    let fetched_chunks = missing.len() as u64;
    let fetch_started = Instant::now();
    if job.cancel.is_cancelled() {
        return Err(PullError::Cancelled);
    }
    let mut data_plane = "";
    if !missing.is_empty() {
        if local_pull {
            return Err(local(format!(
                "{} chunks of this node's own version are missing from its chunk store or no longer verify: publish the version again from its source",
                missing.len()
            )));
        }
        job.set_phase(Phase::Fetching);
        hold(state, job, Phase::Fetching).await;
        let peer = provider_peer(&provider)?;
        let fetched = fetch::fetch_all(
            state,
            t,
            peer,
            manifest,
            missing,
            job,
            output.clone(),
            token.clone(),
        )
        .await;
        match fetched {
            Ok(plane) => data_plane = plane,
            Err(e) => {
                // Refused (e.g. the grant was revoked): nothing to resume, keep no partial copy.
                if matches!(e, PullError::Refused { .. }) {
                    if let Some(o) = &output {
                        o.discard();
                    }
                }
                return Err(e);
            }
        }
        if job.cancel.is_cancelled() {
            return Err(PullError::Cancelled);
        }
    }

    // The fetched chunks are on disk: their room is counted by statvfs now.
    fetch_room.take();
    let fetch_ms = fetch_started.elapsed().as_millis() as u64;
    // A receipt records a transfer: asked for as soon as it ends (before the output is written,
    // however long that takes); none when nothing came from the provider this time.
    let (receipt, receipt_error) = if local_pull || fetched_chunks == 0 {
        (None, None)
    } else {
        unless_cancelled(
            job,
            ask_receipt(
                feeds,
                t,
                &provider,
                manifest,
                &fields,
                token.as_deref(),
                req.started_by.as_ref(),
            ),
        )
        .await?
    };
    job.set_phase(Phase::Writing);
    hold(state, job, Phase::Writing).await;
    if job.cancel.is_cancelled() {
        return Err(PullError::Cancelled);
    }
    let write_started = Instant::now();
    let (rows, written) = {
        let (state, signed) = (state.clone(), signed.clone());
        let hashes: Vec<_> = wants.iter().map(|w| w.chunk.hash).collect();
        let (fields, req) = (fields.clone(), req.clone());
        let output = output.and_then(|o| Arc::try_unwrap(o).ok());
        let cancel = job.cancel.clone();
        tokio::task::spawn_blocking(move || {
            let stop = || cancel.is_cancelled();
            write_output(
                &state,
                &signed,
                &hashes,
                &fields,
                &req,
                output,
                out_room,
                complete || !markable,
                &stop,
            )
        })
        .await
        .map_err(local)??
    };
    job.set_partial(None);
    let bytes_written = match &manifest.body {
        Body::File { .. } => written,
        Body::Table { .. } => std::fs::metadata(&req.out).map(|m| m.len()).unwrap_or(0),
    };
    Ok(PullSummary {
        code: req.code.clone(),
        provider: record.entry.provider_name.clone(),
        version: manifest.version,
        rows: match &manifest.body {
            Body::Table { .. } => rows,
            Body::File { .. } => None,
        },
        fields,
        withheld,
        chunks: wants.len() as u64,
        chunks_fetched: fetched_chunks,
        bytes: total,
        bytes_fetched: job.bytes_fetched.load(Ordering::Relaxed),
        bytes_reused: reused,
        bytes_written,
        route: route.as_str().into(),
        data_plane: data_plane.into(),
        elapsed_ms: job.started.elapsed().as_millis() as u64,
        fetch_ms,
        write_ms: write_started.elapsed().as_millis() as u64,
        out: req.out.clone(),
        receipt,
        receipt_error,
    })
}
