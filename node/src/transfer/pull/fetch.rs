//! Fetching from the provider: the signed manifest, then the missing chunks on
//! [`STREAMS`](super::STREAMS) streams at once, each verified (BLAKE3) before it is stored or
//! written into the output; transient failures retry on a new stream until the pull stalls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use huitong_protocol::dataset::{
    DatasetVersion, Manifest, SignedManifest, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES,
};
use huitong_protocol::wire::{DataRequest, DataResponse, RefusalKind};
use huitong_protocol::{NodeId, ResourceCode};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::job::Job;
use super::plan::Want;
use super::{local, PullError, PullRequest, STALL, STREAMS};
use crate::chunks::ChunkError;
use crate::dataset::records;
use crate::link::{
    data_route, frame, open_data_stream, request_once, DataRoute, DataStream, Transport,
    RESPONSE_TIMEOUT,
};
use crate::state::NodeState;
use crate::transfer::assemble::FileOutput;

pub(super) async fn fetch_manifest(
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
        DataResponse::Refused { kind, message, .. } => Err(PullError::Refused { kind, message }),
        _ => Err(io(&"unexpected response to a manifest request")),
    }
}

/// Shared state of the fetch workers.
struct Fetch<'a> {
    state: &'a Arc<NodeState>,
    /// Workers (streams) of the pull.
    workers: usize,
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
    /// Where chunk streams are opened; falls back to the libp2p connection for good once the
    /// bulk data port could not be reached, or failed (see [`Fetch::bulk_failed`]).
    route: Mutex<DataRoute>,
    /// Chunks received and transient failures on bulk streams.
    bulk_ok: std::sync::atomic::AtomicU64,
    bulk_failures: std::sync::atomic::AtomicU64,
}

/// Transient failures on bulk streams after which the pull moves to the libp2p connection
/// (the first one does if no chunk came over the port yet: a port that connects but then
/// carries nothing, such as a path that drops large packets).
const BULK_FAILURES: u64 = 3;

impl Fetch<'_> {
    /// Counts a failure on a bulk stream; moves the rest of the pull to the libp2p connection
    /// when the port seems not to work.
    fn bulk_failed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let failures = self.bulk_failures.fetch_add(1, Relaxed) + 1;
        if self.bulk_ok.load(Relaxed) == 0 || failures >= BULK_FAILURES {
            let mut route = self.route.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*route, DataRoute::Bulk(_)) {
                warn!(peer = %self.peer, failures, "the provider's bulk data port failed; the rest of this pull goes over the libp2p connection");
                *route = DataRoute::Libp2p;
                self.t.bulk.mark_unreachable(self.peer);
            }
        }
    }
}

enum Failure {
    /// Retry on a new stream.
    Transient(String),
    /// Give up.
    Fatal(PullError),
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_all(
    state: &Arc<NodeState>,
    t: &Transport,
    peer: PeerId,
    manifest: &Manifest,
    missing: VecDeque<Want>,
    job: &Job,
    output: Option<Arc<FileOutput>>,
    grant: Option<Vec<u8>>,
) -> Result<&'static str, PullError> {
    let workers = STREAMS.min(missing.len()).max(1);
    let started = Instant::now();
    let route = tokio::select! {
        biased;
        _ = job.cancel.cancelled() => return Err(PullError::Cancelled),
        r = data_route(t, peer) => r,
    };
    tracing::debug!(%peer, ?route, ms = started.elapsed().as_millis() as u64, "data route");
    let f = Fetch {
        state,
        workers,
        t,
        peer,
        code: manifest.code.clone(),
        version: manifest.version,
        queue: Mutex::new(missing),
        job,
        last_progress: Mutex::new(Instant::now()),
        // Stops every worker when one fails, or when the pull is cancelled.
        cancel: job.cancel.child_token(),
        output,
        grant: grant.map(serde_bytes::ByteBuf::from),
        route: Mutex::new(route),
        bulk_ok: Default::default(),
        bulk_failures: Default::default(),
    };
    // One stream first: a bulk data port that cannot be reached is found out once, not by
    // every worker.
    let mut first = tokio::select! {
        biased;
        _ = f.cancel.cancelled() => None,
        s = open(&f) => Some(s),
    };
    tracing::debug!(%peer, ms = started.elapsed().as_millis() as u64, "first data stream");
    let results = futures::future::join_all((0..workers).map(|_| worker(&f, first.take()))).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    tracing::debug!(%peer, ms = started.elapsed().as_millis() as u64, "chunks fetched");
    let route = *f.route.lock().unwrap_or_else(|e| e.into_inner());
    Ok(match route {
        DataRoute::Bulk(_) => "tls-tcp",
        DataRoute::Libp2p => "libp2p",
    })
}

/// A new chunk stream on the pull's route; a bulk stream that fell back to the libp2p
/// connection moves the rest of the pull there (its summary names the plane it ended on).
async fn open(f: &Fetch<'_>) -> Result<DataStream, String> {
    let route = *f.route.lock().unwrap_or_else(|e| e.into_inner());
    let s = open_data_stream(f.t, f.peer, route).await?;
    if matches!(route, DataRoute::Bulk(_)) && matches!(s, DataStream::Libp2p(_)) {
        *f.route.lock().unwrap_or_else(|e| e.into_inner()) = DataRoute::Libp2p;
    }
    Ok(s)
}

