//! The consumer side: pulling a dataset version from its provider.
//!
//! 1. Find the provider in the catalogue and connect (directly, or through the hub's circuit
//!    relay when no direct route works; the network layer decides).
//! 2. Fetch the manifest and check it against the provider's signature and signed feed.
//! 3. Re-verify the chunks already held (an earlier version, or an interrupted pull) and fetch
//!    the rest on [`STREAMS`] streams at once; each chunk is hashed before it is stored, so the
//!    store only ever holds verified chunks, and a killed pull resumes from them.
//! 4. Fsync the chunks, mark the version complete when every chunk is held, and write the
//!    output (to a temporary file renamed into place).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use huitong_protocol::dataset::{
    Body, ChunkRef, DatasetVersion, Manifest, SignedManifest, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES,
};
use huitong_protocol::wire::{DataRequest, DataResponse, RefusalKind, DATA_PROTOCOL};
use huitong_protocol::{NodeId, ResourceCode};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::assemble::FileOutput;
use super::frame;
use crate::applications;
use crate::catalogue::{self, Record};
use crate::chunks::ChunkError;
use crate::dataset::export::{self, OutFormat};
use crate::dataset::records::{self, StoredManifest};
use crate::net::{Client, Route};
use crate::state::NodeState;
use huitong_protocol::grant as grants;

/// Streams (chunk requests) in flight at once.
pub const STREAMS: usize = 8;
/// A pull fails after this long without any chunk arriving (provider down, no route).
const STALL: Duration = Duration::from_secs(90);
/// Longest wait for one response.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

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
}

fn local(e: impl std::fmt::Display) -> PullError {
    PullError::Local(e.to_string())
}

/// Phases of a pull, for progress display.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Finding and dialling the provider, fetching the manifest.
    Connecting,
    /// Re-verifying chunks already held.
    Verifying,
    /// Fetching chunks.
    Fetching,
    /// Writing the output.
    Writing,
    /// Finished.
    Done,
    /// Failed.
    Failed,
}

/// Progress of one pull.
#[derive(Debug)]
pub struct Job {
    started: Instant,
    phase: Mutex<Phase>,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_fetched: AtomicU64,
    chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    result: Mutex<Option<Result<PullSummary, PullError>>>,
}

/// A snapshot of a [`Job`] for the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Pull id.
    pub id: u64,
    /// Phase.
    pub phase: Phase,
    /// Bytes the output needs.
    pub bytes_total: u64,
    /// Bytes held and verified so far.
    pub bytes_done: u64,
    /// Bytes fetched so far.
    pub bytes_fetched: u64,
    /// Chunks the output needs.
    pub chunks_total: u64,
    /// Chunks held so far.
    pub chunks_done: u64,
    /// Time since the start.
    pub elapsed_ms: u64,
    /// The summary once done.
    pub summary: Option<PullSummary>,
    /// The error once failed.
    pub error: Option<String>,
}

impl Job {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: Mutex::new(Phase::Connecting),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            chunks_total: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            result: Mutex::new(None),
        }
    }

    fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn view(&self, id: u64) -> JobView {
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        JobView {
            id,
            phase: *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            chunks_total: self.chunks_total.load(Ordering::Relaxed),
            chunks_done: self.chunks_done.load(Ordering::Relaxed),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            summary: result.as_ref().and_then(|r| r.as_ref().ok().cloned()),
            error: result.and_then(|r| r.err()).map(|e| e.to_string()),
        }
    }

    fn add_done(&self, bytes: u64, fetched: bool) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
        if fetched {
            self.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// The pulls of this node (finished ones are kept for `huitong pull` to read their summary).
#[derive(Default)]
pub struct Pulls {
    next: AtomicU64,
    jobs: Mutex<std::collections::HashMap<u64, Arc<Job>>>,
}

impl Pulls {
    fn add(&self) -> (u64, Arc<Job>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job::new());
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job.clone());
        (id, job)
    }

    /// Progress of a pull.
    pub fn view(&self, id: u64) -> Option<JobView> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(&id).map(|j| j.view(id))
    }
}

/// What the pull needs from the network layer.
#[derive(Clone)]
pub struct Transport {
    /// The event loop.
    pub net: Client,
    /// Opens streams.
    pub control: libp2p_stream::Control,
}

