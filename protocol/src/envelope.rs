//! Signed envelopes: the exact payload bytes, a domain-separation tag for their kind, the
//! signer's public key and an ed25519 signature.
//!
//! Wire form (CBOR array): `[1, tag: text, signer: bytes(32), payload: bytes, signature: bytes(64)]`.
//! The signature covers `tag || 0x00 || payload`. Verification checks the signature over the
//! payload bytes as carried and never re-encodes anything, so a payload decoded after
//! verification is exactly what the signer signed.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec::{self, DecodeError, MAX_ENVELOPE_BYTES};
use crate::{NodeId, SecretKey};

/// Version of the envelope layout.
pub const ENVELOPE_VERSION: u8 = 1;

/// What an envelope carries; each kind has its own signature domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A [`crate::FeedEntry`].
    FeedEntry,
    /// A [`crate::Charter`].
    Charter,
    /// A dataset version's [`crate::dataset::Manifest`].
    Manifest,
    /// A provider's [`crate::receipt::Receipt`] for a completed pull.
    Receipt,
    /// A provider's [`crate::call::Answer`] to an API service call.
    CallAnswer,
}

impl Kind {
    /// The domain-separation tag.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::FeedEntry => "huitong/feed-entry/v1",
            Kind::Charter => "huitong/charter/v1",
            Kind::Manifest => "huitong/dataset-manifest/v1",
            Kind::Receipt => "huitong/transfer-receipt/v1",
            Kind::CallAnswer => "huitong/call-answer/v1",
        }
    }

    /// Whether this kind's signatures are judged by ZIP-215 rules ([`crate::zip215`]): feed
    /// entries, which arrive alone or by the thousand and must get one verdict either way.
    /// Every other kind is verified strictly.
    pub fn zip215(self) -> bool {
        matches!(self, Kind::FeedEntry)
    }

    fn from_tag(tag: &str) -> Option<Self> {
        [
            Kind::FeedEntry,
            Kind::Charter,
            Kind::Manifest,
            Kind::Receipt,
            Kind::CallAnswer,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)
    }
}

/// A signed payload. Only [`Envelope::open`] and [`Envelope::seal`] make one, so an `Envelope`
/// value always carries a signature that verified — or [`Envelope::from_stored`], for bytes that
/// verified when this node stored them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    kind: Kind,
    signer: NodeId,
    payload: Vec<u8>,
    signature: [u8; 64],
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not decodable or too large.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Unknown layout version.
    #[error("unsupported envelope version {0}")]
    Version(u8),
    /// Unknown or unexpected kind.
    #[error("envelope kind {found:?} where {expected:?} was expected")]
    Kind {
        /// Tag found.
        found: String,
        /// Tag expected.
        expected: &'static str,
    },
    /// Signer is not a valid key or signature is not 64 bytes.
    #[error("malformed signer key or signature")]
    Shape,
    /// The signature does not verify.
    #[error("signature does not verify for signer {0}")]
    BadSignature(NodeId),
}

#[derive(Serialize, Deserialize)]
struct Wire(u8, String, ByteBuf, ByteBuf, ByteBuf);

fn signing_input(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let tag = kind.tag().as_bytes();
    let mut msg = Vec::with_capacity(tag.len() + 1 + payload.len());
    msg.extend_from_slice(tag);
    msg.push(0);
    msg.extend_from_slice(payload);
    msg
}

impl Envelope {
    /// Signs `payload` as `kind`.
    pub fn seal(kind: Kind, key: &SecretKey, payload: Vec<u8>) -> Self {
        let signature = key.sign(&signing_input(kind, &payload));
        Self {
            kind,
            signer: key.public(),
            payload,
            signature,
        }
    }

    /// Decodes `bytes` (at most [`MAX_ENVELOPE_BYTES`]) and verifies the signature.
    pub fn open(bytes: &[u8], expected: Kind) -> Result<Self, EnvelopeError> {
        Self::open_limited(bytes, expected, MAX_ENVELOPE_BYTES)
    }

    /// Decodes envelope bytes *without* checking the signature: only for bytes this node
    /// verified before it stored them (reading its own store back).
    pub fn from_stored(bytes: &[u8], expected: Kind) -> Result<Self, EnvelopeError> {
        Self::decode(bytes, expected, MAX_ENVELOPE_BYTES)
    }

    /// Like [`Envelope::open`] with another size limit (manifests are larger than entries).
    pub fn open_limited(bytes: &[u8], expected: Kind, limit: usize) -> Result<Self, EnvelopeError> {
        let env = Self::decode(bytes, expected, limit)?;
        let msg = signing_input(expected, &env.payload);
        let ok = if expected.zip215() {
            crate::zip215::verify(&env.signer, &msg, &env.signature)
        } else {
            env.signer.verify(&msg, &env.signature)
        };
        if !ok {
            return Err(EnvelopeError::BadSignature(env.signer));
        }
        Ok(env)
    }

