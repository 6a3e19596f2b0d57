//! The provider side of [`DATA_PROTOCOL`]: one task per inbound stream answers requests in
//! order until the consumer closes it.
//!
//! Every request is checked against the current catalogue entry: its share type (only
//! 无条件共享 in this version), each 信息项's share type (a column of a narrower item is never
//! sent), withdrawal, and that the chunk belongs to the named version. Chunks are read from
//! the chunk store and sent as they are: the consumer verifies them.
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use huitong_protocol::dataset::{Body, ChunkHash, Manifest, MAX_MANIFEST_BYTES};
use huitong_protocol::wire::{DataRequest, DataResponse, RefusalKind, MAX_DATA_FRAME};
use huitong_protocol::{codec, ResourceCode};
use libp2p::{PeerId, Stream};
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::frame;
use crate::catalogue;
use crate::dataset::{access, records};
use crate::state::NodeState;

/// How long a stream may sit idle between requests.
const IDLE: Duration = Duration::from_secs(120);
/// Manifests kept decoded.
const CACHED_MANIFESTS: usize = 64;

/// Where a chunk sits in a manifest.
#[derive(Clone, Copy)]
enum Place {
    Column(usize),
    File,
    Report,
}

/// A decoded manifest with a chunk index.
struct Indexed {
    manifest: Manifest,
    places: HashMap<ChunkHash, Place>,
}

impl Indexed {
    fn new(manifest: Manifest) -> Self {
        let mut places = HashMap::new();
        match &manifest.body {
            Body::Table { columns, .. } => {
                for (i, c) in columns.iter().enumerate() {
                    for r in &c.chunks {
                        places.insert(r.hash, Place::Column(i));
                    }
                }
            }
            Body::File { chunks, .. } => {
                for r in chunks {
                    places.insert(r.hash, Place::File);
                }
            }
        }
        for r in manifest.rejects.iter().flat_map(|r| r.report.iter()) {
            places.entry(r.hash).or_insert(Place::Report);
        }
        Self { manifest, places }
    }
}

type Refusal = (RefusalKind, String);

/// The server's shared state.
pub struct Server {
    state: Arc<NodeState>,
    cache: Mutex<HashMap<ChunkHash, Arc<Indexed>>>,
}