/// Starts a pull in the background; returns its id for progress queries.
pub fn start(state: Arc<NodeState>, transport: Transport, req: PullRequest) -> u64 {
    let (id, job) = state.pulls.add();
    tokio::spawn(async move {
        let result = run(&state, &transport, &req, &job).await;
        match &result {
            Ok(s) => {
                info!(code = %s.code, version = s.version, bytes_fetched = s.bytes_fetched, bytes_reused = s.bytes_reused, route = %s.route, elapsed_ms = s.elapsed_ms, "pull complete");
                job.set_phase(Phase::Done);
            }
            Err(e) => {
                warn!(code = %req.code, error = %e, "pull failed");
                job.set_phase(Phase::Failed);
            }
        }
        *job.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    });
    id
}

fn find_record(state: &NodeState, req: &PullRequest) -> Result<Record, PullError> {
    ResourceCode::parse(&req.code).map_err(|e| PullError::Invalid(format!("code: {e}")))?;
    catalogue::pick(&state.store, &req.code, req.provider.as_deref(), false).map_err(|e| match e {
        catalogue::PickError::Store(e) => local(e),
        other => PullError::Invalid(other.to_string()),
    })
}

/// One chunk to hold, and where it belongs (for error messages).
#[derive(Clone)]
struct Want {
    chunk: ChunkRef,
    place: String,
}

/// What a pull fetches and writes.
struct Selection {
    /// The chunks the output needs.
    wants: Vec<Want>,
    /// The columns written (tables).
    fields: Vec<String>,
    /// The columns left out because they are not 无条件共享.
    withheld: Vec<String>,
}

/// The chunks the output needs; the columns chosen and those withheld.
fn wants(
    manifest: &Manifest,
    record: &Record,
    fields: Option<&[String]>,
    granted: Option<&[String]>,
) -> Result<Selection, PullError> {
    match &manifest.body {
        Body::File { chunks, name } => {
            if fields.is_some() {
                return Err(PullError::Invalid(format!(
                    "{} is a file ({name}); --fields applies to tables only",
                    manifest.code
                )));
            }
            let w = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| Want {
                    chunk: *c,
                    place: format!("file {name}, chunk {i}"),
                })
                .collect();
            Ok(Selection {
                wants: w,
                fields: Vec::new(),
                withheld: Vec::new(),
            })
        }
        Body::Table { columns, .. } => {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let (chosen, withheld) = match fields {
                Some(f) => {
                    if let Some(bad) = f.iter().find(|f| !names.contains(&f.as_str())) {
                        return Err(PullError::Invalid(format!(
                            "{bad:?} is not a column of {}; columns: {}",
                            manifest.code,
                            names.join(", ")
                        )));
                    }
                    (f.to_vec(), Vec::new())
                }
                None => {
                    // The open columns, and the granted ones the entry does not now refuse.
                    let mut open = crate::access::open_columns(record);
                    open.extend(granted.unwrap_or_default().iter().cloned().filter(|f| {
                        crate::access::need(record, crate::access::Scope::Column(f)).is_ok()
                    }));
                    names
                        .iter()
                        .map(|n| n.to_string())
                        .partition(|n| open.contains(n))
                }
            };
            let mut w = Vec::new();
            for c in columns.iter().filter(|c| chosen.contains(&c.name)) {
                for (g, r) in c.chunks.iter().enumerate() {
                    w.push(Want {
                        chunk: *r,
                        place: format!("column {:?}, row group {g}", c.name),
                    });
                }
            }
            Ok(Selection {
                wants: w,
                fields: chosen,
                withheld,
            })
        }
    }
}