    /// Opens many envelopes at once: exactly what [`Envelope::open`] returns for each, in
    /// order. For a kind judged by ZIP-215 the signatures are checked as one batch (several
    /// times cheaper), and one by one only when the batch fails, to tell which; other kinds are
    /// opened one by one.
    pub fn open_many<B: AsRef<[u8]>>(
        items: &[B],
        expected: Kind,
    ) -> Vec<Result<Self, EnvelopeError>> {
        if !expected.zip215() {
            return items
                .iter()
                .map(|b| Self::open(b.as_ref(), expected))
                .collect();
        }
        let decoded: Vec<Result<(Self, Vec<u8>), EnvelopeError>> = items
            .iter()
            .map(|b| {
                let env = Self::decode(b.as_ref(), expected, MAX_ENVELOPE_BYTES)?;
                let msg = signing_input(expected, &env.payload);
                Ok((env, msg))
            })
            .collect();
        let all_good = crate::zip215::verify_batch(
            decoded
                .iter()
                .flatten()
                .map(|(env, msg)| (&env.signer, msg.as_slice(), &env.signature)),
        );
        decoded
            .into_iter()
            .map(|d| {
                let (env, msg) = d?;
                if all_good || crate::zip215::verify(&env.signer, &msg, &env.signature) {
                    Ok(env)
                } else {
                    Err(EnvelopeError::BadSignature(env.signer))
                }
            })
            .collect()
    }

    /// Decodes and checks the shape, not the signature.
    fn decode(bytes: &[u8], expected: Kind, limit: usize) -> Result<Self, EnvelopeError> {
        let Wire(version, tag, signer, payload, signature) = codec::decode(bytes, limit)?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        match Kind::from_tag(&tag) {
            Some(k) if k == expected => {}
            _ => {
                return Err(EnvelopeError::Kind {
                    found: tag,
                    expected: expected.tag(),
                })
            }
        }
        let signer: [u8; 32] = signer
            .into_vec()
            .try_into()
            .map_err(|_| EnvelopeError::Shape)?;
        let signer = NodeId::from_bytes(signer).map_err(|_| EnvelopeError::Shape)?;
        let signature: [u8; 64] = signature
            .into_vec()
            .try_into()
            .map_err(|_| EnvelopeError::Shape)?;
        let payload = payload.into_vec();
        Ok(Self {
            kind: expected,
            signer,
            payload,
            signature,
        })
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(&Wire(
            ENVELOPE_VERSION,
            self.kind.tag().to_owned(),
            ByteBuf::from(self.signer.0.to_vec()),
            ByteBuf::from(self.payload.clone()),
            ByteBuf::from(self.signature.to_vec()),
        ))
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Who signed.
    pub fn signer(&self) -> NodeId {
        self.signer
    }

    /// The signed payload bytes, exactly as signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::from_bytes([7; 32]);
        let env = Envelope::seal(Kind::FeedEntry, &key, b"hello".to_vec());
        let bytes = env.to_bytes();
        assert_eq!(Envelope::open(&bytes, Kind::FeedEntry).unwrap(), env);
        // Same bytes under another kind's domain do not verify.
        assert!(matches!(
            Envelope::open(&bytes, Kind::Charter),
            Err(EnvelopeError::Kind { .. })
        ));
        let mut forged = bytes.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(matches!(
            Envelope::open(&forged, Kind::FeedEntry),
            Err(EnvelopeError::BadSignature(_))
        ));
        assert!(matches!(
            Envelope::open(&[0xff, 0x00], Kind::FeedEntry),
            Err(EnvelopeError::Decode(_))
        ));
        let big = vec![0u8; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::open(&big, Kind::FeedEntry),
            Err(EnvelopeError::Decode(DecodeError::TooLarge { .. }))
        ));
    }

    #[test]
    fn opening_many_is_opening_each() {
        let key = SecretKey::from_bytes([7; 32]);
        let other = SecretKey::from_bytes([8; 32]);
        let good: Vec<Vec<u8>> = (0..30u8)
            .map(|i| {
                let k = if i % 3 == 0 { &other } else { &key };
                Envelope::seal(Kind::FeedEntry, k, vec![i; 40]).to_bytes()
            })
            .collect();
        let verdicts = |items: &[Vec<u8>], kind| {
            Envelope::open_many(items, kind)
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        };
        let each = |items: &[Vec<u8>], kind| {
            items
                .iter()
                .map(|b| Envelope::open(b, kind).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(verdicts(&good, Kind::FeedEntry).iter().all(Result::is_ok));
        let mut bad = good.clone();
        let n = bad[11].len();
        bad[11][n - 1] ^= 1; // the signature
        bad[20] = vec![0xff, 0x00]; // not CBOR
        bad[25] = Envelope::seal(Kind::Charter, &key, vec![1]).to_bytes(); // another kind
        for items in [&good, &bad] {
            for kind in [Kind::FeedEntry, Kind::Charter] {
                assert_eq!(verdicts(items, kind), each(items, kind));
            }
        }
        let v = verdicts(&bad, Kind::FeedEntry);
        assert_eq!(v.iter().filter(|r| r.is_err()).count(), 3, "{v:?}");
        assert!(v[11].as_ref().is_err_and(|e| e.contains("does not verify")));
    }
}
