//! The provider side of [`DATA_PROTOCOL`]: one task per inbound stream answers requests in
//! order until the consumer closes it.
//!
//! Every request — manifest, chunk, receipt, preview — is decided by [`crate::access::authorize`] for the
//! member that actually connected (share types, withdrawal, the grant and this node's own record
//! of what it approved), and a chunk must belong to the named version. Chunks are read from the
//! chunk store and sent as they are: the consumer verifies them. What is sent is counted per
//! consumer and version ([`super::served`]) and logged in this node's feed when the transfer
//! ends, whether or not the consumer asks for a receipt.
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use huitong_protocol::dataset::{Body, ChunkHash, DatasetVersion, Manifest, MAX_MANIFEST_BYTES};
use huitong_protocol::wire::{DataRequest, DataResponse, RefusalKind, MAX_DATA_FRAME};
use huitong_protocol::{codec, NodeId, ResourceCode};
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::limits::{self, Limits, SendPermit};
use super::served::{self, Sent, Served, CONSUMER_SHARE_OF_QUOTA};
use crate::access::{self, Need, Refusal, Scope};
use crate::catalogue::{self, Record};
use crate::dataset::records;
use crate::feeds::Feeds;
use crate::link::bulk::BulkStream;
use crate::link::{frame, DataStream};
use crate::net::Client;
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
        // The row changes' chunks hold the version's columns (by name): a consumer may take
        // them exactly as it may take those columns.
        if let (Some(changes), Body::Table { columns, .. }) = (&manifest.changes, &manifest.body) {
            for part in [&changes.upserts, &changes.deletes] {
                if let Body::Table {
                    columns: part_columns,
                    ..
                } = part
                {
                    for pc in part_columns {
                        if let Some(i) = columns.iter().position(|c| c.name == pc.name) {
                            for r in &pc.chunks {
                                places.entry(r.hash).or_insert(Place::Column(i));
                            }
                        }
                    }
                }
            }
        }
        Self { manifest, places }
    }
}

/// The server's shared state.
pub struct Server {
    state: Arc<NodeState>,
    feeds: Arc<Feeds>,
    net: Client,
    cache: Mutex<HashMap<ChunkHash, Arc<Indexed>>>,
    /// Preview answers by manifest hash.
    previews: Mutex<HashMap<ChunkHash, Arc<DataResponse>>>,
    /// What API service calls need: the loaded tables and the quotas.
    services: Arc<crate::service::provider::Services>,
    /// Streams per peer, chunks in flight per member and in all, write deadlines.
    limits: Arc<Limits>,
    /// What was sent to whom, until the transfer is logged.
    served: Arc<Served>,
    /// The port of this node's bulk data port, told to consumers that ask.
    bulk_port: Option<u16>,
}

