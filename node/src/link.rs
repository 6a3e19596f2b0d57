//! Requests on the data protocol ([`DATA_PROTOCOL`]) from this node: the network handles they
//! need ([`Transport`]), a stream to a member, one request/response on a new stream (manifests,
//! receipts, audit questions), and the framing both ends use ([`frame`]).
//!
//! Layering: just above [`crate::net`]; below the users of data streams — the transfers
//! ([`crate::transfer`]) and the audit services ([`crate::auditor`]) — which never name each
//! other for it.
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

pub mod frame;

use std::time::Duration;

use futures::AsyncWriteExt;
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