impl Server {
    /// A server for this node.
    pub fn new(state: Arc<NodeState>) -> Arc<Self> {
        Arc::new(Self {
            state,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Accepts streams until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut incoming: libp2p_stream::IncomingStreams,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = incoming.next() => match next {
                    Some((peer, stream)) => {
                        let this = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = this.handle(peer, stream).await {
                                debug!(%peer, error = %e, "data stream ended with an error");
                            }
                        });
                    }
                    None => break,
                },
            }
        }
    }

    fn member_active(&self, peer: &PeerId) -> bool {
        self.state.with_charter(|c| {
            c.is_some_and(|c| {
                c.members.iter().any(|m| {
                    m.status == huitong_protocol::MemberStatus::Active
                        && crate::net::peer_id(&m.node_key).as_ref() == Some(peer)
                })
            })
        })
    }

    async fn handle(&self, peer: PeerId, mut stream: Stream) -> Result<(), frame::FrameError> {
        loop {
            let req = match tokio::time::timeout(
                IDLE,
                frame::read::<DataRequest, _>(&mut stream, MAX_DATA_FRAME),
            )
            .await
            {
                Err(_) | Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => {
                    warn!(target: "huitong::audit", %peer, error = %e, "refused malformed data request");
                    self.state.reject("data_request");
                    return Err(e);
                }
                Ok(Ok(Some(r))) => r,
            };
            if !self.member_active(&peer) {
                self.refuse(
                    &mut stream,
                    RefusalKind::NotShared,
                    "this node serves active federation members only".into(),
                )
                .await?;
                continue;
            }
            match req {
                DataRequest::Manifest { code, version } => {
                    let response = match self.manifest(&code, version) {
                        Ok(r) => r,
                        Err((kind, message)) => {
                            self.state.transfer.refused();
                            DataResponse::Refused { kind, message }
                        }
                    };
                    frame::write(&mut stream, &response).await?;
                }
                DataRequest::Chunk {
                    code,
                    version,
                    hash,
                } => match self.chunk(&code, version, &hash).await {
                    Ok(bytes) => {
                        let len = bytes.len() as u32;
                        frame::write(&mut stream, &DataResponse::Chunk { len }).await?;
                        stream.write_all(&bytes).await?;
                        self.state.transfer.served(u64::from(len));
                    }
                    Err((kind, message)) => {
                        debug!(%peer, %code, version, chunk = %hash, %message, "refused chunk request");
                        self.refuse(&mut stream, kind, message).await?;
                    }
                },
            }
            stream.flush().await?;
        }
    }

    async fn refuse(
        &self,
        stream: &mut Stream,
        kind: RefusalKind,
        message: String,
    ) -> std::io::Result<()> {
        self.state.transfer.refused();
        frame::write(stream, &DataResponse::Refused { kind, message }).await?;
        stream.flush().await
    }

    /// The columns a member may receive, or why none.
    fn allowed(&self, code: &ResourceCode) -> Result<Vec<String>, Refusal> {
        let ours = &self.state.config.node.org_code;
        let record = catalogue::get_by_provider(&self.state.store, ours, code.as_str())
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!("this node publishes no resource {code}"),
                )
            })?;
        access(&record)
    }

    fn indexed(
        &self,
        code: &ResourceCode,
        version: Option<u64>,
    ) -> Result<
        (
            Arc<Indexed>,
            Vec<u8>,
            huitong_protocol::dataset::DatasetVersion,
        ),
        Refusal,
    > {
        let unavailable = |e: &dyn std::fmt::Display| (RefusalKind::Unavailable, e.to_string());
        let announced = records::version(&self.state.store, &self.state.id(), code.as_str(), version)
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    match version {
                        Some(v) => format!("{code} has no version {v} here; see `huitong dataset versions {code}`"),
                        None => format!("{code} has no dataset version yet; the provider must publish one (`huitong dataset publish`)"),
                    },
                )
            })?;
        let stored = records::manifest(&self.state.store, &announced.manifest)
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!(
                        "the manifest of {code} version {} is missing on the provider",
                        announced.version
                    ),
                )
            })?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.get(&announced.manifest) {
            return Ok((i.clone(), stored.envelope, announced));
        }
        let env = huitong_protocol::Envelope::open_limited(
            &stored.envelope,
            huitong_protocol::Kind::Manifest,
            MAX_MANIFEST_BYTES,
        )
        .map_err(|e| unavailable(&e))?;
        let manifest: Manifest =
            codec::decode(env.payload(), MAX_MANIFEST_BYTES).map_err(|e| unavailable(&e))?;
        if cache.len() >= CACHED_MANIFESTS {
            cache.clear();
        }
        let i = Arc::new(Indexed::new(manifest));
        cache.insert(announced.manifest, i.clone());
        Ok((i, stored.envelope, announced))
    }

    fn manifest(&self, code: &ResourceCode, version: Option<u64>) -> Result<DataResponse, Refusal> {
        self.allowed(code)?;
        let (_, envelope, announced) = self.indexed(code, version)?;
        Ok(DataResponse::Manifest {
            announced,
            envelope: ByteBuf::from(envelope),
        })
    }

    async fn chunk(
        &self,
        code: &ResourceCode,
        version: u64,
        hash: &ChunkHash,
    ) -> Result<Vec<u8>, Refusal> {
        let allowed = self.allowed(code)?;
        let (indexed, _, _) = self.indexed(code, Some(version))?;
        let not_here = || {
            (
                RefusalKind::NotFound,
                format!("chunk {hash} is not part of {code} version {version}"),
            )
        };
        let place = *indexed.places.get(hash).ok_or_else(not_here)?;
        let ok = match (place, &indexed.manifest.body) {
            (Place::Column(i), Body::Table { columns, .. }) => {
                let name = &columns[i].name;
                if !allowed.contains(name) {
                    return Err((
                        RefusalKind::NeedsGrant,
                        format!("信息项 {name:?} of {code} is not 无条件共享: it needs an application and a grant"),
                    ));
                }
                true
            }
            (Place::File, _) => true,
            (Place::Report, Body::Table { columns, .. }) => {
                columns.iter().all(|c| allowed.contains(&c.name))
            }
            _ => false,
        };
        if !ok {
            return Err((
                RefusalKind::NeedsGrant,
                format!("chunk {hash} of {code} holds data that is not 无条件共享"),
            ));
        }
        let state = self.state.clone();
        let h = *hash;
        tokio::task::spawn_blocking(move || state.chunks.read(&h))
            .await
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
            .map_err(|e| {
                warn!(chunk = %hash, error = %e, "cannot read a chunk this node announced");
                (
                    RefusalKind::Unavailable,
                    format!(
                        "the provider cannot read chunk {hash}; it must re-publish the version"
                    ),
                )
            })
    }
}