async fn run(
    state: &Arc<NodeState>,
    t: &Transport,
    req: &PullRequest,
    job: &Job,
) -> Result<PullSummary, PullError> {
    if !req.out.is_absolute() {
        return Err(PullError::Invalid(format!(
            "--out {} must be an absolute path (the CLI makes it one)",
            req.out.display()
        )));
    }
    let record = find_record(state, req)?;
    let provider = record.feed;
    let token = match &req.token {
        Some(t) => {
            use base64::Engine as _;
            if req.grant.is_some() {
                return Err(PullError::Invalid(
                    "give --grant or --token, not both".into(),
                ));
            }
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .map_err(|_| PullError::Invalid("the token is not base64".into()))?,
            )
        }
        None => None,
    };
    let granted = match &req.grant {
        _ if token.is_some() => None,
        Some(id) => Some(
            applications::get(state, id)
                .map_err(local)?
                .filter(|r| !r.token.is_empty() && !r.block.is_empty())
                .ok_or_else(|| {
                    PullError::Invalid(format!("application {id} has no issued and endorsed grant"))
                })?,
        ),
        None => applications::grant_for(state, &state.id(), &provider, &req.code).map_err(local)?,
    };
    if granted.is_none()
        && token.is_none()
        && crate::access::need(&record, crate::access::Scope::Resource)
            == Ok(crate::access::Need::Grant)
    {
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
    let grant = match (&token, &granted) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(r)) => Some(grants::assemble(&r.token, &r.block).map_err(local)?),
        (None, None) => None,
    };
    let local_pull = provider == state.id();
    let (signed, route) = if local_pull {
        let d = records::version(&state.store, &provider, &req.code, req.version)
            .map_err(local)?
            .ok_or_else(|| PullError::Invalid(format!("{} has no such version here", req.code)))?;
        let stored = records::manifest(&state.store, &d.manifest)
            .map_err(local)?
            .ok_or_else(|| local("own manifest missing"))?;
        (
            SignedManifest::open(&stored.envelope, &provider, &d).map_err(local)?,
            Route::Local,
        )
    } else {
        let peer = crate::net::peer_id(&provider)
            .ok_or_else(|| local("provider key is not a libp2p key"))?;
        let route = t
            .net
            .connect(peer)
            .await
            .map_err(|reason| PullError::Stalled { secs: 0, reason })?;
        (
            fetch_manifest(state, t, &provider, peer, req, grant.as_deref()).await?,
            route,
        )
    };
    let manifest = &signed.manifest;
    let stored = records::manifest(&state.store, &signed.hash).map_err(local)?;
    if stored.is_none() {
        records::put_manifest(
            &state.store,
            &signed.hash,
            &StoredManifest {
                envelope: signed.bytes.clone(),
                complete: false,
            },
        )
        .map_err(local)?;
    }
    let complete = stored.is_some_and(|s| s.complete);
    let Selection {
        mut wants,
        fields,
        withheld,
    } = wants(
        manifest,
        &record,
        req.fields.as_deref(),
        match &token {
            Some(_) => req.fields.as_deref(),
            None => granted.as_ref().map(|r| r.granted_fields()),
        },
    )?;
    let mut seen = HashSet::new();
    wants.retain(|w| seen.insert(w.chunk.hash));
    job.chunks_total
        .store(wants.len() as u64, Ordering::Relaxed);
    let total: u64 = wants.iter().map(|w| u64::from(w.chunk.len)).sum();
    job.bytes_total.store(total, Ordering::Relaxed);

    // Chunks already held count only if they still verify.
    job.set_phase(Phase::Verifying);
    let output = FileOutput::create(manifest, &req.out)
        .map_err(|e| local(format!("{}: {e}", req.out.display())))?
        .map(Arc::new);
    let held = {
        let state = state.clone();
        let output = output.clone();
        let candidates: Vec<ChunkRef> = wants.iter().map(|w| w.chunk).collect();
        tokio::task::spawn_blocking(move || -> Result<HashSet<_>, PullError> {
            // A resumed file pull: what is already in place in the partial output.
            let mut held = output
                .as_ref()
                .map(|o| o.held_in_place())
                .unwrap_or_default();
            for c in candidates {
                if held.contains(&c.hash) {
                    continue;
                }
                if !state.chunks.has(&c.hash) {
                    // A file's chunk may lie in an earlier pulled output, if still intact.
                    if let (Some(o), Some(bytes)) = (&output, super::refs::read(&state, &c)) {
                        o.place(&c.hash, &bytes).map_err(local)?;
                        held.insert(c.hash);
                    }
                    continue;
                }
                if complete && output.is_none() {
                    held.insert(c.hash);
                    continue;
                }
                let bytes = if complete {
                    state.chunks.read(&c.hash).ok()
                } else {
                    state.chunks.read_intact(&c)
                };
                let Some(bytes) = bytes else {
                    continue;
                };
                if let Some(o) = &output {
                    o.place(&c.hash, &bytes).map_err(local)?;
                }
                held.insert(c.hash);
            }
            Ok(held)
        })
        .await
        .map_err(local)??
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
    let fetched_chunks = missing.len() as u64;
    let fetch_started = Instant::now();
    if !missing.is_empty() {
        if local_pull {
            return Err(local(format!(
                "{} chunks of this node's own version are missing from its chunk store",
                missing.len()
            )));
        }
        job.set_phase(Phase::Fetching);
        let peer = crate::net::peer_id(&provider)
            .ok_or_else(|| local("provider key is not a libp2p key"))?;
        let fetched = fetch_all(
            state,
            t,
            peer,
            manifest,
            missing,
            job,
            output.clone(),
            grant.clone(),
        )
        .await;
        if let Err(e) = fetched {
            // Refused (e.g. the grant was revoked): nothing to resume, keep no partial copy.
            if matches!(e, PullError::Refused { .. }) {
                if let Some(o) = output.and_then(|o| Arc::try_unwrap(o).ok()) {
                    o.discard();
                }
            }
            return Err(e);
        }
    }

    let fetch_ms = fetch_started.elapsed().as_millis() as u64;
    job.set_phase(Phase::Writing);
    let write_started = Instant::now();
    let (rows, written) = {
        let state = state.clone();
        let manifest = manifest.clone();
        let hash = signed.hash;
        let bytes = signed.bytes.clone();
        let hashes: Vec<_> = wants.iter().map(|w| w.chunk.hash).collect();
        let fields = fields.clone();
        let format = req.format;
        let out = req.out.clone();
        let output = output.and_then(|o| Arc::try_unwrap(o).ok());
        tokio::task::spawn_blocking(move || -> Result<(Option<u64>, u64), PullError> {
            if let Some(o) = output {
                // A file: its chunks live in the output only; remember where, for later versions.
                let placements = o.placements();
                let n = o
                    .finish()
                    .map_err(|e| local(format!("{}: {e}", out.display())))?;
                if let Err(e) = super::refs::record(&state, &out, &placements) {
                    warn!(error = %e, "cannot record where the pulled chunks are; later versions will fetch them again");
                }
                return Ok((None, n));
            }
            state.chunks.sync(&hashes).map_err(local)?;
            if !complete && manifest.chunks().all(|c| state.chunks.has(&c.hash)) {
                let wanted: HashSet<_> = hashes.iter().collect();
                state
                    .chunks
                    .sync(
                        manifest
                            .chunks()
                            .map(|c| &c.hash)
                            .filter(|h| !wanted.contains(h)),
                    )
                    .map_err(local)?;
                records::put_manifest(
                    &state.store,
                    &hash,
                    &StoredManifest {
                        envelope: bytes,
                        complete: true,
                    },
                )
                .map_err(local)?;
            }
            let n = export::export(&state.chunks, &manifest, &fields, format, &out).map_err(
                |e| match e {
                    export::ExportError::Chunk(ChunkError::Mismatch { expected, actual }) => {
                        PullError::Corrupt {
                            chunk: expected.to_hex(),
                            place: "held chunk".into(),
                            detail: format!("the stored bytes now hash to {actual}"),
                        }
                    }
                    other => local(other),
                },
            )?;
            Ok((manifest.rows().map(|_| n), n))
        })
        .await
        .map_err(local)??
    };
    // A receipt records a transfer: none when nothing came from the provider this time.
    let (receipt, receipt_error) = if local_pull || fetched_chunks == 0 {
        (None, None)
    } else {
        let peer = crate::net::peer_id(&provider)
            .ok_or_else(|| local("provider key is not a libp2p key"))?;
        let pulled = super::receipt::Pulled {
            provider: &provider,
            code: &manifest.code,
            version: manifest.version,
            fields: match &manifest.body {
                Body::Table { .. } => &fields,
                Body::File { .. } => &[],
            },
            grant: grant.as_deref(),
        };
        match super::receipt::obtain(state, t, peer, &pulled).await {
            Ok(id) => (Some(id), None),
            Err(e) => {
                warn!(code = %manifest.code, error = %e, "no transfer receipt for this pull");
                (None, Some(e))
            }
        }
    };
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
        elapsed_ms: job.started.elapsed().as_millis() as u64,
        fetch_ms,
        write_ms: write_started.elapsed().as_millis() as u64,
        out: req.out.clone(),
        receipt,
        receipt_error,
    })
}

