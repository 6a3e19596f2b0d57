//! After a completed pull: ask the provider for a signed receipt, check that it describes this
//! pull, and countersign it by appending it to this node's feed (which carries it to the hub's
//! audit log).

use huitong_protocol::receipt::{SignedReceipt, MAX_RECEIPT_BYTES};
use huitong_protocol::wire::{DataRequest, DataResponse};
use huitong_protocol::{Event, NodeId, ResourceCode};
use libp2p::PeerId;
use tracing::info;

use crate::feeds::Feeds;
use crate::link::{request_once, Transport};

/// What was pulled.
pub struct Pulled<'a> {
    /// The provider.
    pub provider: &'a NodeId,
    /// Resource code.
    pub code: &'a ResourceCode,
    /// Version.
    pub version: u64,
    /// Columns pulled (empty for a file version).
    pub fields: &'a [String],
    /// The grant token presented.
    pub grant: Option<&'a [u8]>,
    /// The person who started the pull, named in the countersigning entry.
    pub by: Option<&'a huitong_protocol::Actor>,
}

/// Obtains, checks and countersigns the receipt; returns its id.
pub async fn obtain(
    feeds: &std::sync::Arc<Feeds>,
    t: &Transport,
    peer: PeerId,
    p: &Pulled<'_>,
) -> Result<String, String> {
    let req = DataRequest::Receipt {
        code: p.code.clone(),
        version: p.version,
        fields: p.fields.to_vec(),
        grant: p.grant.map(|g| serde_bytes::ByteBuf::from(g.to_vec())),
    };
    let response = request_once(t, peer, &req, MAX_RECEIPT_BYTES + 1024).await?;
    let bytes = match response {
        DataResponse::Receipt(b) => b.into_vec(),
        DataResponse::Refused { message, .. } => {
            return Err(format!("the provider refused a receipt: {message}"))
        }
        _ => return Err("unexpected answer to a receipt request".into()),
    };
    let signed = SignedReceipt::open(&bytes).map_err(|e| e.to_string())?;
    let r = &signed.receipt;
    if r.provider != *p.provider
        || r.consumer != feeds.state().id()
        || r.code != *p.code
        || r.version != p.version
        || r.fields != p.fields
    {
        return Err(format!(
            "the provider's receipt does not describe this pull ({} v{} fields {:?})",
            r.code, r.version, r.fields
        ));
    }
    let id = signed.id.clone();
    let f = feeds.clone();
    let by = p.by.cloned();
    let sealed =
        tokio::task::spawn_blocking(move || f.append_as(by.as_ref(), Event::Receipt(bytes)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    t.net.publish(&sealed).await;
    info!(target: "huitong::audit", receipt = %id, code = %p.code, version = p.version, bytes = r.bytes, "countersigned a transfer receipt");
    Ok(id)
}
