//! The request-response codec of `/huitong/feed-sync/1`: one CBOR value per stream direction,
//! read to the end of the stream with a hard size limit checked while reading.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use huitong_protocol::codec::{self, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use huitong_protocol::wire::{SyncRequest, SyncResponse};
use libp2p::StreamProtocol;
use std::io;
use std::sync::Arc;
use tracing::{debug, warn};

/// The protocol name.
pub const PROTOCOL: StreamProtocol =
    StreamProtocol::new(huitong_protocol::wire::FEED_SYNC_PROTOCOL);

/// Why a message was refused by the codec (carried inside `io::Error`).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Larger than the limit.
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
    /// The stream ended mid-message (usually the peer gave up waiting).
    #[error("truncated message")]
    Truncated,
    /// Not CBOR of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl CodecError {
    /// The `status` counter label.
    pub fn label(&self) -> &'static str {
        match self {
            CodecError::TooLarge(_) => "oversize",
            CodecError::Truncated => "truncated",
            CodecError::Malformed(_) => "malformed",
        }
    }
}

/// Called with the counter label of every inbound message the codec refuses (the
/// request-response behaviour reports failed reads only at debug level).
pub type RejectHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The codec.
#[derive(Clone, Default)]
pub struct Codec {
    on_reject: Option<RejectHook>,
}

impl Codec {
    /// A codec that reports refused inbound messages to `hook`.
    pub fn new(hook: Option<RejectHook>) -> Self {
        Self { on_reject: hook }
    }

    fn report(&self, r: io::Result<SyncRequest>) -> io::Result<SyncRequest> {
        if let (Err(e), Some(hook)) = (&r, &self.on_reject) {
            if let Some(c) = e.get_ref().and_then(|e| e.downcast_ref::<CodecError>()) {
                match c {
                    // A requester that gave up waiting (its timeout, a busy node) drops the
                    // stream mid-request: counted, not a warning in the audit log.
                    CodecError::Truncated => {
                        debug!(reason = c.label(), "sync request cut short by the peer")
                    }
                    _ => {
                        warn!(target: "huitong::audit", reason = c.label(), error = %c, "refused sync request")
                    }
                }
                hook(c.label());
            }
        }
        r
    }
}

async fn read_limited<T, M>(io: &mut T, limit: usize) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: serde::de::DeserializeOwned,
{
    let mut buf = Vec::new();
    io.take(limit as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            CodecError::TooLarge(limit),
        ));
    }
    codec::decode(&buf, limit).map_err(|e| {
        let e = match e {
            codec::DecodeError::Truncated => CodecError::Truncated,
            e => CodecError::Malformed(e.to_string()),
        };
        io::Error::new(io::ErrorKind::InvalidData, e)
    })
}

async fn write_all<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let r = read_limited(io, MAX_REQUEST_BYTES).await;
        self.report(r)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, codec::encode(&req)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, codec::encode(&res)).await
    }
}
