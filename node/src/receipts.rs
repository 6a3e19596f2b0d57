//! The receipts and transfers views: every transfer receipt of the federation (provider-signed,
//! countersigned by the consumer's feed) and every provider's own transfer record, built in the
//! same `WriteBatch` as the feed entry that carries them, so an auditor can list who pulled what
//! under which grant on any node — also when the consumer never asked for a receipt.
//!
//! Layering: a view over [`crate::feeds`] (registered by the daemon); reads the catalogue.

use huitong_protocol::audit::RecordKind;
use huitong_protocol::receipt::SignedReceipt;
use huitong_protocol::{codec, Event, NodeId};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::feeds::{entry_record, Accepted, Applied};
use crate::state::NodeState;
use crate::store::{StoreError, CF_RECEIPTS, CF_TRANSFERS};
use huitong_protocol::receipt::TransferRecord;

/// One receipt as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// Receipt id.
    pub id: String,
    /// Provider node key.
    pub provider: NodeId,
    /// Consumer node key (the countersigner).
    pub consumer: NodeId,
    /// Resource code.
    pub code: String,
    /// Dataset version.
    pub version: u64,
    /// 信息项 served.
    pub fields: Vec<String>,
    /// Bytes served.
    pub bytes: u64,
    /// Grant (application id).
    pub grant: Option<String>,
    /// When the provider signed (ms).
    pub signed_at_ms: u64,
    /// When the consumer countersigned (its feed entry's time, ms).
    pub countersigned_at_ms: u64,
    /// Seq of the countersigning entry in the consumer's feed.
    pub seq: u64,
    /// The person on the consumer's node who pulled, as the countersigning entry names them.
    #[serde(default)]
    pub by: Option<huitong_protocol::Actor>,
}

/// The receipts and transfers as a view over the feeds. A receipt is logged as a receipt; a
/// transfer record as a transfer, or as refused when the view refused it.
pub struct View;

impl crate::feeds::View for View {
    fn reset(&self, state: &NodeState, batch: &mut WriteBatch) -> Result<(), StoreError> {
        state.store.clear(batch, CF_RECEIPTS)?;
        state.store.clear(batch, CF_TRANSFERS)
    }

    fn apply(&self, state: &NodeState, batch: &mut WriteBatch, a: &Accepted<'_>) -> Applied {
        let (v, e) = (a.entry, &a.entry.entry);
        Ok(match &e.event {
            Event::Receipt(r) => apply(state, batch, r, e)?
                .map(|id| entry_record(v, RecordKind::Receipt, id))
                .into_iter()
                .collect(),
            Event::Transfer(t) => {
                let kind = match apply_transfer(state, batch, &e.feed, a.provider, t, e.seq)? {
                    true => RecordKind::Transfer,
                    false => RecordKind::Refused,
                };
                vec![entry_record(v, kind, t.id.clone())]
            }
            _ => Vec::new(),
        })
    }
}

/// Adds the receipt carried by a feed entry to the view; returns its id.
fn apply(
    state: &NodeState,
    batch: &mut WriteBatch,
    bytes: &[u8],
    e: &huitong_protocol::FeedEntry,
) -> Result<Option<String>, StoreError> {
    let (at_ms, seq) = (e.timestamp_ms, e.seq);
    // Feed entries were opened (and the receipt checked) before they get here.
    let Ok(r) = SignedReceipt::open(bytes) else {
        return Ok(None);
    };
    let rec = ReceiptRecord {
        id: r.id.clone(),
        provider: r.receipt.provider,
        consumer: r.receipt.consumer,
        code: r.receipt.code.to_string(),
        version: r.receipt.version,
        fields: r.receipt.fields,
        bytes: r.receipt.bytes,
        grant: r.receipt.grant,
        signed_at_ms: r.receipt.signed_at_ms,
        countersigned_at_ms: at_ms,
        seq,
        by: e.by.clone(),
    };
    batch.put_cf(
        state.store.cf(CF_RECEIPTS),
        r.id.as_bytes(),
        codec::encode(&rec),
    );
    Ok(Some(r.id))
}

/// Every value of a view's column family, decoded.
fn read_all<T: serde::de::DeserializeOwned>(
    state: &NodeState,
    cf: &'static str,
) -> Result<Vec<T>, StoreError> {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(cf), IteratorMode::Start)
        .map(|kv| {
            let (_, v) = kv?;
            codec::decode(&v, usize::MAX).map_err(|e| StoreError::Corrupt {
                cf,
                detail: e.to_string(),
            })
        })
        .collect()
}

/// Every receipt, oldest first.
pub fn all(state: &NodeState) -> Result<Vec<ReceiptRecord>, StoreError> {
    let mut out: Vec<ReceiptRecord> = read_all(state, CF_RECEIPTS)?;
    out.sort_by_key(|r| r.countersigned_at_ms);
    Ok(out)
}

/// One provider's transfer record as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferEntry {
    /// The provider (the feed that logged it).
    pub provider: NodeId,
    /// Seq of the entry in the provider's feed.
    pub seq: u64,
    /// The record.
    pub record: TransferRecord,
}

/// Adds a provider's transfer record (entry `seq` of `provider`'s feed) to the view, keyed by
/// provider and id, if it is about one of the provider's own resources and a member; returns
/// whether it was added (a record about anything else is refused, and logged as such).
fn apply_transfer(
    state: &NodeState,
    batch: &mut WriteBatch,
    provider: &NodeId,
    provider_uscc: &str,
    record: &TransferRecord,
    seq: u64,
) -> Result<bool, StoreError> {
    // The provider's organisation owns the resource (whichever of its keys, before or after a
    // re-key, published it).
    let own = crate::catalogue::get(&state.store, record.code.as_str())?
        .iter()
        .any(|r| r.entry.provider_code.as_str() == provider_uscc);
    // Any version's member: a consumer removed since is still one the provider served then.
    let member = state.with_history(|h| h.ever_member(&record.consumer));
    if !own || !member {
        tracing::warn!(target: "huitong::audit", %provider, transfer = %record.id, code = %record.code, "refused a transfer record about another provider's resource or a non-member");
        return Ok(false);
    }
    let e = TransferEntry {
        provider: *provider,
        seq,
        record: record.clone(),
    };
    let mut key = provider.0.to_vec();
    key.extend_from_slice(record.id.as_bytes());
    batch.put_cf(state.store.cf(CF_TRANSFERS), key, codec::encode(&e));
    Ok(true)
}

/// Every transfer record, oldest first.
pub fn transfers(state: &NodeState) -> Result<Vec<TransferEntry>, StoreError> {
    let mut out: Vec<TransferEntry> = read_all(state, CF_TRANSFERS)?;
    out.sort_by_key(|t| t.record.ended_ms);
    Ok(out)
}
