//! Requests on the data protocol ([`DATA_PROTOCOL`]) from this node: the network handles they
//! need ([`Transport`]), a stream to a member, one request/response on a new stream (manifests,
//! receipts, audit questions), and the framing both ends use ([`frame`]).
//!
//! Layering: just above [`crate::net`]; below the users of data streams — the transfers
//! ([`crate::transfer`]) and the audit services ([`crate::auditor`]) — which never name each
//! other for it.
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

pub mod bulk;
pub mod frame;
mod node_tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use huitong_protocol::wire::{DataRequest, DataResponse, DATA_PROTOCOL};
use libp2p::{PeerId, Stream, StreamProtocol};

use crate::net::Client;

/// Longest wait for one response.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the pull needs from the network layer.
#[derive(Clone)]
pub struct Transport {
    /// The event loop.
    pub net: Client,
    /// Opens streams.
    pub control: libp2p_stream::Control,
    /// Dials providers' bulk data ports.
    pub bulk: Arc<bulk::BulkTls>,
    /// Where this node's own bulk data port listens (shown by `status`); `None` when off.
    pub bulk_listening: Option<SocketAddr>,
}

/// A stream of the data protocol: on the libp2p connection, or on the bulk data port.
pub enum DataStream {
    /// A libp2p stream.
    Libp2p(Stream),
    /// A TCP + TLS connection of the bulk data port.
    Bulk(Box<bulk::BulkStream>),
}

impl DataStream {
    /// Which data plane carries it: `libp2p` or `tls-tcp`.
    pub fn plane(&self) -> &'static str {
        match self {
            DataStream::Libp2p(_) => "libp2p",
            DataStream::Bulk(_) => "tls-tcp",
        }
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataStream::Libp2p(s) => Pin::new(s).poll_read(cx, buf),
            DataStream::Bulk(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataStream::Libp2p(s) => Pin::new(s).poll_write(cx, buf),
            DataStream::Bulk(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Libp2p(s) => Pin::new(s).poll_flush(cx),
            DataStream::Bulk(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Libp2p(s) => Pin::new(s).poll_close(cx),
            DataStream::Bulk(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Where chunk streams to `peer` are opened: its bulk data port when it has one and the
/// connection to it is direct (a relayed connection says nothing of where the provider can be
/// reached), else the libp2p connection.
#[derive(Clone, Copy, Debug)]
pub enum DataRoute {
    /// The provider's bulk data port.
    Bulk(SocketAddr),
    /// Streams on the libp2p connection.
    Libp2p,
}

/// Asks `peer` for its bulk data port and finds where it is reached: the address of the direct
/// connection to it, with that port. Every failure means the libp2p connection is used, and
/// is logged; a provider whose port failed lately is not asked again
/// ([`bulk::UNREACHABLE_FOR`]).
pub(crate) async fn data_route(t: &Transport, peer: PeerId) -> DataRoute {
    if t.bulk.recently_unreachable(&peer) {
        return DataRoute::Libp2p;
    }
    let Some(ip) = t.net.direct_ip(peer).await else {
        return DataRoute::Libp2p;
    };
    let ask = request_once(t, peer, &DataRequest::BulkPort, 4096);
    match tokio::time::timeout(bulk::HANDSHAKE_TIMEOUT, ask).await {
        Ok(Ok(DataResponse::BulkPort { port: Some(port) })) if port != 0 => {
            DataRoute::Bulk(SocketAddr::new(ip, port))
        }
        Ok(Ok(DataResponse::BulkPort { .. })) => DataRoute::Libp2p,
        Ok(Ok(other)) => {
            tracing::debug!(%peer, ?other, "no bulk data port answer; using the libp2p connection");
            t.bulk.mark_unreachable(peer);
            DataRoute::Libp2p
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "no bulk data port answer; using the libp2p connection");
            t.bulk.mark_unreachable(peer);
            DataRoute::Libp2p
        }
        Err(_) => {
            tracing::debug!(%peer, "no bulk data port answer in time; using the libp2p connection");
            t.bulk.mark_unreachable(peer);
            DataRoute::Libp2p
        }
    }
}

/// A new data stream to `peer` on `route`; a bulk port that cannot be reached falls back to
/// the libp2p connection (logged, and remembered for a while: a firewall that drops the port
/// costs speed, not the pull).
pub(crate) async fn open_data_stream(
    t: &Transport,
    peer: PeerId,
    route: DataRoute,
) -> Result<DataStream, String> {
    if let DataRoute::Bulk(addr) = route {
        match t.bulk.dial(peer, addr).await {
            Ok(s) => return Ok(DataStream::Bulk(Box::new(s))),
            Err(e) => {
                t.bulk.mark_unreachable(peer);
                tracing::warn!(%peer, error = %e, "using the libp2p connection instead of the provider's bulk data port (slower): ask the provider's operator to let TCP port {} through to their node", addr.port());
            }
        }
    }
    open_stream(t, peer).await.map(DataStream::Libp2p)
}

/// A new libp2p stream of the data protocol to `peer`. A stream that cannot be opened is
/// tried once more: the stream is opened on one of the connections to the peer at random, and
/// one of them may be dead without being known as such yet (the peer restarted; a QUIC
/// connection takes its idle timeout to notice).
pub(crate) async fn open_stream(t: &Transport, peer: PeerId) -> Result<Stream, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        t.net.connect(peer).await?;
        let mut control = t.control.clone();
        match control
            .open_stream(peer, StreamProtocol::new(DATA_PROTOCOL))
            .await
        {
            Ok(s) => return Ok(s),
            Err(libp2p_stream::OpenStreamError::Io(e)) if tries < 2 => {
                tracing::debug!(%peer, error = %e, "cannot open a data stream; trying once more");
            }
            Err(e) => return Err(format!("cannot open a data stream to the provider: {e}")),
        }
    }
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
