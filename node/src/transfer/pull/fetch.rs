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
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::job::Job;
use super::plan::Want;
use super::{local, PullError, PullRequest, STALL, STREAMS};
use crate::chunks::ChunkError;
use crate::dataset::records;
use crate::link::{frame, open_stream, request_once, Transport, RESPONSE_TIMEOUT};
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
pub(super) async fn fetch_all(
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
        // Stops every worker when one fails, or when the pull is cancelled.
        cancel: job.cancel.child_token(),
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
        let attempt = async {
            match stream.as_mut() {
                Some(s) => fetch_one(f, s, &want).await,
                None => match open_stream(f.t, f.peer).await {
                    Ok(mut s) => {
                        let r = fetch_one(f, &mut s, &want).await;
                        stream = Some(s);
                        r
                    }
                    Err(e) => Err(Failure::Transient(e)),
                },
            }
        };
        // A cancelled pull stops at once, not after the chunk in flight.
        let result = tokio::select! {
            biased;
            _ = f.cancel.cancelled() => return Ok(()),
            r = attempt => r,
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