impl Server {
    /// A server for this node, answering API calls with `services` (shared with the gateway,
    /// which answers this node's own calls); `bulk_port` is told to consumers that ask where
    /// to fetch chunks.
    pub fn new(
        feeds: Arc<Feeds>,
        net: Client,
        services: Arc<crate::service::provider::Services>,
        bulk_port: Option<u16>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: feeds.state().clone(),
            feeds,
            net,
            cache: Mutex::new(HashMap::new()),
            previews: Mutex::new(HashMap::new()),
            services,
            limits: Arc::default(),
            served: Arc::default(),
            bulk_port,
        })
    }

    /// The open transfer sessions (closed and logged by [`served::run`]).
    pub fn served(&self) -> Arc<Served> {
        self.served.clone()
    }

    /// Accepts streams until `shutdown`: those on the libp2p connections, and those of the
    /// bulk data port (`bulk`), the same way.
    pub async fn run(
        self: Arc<Self>,
        mut incoming: libp2p_stream::IncomingStreams,
        mut bulk: tokio::sync::mpsc::Receiver<(PeerId, BulkStream)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let (peer, stream) = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = incoming.next() => match next {
                    Some((peer, stream)) => (peer, DataStream::Libp2p(stream)),
                    None => break,
                },
                Some((peer, stream)) = bulk.recv() => (peer, DataStream::Bulk(Box::new(stream))),
            };
            self.accept(peer, stream);
        }
    }

    /// Serves one stream in its own task, if `peer` has a stream left.
    fn accept(self: &Arc<Self>, peer: PeerId, mut stream: DataStream) {
        // Anyone with a key can finish a TLS handshake, while libp2p connections are gated to
        // members already: a bulk stream of a non-member is closed before it costs more.
        if matches!(stream, DataStream::Bulk(_)) && self.reading_member(&peer).is_none() {
            debug!(%peer, "closed a bulk data stream: not an active federation member");
            self.state.reject("bulk_non_member");
            return;
        }
        let Some(slot) = self.limits.open_stream(peer) else {
            warn!(%peer, plane = stream.plane(), limit = limits::MAX_STREAMS_PER_PEER, "closed a data stream: the peer has too many open");
            self.state.reject("data_streams");
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
            });
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = this.handle(peer, stream).await {
                debug!(%peer, error = %e, "data stream ended with an error");
            }
        });
    }

    /// The node key of a member with this PeerId that may read: an active one, or one the
    /// charter suspended read-only. (Asked on every request: a byte comparison per member.)
    fn reading_member(&self, peer: &PeerId) -> Option<NodeId> {
        use huitong_protocol::MemberStatus::{Active, ReadOnly};
        let key = crate::net::ed25519_key_bytes(peer)?;
        self.state.with_charter(|c| {
            c.and_then(|c| {
                c.members
                    .iter()
                    .find(|m| matches!(m.status, Active | ReadOnly) && m.node_key.0 == key)
                    .map(|m| m.node_key)
            })
        })
    }

    async fn handle(&self, peer: PeerId, mut stream: DataStream) -> Result<(), frame::FrameError> {
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
            let Some(requester) = self.reading_member(&peer) else {
                self.refuse(
                    &mut stream,
                    &peer,
                    RefusalKind::NotShared,
                    "this node serves active federation members only".into(),
                )
                .await?;
                continue;
            };
            // A manifest answer (up to 16 MiB, held while it is written) takes a send permit like
            // a chunk does, so manifests count in the node-wide bound too (review 10, L5); none
            // is left only at shutdown.
            let manifest_permit = match &req {
                // A preview decodes chunks, a call may load a table: each takes a permit too
                // (8 at once per member: measured, taking calls out of it did not raise the
                // calls benchmark's throughput).
                DataRequest::Manifest { .. }
                | DataRequest::Preview { .. }
                | DataRequest::Call { .. } => self.limits.sending(&requester).await.ok(),
                _ => None,
            };
            let (response, chunk) = self.answer(req, &requester, &peer).await;
            self.send(
                &mut stream,
                &peer,
                &response,
                chunk.as_ref().map(|c| &c.bytes[..]),
            )
            .await?;
            drop(manifest_permit);
            if let Some(c) = chunk {
                self.state.transfer.served(c.bytes.len() as u64);
            }
        }
    }

    /// The response to one request of an active member, and the chunk to send after it.
    async fn answer(
        &self,
        req: DataRequest,
        requester: &NodeId,
        peer: &PeerId,
    ) -> (DataResponse, Option<Chunk>) {
        let refused = |(kind, message): Refusal| {
            self.state.transfer.refused();
            DataResponse::refused(kind, message)
        };
        match req {
            DataRequest::Manifest {
                code,
                version,
                grant,
            } => {
                let r = self
                    .manifest(&code, version, grant.as_deref().map(|g| &g[..]), requester)
                    .await;
                (r.unwrap_or_else(refused), None)
            }
            DataRequest::Chunk {
                code,
                version,
                hash,
                grant,
            } => match self
                .chunk(
                    &code,
                    version,
                    &hash,
                    grant.as_deref().map(|g| &g[..]),
                    requester,
                )
                .await
            {
                Ok(chunk) => {
                    let len = chunk.bytes.len() as u32;
                    // Counted as handed to the stream, before the write: a consumer that
                    // resets the stream mid-chunk still leaves a transfer record.
                    self.served.sent(&Sent {
                        consumer: requester,
                        code: &code,
                        version,
                        manifest: chunk.manifest,
                        field: chunk.field.as_deref(),
                        grant: chunk.grant.as_deref(),
                        bytes: u64::from(len),
                    });
                    (DataResponse::Chunk { len }, Some(chunk))
                }
                Err(why) => {
                    debug!(%peer, %code, version, chunk = %hash, message = %why.1, "refused chunk request");
                    (refused(why), None)
                }
            },
            DataRequest::Receipt {
                code,
                version,
                fields,
                grant,
            } => {
                let r = self
                    .receipt(
                        &code,
                        version,
                        fields,
                        grant.as_deref().map(|g| &g[..]),
                        requester,
                    )
                    .await;
                (r.unwrap_or_else(refused), None)
            }
            DataRequest::Audit(q) => {
                let (state, who) = (self.state.clone(), *requester);
                let response = tokio::task::spawn_blocking(move || {
                    crate::audit::service::answer(&state, &who, q)
                })
                .await
                .unwrap_or_else(|e| DataResponse::refused(RefusalKind::Unavailable, e.to_string()));
                (response, None)
            }
            DataRequest::BulkPort => (
                DataResponse::BulkPort {
                    port: self.bulk_port,
                },
                None,
            ),
            DataRequest::Preview { code, version } => {
                let r = self.preview(&code, version, requester).await;
                (r.unwrap_or_else(refused), None)
            }
            DataRequest::Call { code, grant, query } => {
                use crate::service::provider::{Declined, NoAnswer};
                let r = match self.call(&code, grant, query, requester).await {
                    Ok(r) => r,
                    Err(Declined { why, signed }) => {
                        let signed = signed.map(ByteBuf::from);
                        match why {
                            NoAnswer::Refused((kind, message)) => {
                                self.state.transfer.refused();
                                DataResponse::Refused {
                                    kind,
                                    message,
                                    signed,
                                }
                            }
                            NoAnswer::Over(over) => DataResponse::Throttled {
                                retry_after_ms: u64::try_from(over.retry_after.as_millis())
                                    .unwrap_or(u64::MAX),
                                message: over.message,
                                signed,
                            },
                        }
                    }
                };
                (r, None)
            }
        }
    }

    /// An API service call ([`crate::service::provider::answer_async`]).
    async fn call(
        &self,
        code: &ResourceCode,
        grant: Option<ByteBuf>,
        query: huitong_protocol::call::Query,
        requester: &NodeId,
    ) -> Result<DataResponse, crate::service::provider::Declined> {
        let record = self
            .record(code)
            .map_err(crate::service::provider::NoAnswer::Refused)?;
        crate::service::provider::answer_async(
            &self.state,
            &self.services,
            record,
            *requester,
            grant.map(ByteBuf::into_vec),
            query,
        )
        .await
        .map(|bytes| DataResponse::Answer(ByteBuf::from(bytes)))
    }

    /// The first rows of version `version` of this node's 无条件共享 table `code`: the 信息项
    /// shared without conditions, authorized for `requester` like a pull without a grant.
    /// Answers are kept per manifest (a version never changes), so asking again costs no
    /// decoding.
    async fn preview(
        &self,
        code: &ResourceCode,
        version: u64,
        requester: &NodeId,
    ) -> Result<DataResponse, Refusal> {
        let record = self.record(code)?;
        // Withdrawn or 不予共享: say so, with the basis.
        access::need(&record, Scope::Resource)?;
        let columns = crate::dataset::preview::shared_columns(&record.entry);
        if columns.is_empty() {
            return Err((
                RefusalKind::NeedsGrant,
                format!("{code} is not shared without conditions: it has no preview; apply for it to see its data"),
            ));
        }
        // Every column's own share type, as for a pull.
        let mut scopes = vec![None];
        scopes.extend(columns.iter().cloned().map(Some));
        self.decide(&record, requester, None, scopes).await?;
        // Rows leave this node: only while it can log what it sends, within the consumer's
        // budget, and recorded as a transfer of those 信息项.
        if let Some(closed) = self.feeds.closed() {
            self.state.reject("transfer_unloggable");
            return Err((
                RefusalKind::Unavailable,
                format!("the provider cannot log transfers now, so it sends no data: {closed}"),
            ));
        }
        let announced = self.announced(code, Some(version))?;
        let quota = self
            .state
            .with_charter(|c| c.map(|c| c.feed_quota).unwrap_or_default());
        self.served
            .admit(
                requester,
                code,
                version,
                quota.entries_per_hour / CONSUMER_SHARE_OF_QUOTA,
            )
            .map_err(|busy| {
                self.state.reject("transfer_budget");
                (RefusalKind::Unavailable, busy.to_string())
            })?;
        // A cached answer counts only for the columns it was made for: an item narrowed since
        // (same version, same manifest) is decoded again, without it.
        let cached = self
            .previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&announced.manifest)
            .filter(
                |p| matches!(p.as_ref(), DataResponse::Preview { columns: c, .. } if *c == columns),
            )
            .cloned();
        let answer = match cached {
            Some(a) => a,
            None => {
                let (state, id) = (self.state.clone(), self.state.id());
                let (dv, names) = (announced.clone(), columns.clone());
                let rows = tokio::task::spawn_blocking(move || {
                    crate::dataset::preview::first_rows(&state, &id, &dv, &names)
                })
                .await
                .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
                .map_err(|e| {
                    warn!(%code, version, error = %e, "cannot read a version for a preview");
                    (
                        RefusalKind::Unavailable,
                        format!("the provider cannot read {code} version {version} just now"),
                    )
                })?
                .ok_or_else(|| {
                    (
                        RefusalKind::NotFound,
                        format!(
                            "{code} version {version} is not a table held whole here: it has no preview"
                        ),
                    )
                })?;
                let answer = Arc::new(DataResponse::Preview {
                    columns: columns.clone(),
                    rows,
                });
                let mut cache = self.previews.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHED_MANIFESTS {
                    if let Some(k) = cache.keys().next().copied() {
                        cache.remove(&k);
                    }
                }
                cache.insert(announced.manifest, answer.clone());
                answer
            }
        };
        let bytes = codec::encode(answer.as_ref()).len() as u64;
        for (i, field) in columns.iter().enumerate() {
            self.served.sent(&Sent {
                consumer: requester,
                code,
                version,
                manifest: announced.manifest,
                field: Some(field),
                grant: None,
                bytes: if i == 0 { bytes } else { 0 },
            });
        }
        Ok(answer.as_ref().clone())
    }

    /// Writes a response (and a chunk's bytes) within [`limits::write_deadline`]: a consumer
    /// that stops reading loses the stream, and with it what the stream held.
    async fn send(
        &self,
        stream: &mut DataStream,
        peer: &PeerId,
        response: &DataResponse,
        body: Option<&[u8]>,
    ) -> Result<(), frame::FrameError> {
        let encoded = codec::encode(response);
        // The response itself counts: a manifest frame may be 16 MiB.
        let len = encoded.len() + body.map_or(0, <[u8]>::len);
        let deadline = limits::write_deadline(len);
        let write = async {
            frame::write_encoded(stream, &encoded).await?;
            if let Some(b) = body {
                stream.write_all(b).await?;
            }
            stream.flush().await
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                warn!(%peer, bytes = len, ?deadline, "dropped a data stream: the consumer did not read the response in time");
                self.state.reject("slow_consumer");
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the consumer did not read the response in time",
                )
                .into())
            }
        }
    }

    async fn refuse(
        &self,
        stream: &mut DataStream,
        peer: &PeerId,
        kind: RefusalKind,
        message: String,
    ) -> Result<(), frame::FrameError> {
        self.state.transfer.refused();
        self.send(stream, peer, &DataResponse::refused(kind, message), None)
            .await
    }

    /// This node's catalogue record of `code`.
    fn record(&self, code: &ResourceCode) -> Result<Record, Refusal> {
        let ours = &self.state.config.node.org_code;
        catalogue::get_by_provider(&self.state.store, ours, code.as_str())
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
            .filter(|r| r.feed == self.state.id())
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!("this node publishes no resource {code}"),
                )
            })
    }

    /// This node's record of `code` for a pull (manifest, chunk, receipt): an API resource (接口)
    /// is called, never pulled whole.
    fn pulled(&self, code: &ResourceCode) -> Result<Record, Refusal> {
        let record = self.record(code)?;
        if record.entry.share_mode == huitong_protocol::catalogue::ShareMode::Api {
            return Err((
                RefusalKind::NotShared,
                format!("{code} is an API resource (接口): call it through your node's gateway (/svc/…); it is not pulled whole"),
            ));
        }
        Ok(record)
    }

    /// [`access::authorize`] for every scope (`None`: the resource, `Some(c)`: column `c`), off
    /// the async workers (a token's datalog may take up to its run limit); the grant id used.
    async fn decide(
        &self,
        record: &Record,
        requester: &NodeId,
        grant: Option<&[u8]>,
        scopes: Vec<Option<String>>,
    ) -> Result<Option<String>, Refusal> {
        let (state, record, requester) = (self.state.clone(), record.clone(), *requester);
        let grant = grant.map(<[u8]>::to_vec);
        tokio::task::spawn_blocking(move || {
            let mut decider = access::Decider::new(&state, &record, &requester, grant.as_deref());
            let mut id = None;
            for scope in &scopes {
                let scope = match scope {
                    Some(c) => Scope::Column(c),
                    None => Scope::Resource,
                };
                if let Some(g) = decider.decide(scope)? {
                    id = Some(g);
                }
            }
            Ok(id)
        })
        .await
        .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
    }

    /// The announcement of `version` (`None`: the latest) of this node's resource `code`.
    fn announced(
        &self,
        code: &ResourceCode,
        version: Option<u64>,
    ) -> Result<DatasetVersion, Refusal> {
        records::version(&self.state.store, &self.state.id(), code.as_str(), version)
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    match version {
                        Some(v) => format!("{code} has no version {v} here; see `huitong dataset versions {code}`"),
                        None => format!("{code} has no dataset version yet; the provider must publish one (`huitong dataset publish`)"),
                    },
                )
            })
    }

    /// The sealed manifest envelope of an announced version.
    fn envelope(
        &self,
        code: &ResourceCode,
        announced: &DatasetVersion,
    ) -> Result<Vec<u8>, Refusal> {
        records::manifest(&self.state.store, &announced.manifest)
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
            .map(|m| m.envelope)
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!(
                        "the manifest of {code} version {} is missing on the provider",
                        announced.version
                    ),
                )
            })
    }

    /// The decoded, indexed manifest of an announced version (read from the store once, then
    /// from the cache: chunk requests never read the manifest again).
    fn indexed(
        &self,
        code: &ResourceCode,
        announced: &DatasetVersion,
    ) -> Result<Arc<Indexed>, Refusal> {
        if let Some(i) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&announced.manifest)
        {
            return Ok(i.clone());
        }
        let unavailable = |e: &dyn std::fmt::Display| (RefusalKind::Unavailable, e.to_string());
        let bytes = self.envelope(code, announced)?;
        let env = huitong_protocol::Envelope::open_limited(
            &bytes,
            huitong_protocol::Kind::Manifest,
            MAX_MANIFEST_BYTES,
        )
        .map_err(|e| unavailable(&e))?;
        let manifest: Manifest =
            codec::decode(env.payload(), MAX_MANIFEST_BYTES).map_err(|e| unavailable(&e))?;
        let i = Arc::new(Indexed::new(manifest));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED_MANIFESTS {
            cache.clear();
        }
        cache.insert(announced.manifest, i.clone());
        Ok(i)
    }

    async fn manifest(
        &self,
        code: &ResourceCode,
        version: Option<u64>,
        grant: Option<&[u8]>,
        requester: &NodeId,
    ) -> Result<DataResponse, Refusal> {
        let record = self.pulled(code)?;
        self.decide(&record, requester, grant, vec![None]).await?;
        let announced = self.announced(code, version)?;
        let envelope = self.envelope(code, &announced)?;
        Ok(DataResponse::Manifest {
            announced,
            envelope: ByteBuf::from(envelope),
        })
    }

    /// Signs a receipt for `fields` of a version this member may receive, closing its transfer:
    /// authorized exactly like the chunks (every 信息项 named; a table receipt must name them),
    /// and the bytes are what this node actually sent in that transfer, whatever the consumer
    /// claims. The transfer is logged in this node's feed with the receipt's id.
    async fn receipt(
        &self,
        code: &ResourceCode,
        version: u64,
        fields: Vec<String>,
        grant: Option<&[u8]>,
        requester: &NodeId,
    ) -> Result<DataResponse, Refusal> {
        let record = self.pulled(code)?;
        let announced = self.announced(code, Some(version))?;
        let indexed = self.indexed(code, &announced)?;
        let scopes: Vec<Option<String>> = match &indexed.manifest.body {
            Body::Table { columns, .. } => {
                if fields.is_empty() {
                    return Err((
                        RefusalKind::NotFound,
                        format!("a receipt for table {code} must name the 信息项 received"),
                    ));
                }
                let unique: std::collections::BTreeSet<&String> = fields.iter().collect();
                if unique.len() != fields.len() || fields.len() > columns.len() {
                    return Err((
                        RefusalKind::NotFound,
                        format!(
                            "a receipt names each 信息项 of {code} once, at most {} of them",
                            columns.len()
                        ),
                    ));
                }
                if let Some(f) = fields
                    .iter()
                    .find(|f| !columns.iter().any(|c| &c.name == *f))
                {
                    return Err((
                        RefusalKind::NotFound,
                        format!("{code} version {version} has no 信息项 {f:?}"),
                    ));
                }
                fields.iter().cloned().map(Some).collect()
            }
            Body::File { .. } if !fields.is_empty() => {
                return Err((
                    RefusalKind::NotFound,
                    format!("{code} version {version} is a file: a receipt names no 信息项"),
                ))
            }
            Body::File { .. } => vec![None],
        };
        let grant_id = self.decide(&record, requester, grant, scopes).await?;
        let mut transfer = self
            .served
            .complete(requester, code, version)
            .ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!("nothing of {code} version {version} was sent to you since your last receipt"),
                )
            })?;
        let receipt = huitong_protocol::receipt::Receipt {
            layout: huitong_protocol::receipt::RECEIPT_VERSION,
            provider: self.state.id(),
            consumer: *requester,
            code: code.clone(),
            version,
            manifest: announced.manifest,
            fields,
            bytes: transfer.bytes,
            grant: grant_id,
            signed_at_ms: crate::state::now_ms(),
        };
        let signed = huitong_protocol::receipt::SignedReceipt::seal(&self.state.key, &receipt);
        tracing::info!(target: "huitong::audit", receipt = %signed.id, %code, version, bytes = transfer.bytes, consumer = %requester, "signed a transfer receipt");
        transfer.receipt = Some(signed.id.clone());
        if let Some(t) = served::log(&self.feeds, &self.net, transfer).await {
            self.served.log_later(t);
        }
        Ok(DataResponse::Receipt(ByteBuf::from(signed.bytes)))
    }

    async fn chunk(
        &self,
        code: &ResourceCode,
        version: u64,
        hash: &ChunkHash,
        grant: Option<&[u8]>,
        requester: &NodeId,
    ) -> Result<Chunk, Refusal> {
        let record = self.pulled(code)?;
        let announced = self.announced(code, Some(version))?;
        let indexed = self.indexed(code, &announced)?;
        let not_here = || {
            (
                RefusalKind::NotFound,
                format!("chunk {hash} is not part of {code} version {version}"),
            )
        };
        let place = *indexed.places.get(hash).ok_or_else(not_here)?;
        let (field, grant_id) = match (place, &indexed.manifest.body) {
            (Place::Column(i), Body::Table { columns, .. }) => {
                let name = columns.get(i).ok_or_else(not_here)?.name.clone();
                let id = self
                    .decide(&record, requester, grant, vec![Some(name.clone())])
                    .await?;
                (Some(name), id)
            }
            (Place::File, _) => (
                None,
                self.decide(&record, requester, grant, vec![None]).await?,
            ),
            // The reject report holds every column's text: open only when every column is.
            (Place::Report, Body::Table { columns, .. })
                if columns
                    .iter()
                    .all(|c| access::need(&record, Scope::Column(&c.name)) == Ok(Need::Open)) =>
            {
                (None, None)
            }
            _ => {
                return Err((
                    RefusalKind::NeedsGrant,
                    format!("chunk {hash} of {code} holds data that is not 无条件共享"),
                ))
            }
        };
        // Every chunk is logged as part of a transfer: nothing is sent that could not be logged
        // (review s7, L3: a suspended node, or one whose org code the charter does not admit,
        // served on and dropped the records).
        if let Some(closed) = self.feeds.closed() {
            self.state.reject("transfer_unloggable");
            return Err((
                RefusalKind::Unavailable,
                format!("the provider cannot log transfers now, so it sends no data: {closed}"),
            ));
        }
        // Bounded per consumer before it is sent.
        let quota = self
            .state
            .with_charter(|c| c.map(|c| c.feed_quota).unwrap_or_default());
        let per_hour = quota.entries_per_hour / CONSUMER_SHARE_OF_QUOTA;
        self.served
            .admit(requester, code, version, per_hour)
            .map_err(|busy| {
                self.state.reject("transfer_budget");
                (RefusalKind::Unavailable, busy.to_string())
            })?;
        // Held until the chunk has been written to the stream (or its write missed the deadline).
        let permit = self
            .limits
            .sending(requester)
            .await
            .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?;
        let sending = self.state.transfer.sending();
        let state = self.state.clone();
        let h = *hash;
        let bytes = tokio::task::spawn_blocking(move || state.chunks.read(&h))
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
            })?;
        Ok(Chunk {
            bytes,
            manifest: announced.manifest,
            field,
            grant: grant_id,
            _permit: permit,
            _sending: sending,
        })
    }
}

/// A chunk read for sending, with what the transfer log needs to know of it.
struct Chunk {
    bytes: Vec<u8>,
    manifest: ChunkHash,
    field: Option<String>,
    grant: Option<String>,
    /// Held until the chunk has been written to the stream.
    _permit: SendPermit,
    /// Counted in `status` while held.
    _sending: crate::stats::Sending,
}
