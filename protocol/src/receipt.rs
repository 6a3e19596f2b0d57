//! Transfer receipts: "served version V, fields F, bytes N to node B under grant G", and the
//! provider's own transfer records.
//!
//! The provider logs every transfer by itself: when a consumer's requests for one version end
//! (the consumer asked for a receipt, or stopped asking for chunks for a while) it appends a
//! [`TransferRecord`] to its own feed ([`crate::Event::Transfer`]) with the bytes and chunks it
//! actually sent, so a transfer leaves a trace in the audit log even if the consumer never asks
//! for a receipt.
//!
//! After a completed pull the consumer asks the provider for a receipt; the provider signs a
//! [`Receipt`] ([`Kind::Receipt`] envelope) after checking it against its own manifest. The
//! consumer countersigns by appending the provider's envelope to its own feed
//! ([`crate::Event::Receipt`]): the feed entry's signature is the countersignature, and the feed
//! carries both to the hub, which logs the receipt in the audit log.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::dataset::ChunkHash;
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::{NodeId, ResourceCode, SecretKey};

/// Layout version of [`Receipt`].
pub const RECEIPT_VERSION: u8 = 1;
/// Largest receipt envelope.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;
/// Most 信息项 a receipt lists.
pub const MAX_RECEIPT_FIELDS: usize = 4096;

/// What the provider served to one consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Layout version ([`RECEIPT_VERSION`]).
    pub layout: u8,
    /// The provider (the signer).
    pub provider: NodeId,
    /// The consumer (the countersigner).
    pub consumer: NodeId,
    /// The resource.
    pub code: ResourceCode,
    /// The dataset version.
    pub version: u64,
    /// BLAKE3 of the version's manifest payload.
    pub manifest: ChunkHash,
    /// The 信息项 served (empty for a file version).
    pub fields: Vec<String>,
    /// Bytes the provider actually sent in the transfer this receipt closes.
    pub bytes: u64,
    /// The grant (application id) it was served under, if any.
    pub grant: Option<String>,
    /// When the provider signed (ms since the Unix epoch).
    pub signed_at_ms: u64,
}

/// How a transfer ended, as the provider saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferOutcome {
    /// The consumer asked for a receipt: it says it has everything it wanted.
    Completed,
    /// The consumer stopped asking (idle, disconnected, killed, or it never asks for receipts).
    Abandoned,
}

impl TransferOutcome {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferOutcome::Completed => "completed",
            TransferOutcome::Abandoned => "abandoned",
        }
    }
}

/// What a provider served one consumer of one version, in the provider's own feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// 32 hex digits chosen by the provider.
    pub id: String,
    /// The consumer.
    pub consumer: NodeId,
    /// The resource.
    pub code: ResourceCode,
    /// The dataset version.
    pub version: u64,
    /// BLAKE3 of the version's manifest payload.
    pub manifest: ChunkHash,
    /// The 信息项 whose chunks were sent (empty for a file version).
    pub fields: Vec<String>,
    /// The grant (application id) it was served under, if any.
    pub grant: Option<String>,
    /// Bytes of chunk data actually sent.
    pub bytes: u64,
    /// Chunks actually sent.
    pub chunks: u64,
    /// First chunk sent (ms since the Unix epoch).
    pub started_ms: u64,
    /// Last chunk sent, or the receipt (ms).
    pub ended_ms: u64,
    /// How it ended.
    pub outcome: TransferOutcome,
    /// The receipt signed for it, when the consumer asked for one.
    pub receipt: Option<String>,
}

impl TransferRecord {
    /// Checks the shape rules.
    pub fn check(&self) -> Result<(), String> {
        if !crate::application::is_id(&self.id) {
            return Err("transfer id must be 32 lower-case hex digits".into());
        }
        if self.fields.len() > MAX_RECEIPT_FIELDS {
            return Err(format!("at most {MAX_RECEIPT_FIELDS} 信息项"));
        }
        if self.ended_ms < self.started_ms {
            return Err("a transfer cannot end before it starts".into());
        }
        Ok(())
    }
}

/// A receipt whose provider signature verified.
#[derive(Clone, Debug)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// 16 hex digits of BLAKE3 over the signed payload: the receipt's id.
    pub id: String,
    /// The envelope bytes as signed.
    pub bytes: Vec<u8>,
}

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Bad envelope (size, CBOR, kind, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Payload is not a receipt.
    #[error("payload is not a receipt: {0}")]
    Payload(#[from] DecodeError),
    /// A rule of the layout is broken.
    #[error("invalid receipt: {0}")]
    Invalid(String),
}

impl SignedReceipt {
    /// Signs a receipt with the provider's key.
    pub fn seal(key: &SecretKey, receipt: &Receipt) -> Self {
        let envelope = Envelope::seal(Kind::Receipt, key, codec::encode(receipt));
        Self::from_envelope(receipt.clone(), &envelope)
    }

    fn from_envelope(receipt: Receipt, envelope: &Envelope) -> Self {
        Self {
            receipt,
            id: receipt_id(envelope.payload()),
            bytes: envelope.to_bytes(),
        }
    }

    /// Opens envelope bytes: size, signature, layout, and the signer is the provider named.
    pub fn open(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let envelope = Envelope::open_limited(bytes, Kind::Receipt, MAX_RECEIPT_BYTES)?;
        let receipt: Receipt = codec::decode(envelope.payload(), MAX_RECEIPT_BYTES)?;
        if receipt.layout != RECEIPT_VERSION {
            return Err(ReceiptError::Invalid(format!(
                "unsupported layout {}",
                receipt.layout
            )));
        }
        if envelope.signer() != receipt.provider {
            return Err(ReceiptError::Invalid(format!(
                "signed by {} but names provider {}",
                envelope.signer(),
                receipt.provider
            )));
        }
        if receipt.fields.len() > MAX_RECEIPT_FIELDS {
            return Err(ReceiptError::Invalid(format!(
                "more than {MAX_RECEIPT_FIELDS} fields"
            )));
        }
        Ok(Self::from_envelope(receipt, &envelope))
    }
}

/// The id of a receipt: 16 hex digits of BLAKE3 over its signed payload.
pub fn receipt_id(payload: &[u8]) -> String {
    hex::encode(&blake3::hash(payload).as_bytes()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(provider: &SecretKey, consumer: &SecretKey) -> Receipt {
        Receipt {
            layout: RECEIPT_VERSION,
            provider: provider.public(),
            consumer: consumer.public(),
            code: ResourceCode::parse("102001/000001").expect("valid code"),
            version: 3,
            manifest: ChunkHash([7; 32]),
            fields: vec!["统一社会信用代码".into()],
            bytes: 1234,
            grant: None,
            signed_at_ms: 1,
        }
    }

    #[test]
    fn round_trip_and_signer_must_be_provider() {
        let (p, c) = (
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([2; 32]),
        );
        let r = receipt(&p, &c);
        let sealed = SignedReceipt::seal(&p, &r);
        let opened = SignedReceipt::open(&sealed.bytes).expect("opens");
        assert_eq!(opened.receipt, r);
        assert_eq!(opened.id, sealed.id);
        assert_eq!(opened.id.len(), 16);
        // Signed by the consumer instead of the provider: refused.
        let forged = SignedReceipt::seal(&c, &r);
        assert!(matches!(
            SignedReceipt::open(&forged.bytes),
            Err(ReceiptError::Invalid(_))
        ));
        // A flipped byte breaks the signature.
        let mut bad = sealed.bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(SignedReceipt::open(&bad).is_err());
    }
}