pub(crate) async fn open_stream(t: &Transport, peer: PeerId) -> Result<Stream, String> {
    t.net.connect(peer).await?;
    let mut control = t.control.clone();
    control
        .open_stream(peer, StreamProtocol::new(DATA_PROTOCOL))
        .await
        .map_err(|e| format!("cannot open a data stream to the provider: {e}"))
}

/// One request and its response on a new data stream (manifests, receipts, audit questions):
/// `limit` bounds the response frame; every failure is a sentence for the caller to wrap.
pub(crate) async fn request_once(
    t: &Transport,
    peer: PeerId,
    req: &DataRequest,
    limit: usize,
) -> Result<DataResponse, String> {
    let mut stream = open_stream(t, peer).await?;
    frame::write(&mut stream, req)
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        frame::read::<DataResponse, _>(&mut stream, limit),
    )
    .await
    .map_err(|_| format!("no response within {} s", RESPONSE_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?
    .ok_or("the peer closed the stream")?;
    let _ = stream.close().await;
    Ok(response)
}

async fn fetch_manifest(
    state: &NodeState,
    t: &Transport,
    provider: &NodeId,
    peer: PeerId,
    req: &PullRequest,
    grant: Option<&[u8]>,
) -> Result<SignedManifest, PullError> {
    let code = ResourceCode::parse(&req.code).map_err(|e| PullError::Invalid(e.to_string()))?;
    let request = DataRequest::Manifest {
        code,
        version: req.version,
        grant: grant.map(|g| serde_bytes::ByteBuf::from(g.to_vec())),
    };
    let io = |e: &dyn std::fmt::Display| PullError::Stalled {
        secs: 0,
        reason: format!("manifest request: {e}"),
    };
    let response = request_once(t, peer, &request, MAX_MANIFEST_BYTES + 4096)
        .await
        .map_err(|e| io(&e))?;
    match response {
        DataResponse::Manifest {
            announced,
            envelope,
        } => {
            // Prefer what this node learnt from the provider's signed feed.
            let ours: Option<DatasetVersion> =
                records::version(&state.store, provider, &req.code, Some(announced.version))
                    .map_err(local)?;
            let reference = ours.unwrap_or(announced);
            SignedManifest::open(&envelope, provider, &reference).map_err(|e| PullError::Corrupt {
                chunk: reference.manifest.to_hex(),
                place: "manifest".into(),
                detail: e.to_string(),
            })
        }
        DataResponse::Refused { kind, message } => Err(PullError::Refused { kind, message }),
        _ => Err(io(&"unexpected response to a manifest request")),
    }
}

/// Shared state of the fetch workers.
struct Fetch<'a> {
    state: &'a Arc<NodeState>,
    t: &'a Transport,
    peer: PeerId,
    code: ResourceCode,
    version: u64,
    queue: Mutex<VecDeque<Want>>,
    job: &'a Job,
    last_progress: Mutex<Instant>,
    cancel: CancellationToken,
    /// The output of a file version, written as chunks arrive.
    output: Option<Arc<FileOutput>>,
    /// The grant token presented with every request.
    grant: Option<serde_bytes::ByteBuf>,
}