/// Chunk requests a worker keeps sent ahead on its stream. The provider answers a stream's
/// requests in order, so the next answer is on its way while one is verified and stored: no
/// round trip per chunk (a table's chunks are small: hundreds of them for 100,000 rows).
/// The provider sends only what was asked, so at most this many chunks per stream are on
/// their way (and lost if the pull is killed).
const AHEAD: usize = 4;

async fn worker(f: &Fetch<'_>, first: Option<Result<DataStream, String>>) -> Result<(), PullError> {
    let mut stream: Option<DataStream> = None;
    let mut first = first;
    // This worker's chunks, in the order asked; the first `sent` are asked on `stream`.
    let mut ahead: VecDeque<Want> = VecDeque::new();
    let mut sent = 0usize;
    loop {
        if f.cancel.is_cancelled() {
            return Ok(());
        }
        {
            let mut queue = f.queue.lock().unwrap_or_else(|e| e.into_inner());
            // No more than a fair share of what is left: a small pull, or the end of a large
            // one, still spreads over every stream.
            let share = (queue.len() / f.workers).clamp(1, AHEAD);
            while ahead.len() < share {
                match queue.pop_front() {
                    Some(w) => ahead.push_back(w),
                    None => break,
                }
            }
        }
        if ahead.is_empty() {
            return Ok(());
        }
        let attempt = step(f, (&mut stream, &mut first), &ahead, &mut sent);
        // A cancelled pull stops at once, not after the chunk in flight.
        let result = tokio::select! {
            biased;
            _ = f.cancel.cancelled() => return Ok(()),
            r = attempt => r,
        };
        let on_bulk = matches!(stream, Some(DataStream::Bulk(_)));
        match result {
            Ok(()) => {
                ahead.pop_front();
                sent = sent.saturating_sub(1);
                if on_bulk {
                    f.bulk_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                *f.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
            Err(Failure::Fatal(e)) => {
                f.cancel.cancel();
                return Err(e);
            }
            Err(Failure::Transient(reason)) => {
                if on_bulk {
                    f.bulk_failed();
                }
                // Every chunk asked on the failed stream goes back, in order, for any worker.
                {
                    let mut queue = f.queue.lock().unwrap_or_else(|e| e.into_inner());
                    while let Some(w) = ahead.pop_back() {
                        queue.push_front(w);
                    }
                }
                sent = 0;
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

/// One step of a worker: a stream (the first one handed over, else a new one), every chunk
/// of `ahead` not yet asked on it asked, then the answer to the first received and stored.
async fn step(
    f: &Fetch<'_>,
    (stream, first): (
        &mut Option<DataStream>,
        &mut Option<Result<DataStream, String>>,
    ),
    ahead: &VecDeque<Want>,
    sent: &mut usize,
) -> Result<(), Failure> {
    let s = match stream {
        Some(s) => s,
        None => {
            let opened = match first.take() {
                Some(opened) => opened,
                None => open(f).await,
            };
            *sent = 0;
            stream.insert(opened.map_err(Failure::Transient)?)
        }
    };
    let transient = |e: &dyn std::fmt::Display| Failure::Transient(e.to_string());
    if *sent < ahead.len() {
        // Bounded like a response: a provider that stops reading cannot hold the worker.
        let ask = async {
            for want in ahead.iter().skip(*sent) {
                let req = DataRequest::Chunk {
                    code: f.code.clone(),
                    version: f.version,
                    hash: want.chunk.hash,
                    grant: f.grant.clone(),
                };
                frame::write(&mut *s, &req).await?;
            }
            s.flush().await
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, ask)
            .await
            .map_err(|_| Failure::Transient("the provider read no request within 60 s".into()))?
            .map_err(|e| transient(&e))?;
        *sent = ahead.len();
    }
    match ahead.front() {
        Some(want) => receive(f, s, want).await,
        None => Ok(()),
    }
}

/// Reads the answer to the chunk request for `want`, and verifies and stores it.
async fn receive(f: &Fetch<'_>, s: &mut DataStream, want: &Want) -> Result<(), Failure> {
    let transient = |e: &dyn std::fmt::Display| Failure::Transient(e.to_string());
    let read = async {
        let head = frame::read::<DataResponse, _>(s, 64 * 1024)
            .await
            .map_err(|e| transient(&e))?;
        match head {
            None => Err(Failure::Transient("the provider closed the stream".into())),
            Some(DataResponse::Chunk { len })
                if len == want.chunk.len && len <= MAX_CHUNK_BYTES =>
            {
                let mut bytes = vec![0u8; len as usize];
                s.read_exact(&mut bytes).await.map_err(|e| transient(&e))?;
                Ok(bytes)
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
                ..
            }) => Err(Failure::Transient(message)),
            Some(DataResponse::Refused { kind, message, .. }) => {
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
        match output {
            // A table's column chunk: kept in the chunk store, exported at the end.
            None => state.chunks.put_expected(&hash, &bytes),
            // A file's chunk: verified here and written once, into the output.
            Some(o) => hash
                .verify(&bytes)
                .map_err(|actual| ChunkError::Mismatch {
                    expected: hash,
                    actual,
                })
                .and_then(|()| {
                    o.place(&hash, &bytes).map_err(|source| ChunkError::Io {
                        path: o.temp().to_path_buf(),
                        source,
                    })
                }),
        }
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