enum Failure {
    /// Retry on a new stream.
    Transient(String),
    /// Give up.
    Fatal(PullError),
}

#[allow(clippy::too_many_arguments)]
async fn fetch_all(
    state: &Arc<NodeState>,
    t: &Transport,
    peer: PeerId,
    manifest: &Manifest,
    missing: VecDeque<Want>,
    job: &Job,
    output: Option<Arc<FileOutput>>,
    grant: Option<Vec<u8>>,
) -> Result<(), PullError> {
    let workers = STREAMS.min(missing.len()).max(1);
    let f = Fetch {
        state,
        t,
        peer,
        code: manifest.code.clone(),
        version: manifest.version,
        queue: Mutex::new(missing),
        job,
        last_progress: Mutex::new(Instant::now()),
        cancel: CancellationToken::new(),
        output,
        grant: grant.map(serde_bytes::ByteBuf::from),
    };
    let results = futures::future::join_all((0..workers).map(|_| worker(&f))).await;
    results
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .map(|_| ())
}

async fn worker(f: &Fetch<'_>) -> Result<(), PullError> {
    let mut stream: Option<Stream> = None;
    loop {
        if f.cancel.is_cancelled() {
            return Ok(());
        }
        let next = f
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(want) = next else { return Ok(()) };
        let result = match stream.as_mut() {
            Some(s) => fetch_one(f, s, &want).await,
            None => match open_stream(f.t, f.peer).await {
                Ok(mut s) => {
                    let r = fetch_one(f, &mut s, &want).await;
                    stream = Some(s);
                    r
                }
                Err(e) => Err(Failure::Transient(e)),
            },
        };
        match result {
            Ok(()) => *f.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now(),
            Err(Failure::Fatal(e)) => {
                f.cancel.cancel();
                return Err(e);
            }
            Err(Failure::Transient(reason)) => {
                f.queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_front(want);
                stream = None;
                let idle = f
                    .last_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                if idle > STALL {
                    f.cancel.cancel();
                    return Err(PullError::Stalled {
                        secs: idle.as_secs(),
                        reason,
                    });
                }
                warn!(%reason, "data stream failed; retrying");
                tokio::select! {
                    _ = f.cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

async fn fetch_one(f: &Fetch<'_>, s: &mut Stream, want: &Want) -> Result<(), Failure> {
    let transient = |e: &dyn std::fmt::Display| Failure::Transient(e.to_string());
    let req = DataRequest::Chunk {
        code: f.code.clone(),
        version: f.version,
        hash: want.chunk.hash,
        grant: f.grant.clone(),
    };
    frame::write(s, &req).await.map_err(|e| transient(&e))?;
    s.flush().await.map_err(|e| transient(&e))?;
    let read = async {
        let head = frame::read::<DataResponse, _>(s, 64 * 1024)
            .await
            .map_err(|e| transient(&e))?;
        match head {
            None => Err(Failure::Transient("the provider closed the stream".into())),
            Some(DataResponse::Chunk { len })
                if len == want.chunk.len && len <= MAX_CHUNK_BYTES =>
            {
                let mut buf = vec![0u8; len as usize];
                s.read_exact(&mut buf).await.map_err(|e| transient(&e))?;
                Ok(buf)
            }
            Some(DataResponse::Chunk { len }) => Err(Failure::Fatal(PullError::Corrupt {
                chunk: want.chunk.hash.to_hex(),
                place: want.place.clone(),
                detail: format!(
                    "the provider sent {len} bytes where the manifest says {}",
                    want.chunk.len
                ),
            })),
            Some(DataResponse::Refused {
                kind: RefusalKind::Unavailable,
                message,
            }) => Err(Failure::Transient(message)),
            Some(DataResponse::Refused { kind, message }) => {
                Err(Failure::Fatal(PullError::Refused { kind, message }))
            }
            Some(_) => Err(Failure::Transient(
                "unexpected response to a chunk request".into(),
            )),
        }
    };
    let bytes = tokio::time::timeout(RESPONSE_TIMEOUT, read)
        .await
        .map_err(|_| Failure::Transient("no response within 60 s".into()))??;
    let state = f.state.clone();
    let hash = want.chunk.hash;
    let output = f.output.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let Some(o) = output else {
            // A table's column chunk: kept in the chunk store, exported at the end.
            return state.chunks.put_expected(&hash, &bytes);
        };
        // A file's chunk: verified here and written once, into the output.
        hash.verify(&bytes).map_err(|actual| ChunkError::Mismatch {
            expected: hash,
            actual,
        })?;
        o.place(&hash, &bytes).map_err(|source| ChunkError::Io {
            path: o.temp().to_path_buf(),
            source,
        })
    })
    .await
    .map_err(|e| Failure::Fatal(local(e)))?;
    match stored {
        Ok(()) => {
            f.state.transfer.fetched(u64::from(want.chunk.len));
            f.job.add_done(u64::from(want.chunk.len), true);
            Ok(())
        }
        Err(ChunkError::Mismatch { expected, actual }) => {
            f.state.transfer.failed();
            warn!(target: "huitong::audit", chunk = %expected, place = %want.place, "chunk from the provider failed verification; not stored");
            Err(Failure::Fatal(PullError::Corrupt {
                chunk: expected.to_hex(),
                place: want.place.clone(),
                detail: format!("the bytes hash to {actual}"),
            }))
        }
        Err(e) => Err(Failure::Fatal(local(e))),
    }
}
