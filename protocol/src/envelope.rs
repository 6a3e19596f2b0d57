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

/// Which rules an ed25519 signature is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureRule {
    /// `ed25519-dalek`'s `verify_strict`: what every envelope kind is judged by, and feed
    /// entries of the earlier layout ([`crate::feed::STRICT_FEED_ENTRY_VERSION`]).
    Strict,
    /// ZIP-215 ([`crate::zip215`]): feed entries that name a charter which says so
    /// ([`crate::Charter::signature_rule`]), so a range of them can be checked as one batch.
    Zip215,
}

/// A signed payload. Only [`Envelope::open`], [`Unverified::verify`] and [`Envelope::seal`]
/// make one, so an `Envelope` value always carries a signature that verified — or
/// [`Envelope::from_stored`], for bytes that verified when this node stored them.
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
        Unverified(Self::decode(bytes, expected, limit)?).verify(SignatureRule::Strict)
    }

    /// An envelope of `kind` signed by [`crate::zip215::crafted::key`] with a signature only
    /// ZIP-215 accepts, for tests.
    #[cfg(test)]
    pub(crate) fn crafted_zip215(kind: Kind, payload: Vec<u8>) -> Self {
        let signature = crate::zip215::crafted::sign(&signing_input(kind, &payload));
        Self {
            kind,
            signer: crate::zip215::crafted::key(),
            payload,
            signature,
        }
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

/// A decoded envelope whose signature is not checked yet: its payload may be read to learn
/// which [`SignatureRule`] it is judged by (a feed entry's layout version), and nothing else may
/// be trusted until [`Unverified::verify`] or [`Unverified::verify_zip215_batch`] turns it into
/// an [`Envelope`].
#[derive(Debug)]
pub struct Unverified(Envelope);

impl Unverified {
    /// Decodes `bytes` (at most [`MAX_ENVELOPE_BYTES`]) and checks the shape, not the signature.
    pub fn decode(bytes: &[u8], expected: Kind) -> Result<Self, EnvelopeError> {
        Envelope::decode(bytes, expected, MAX_ENVELOPE_BYTES).map(Self)
    }

    /// The payload bytes as carried, **not yet known to be signed**.
    pub fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    /// Who claims to have signed.
    pub fn signer(&self) -> NodeId {
        self.0.signer
    }

    /// Checks the signature under `rule`.
    pub fn verify(self, rule: SignatureRule) -> Result<Envelope, EnvelopeError> {
        let env = self.0;
        let msg = signing_input(env.kind, &env.payload);
        let ok = match rule {
            SignatureRule::Strict => env.signer.verify(&msg, &env.signature),
            SignatureRule::Zip215 => crate::zip215::verify(&env.signer, &msg, &env.signature),
        };
        if ok {
            Ok(env)
        } else {
            Err(EnvelopeError::BadSignature(env.signer))
        }
    }

    /// Checks every signature under ZIP-215 rules as one batch (several times cheaper than one
    /// by one): all of them verified, or all of them back unchecked when the batch fails (at
    /// least one does not verify, or the OS random source failed), for the caller to check one
    /// by one and learn which.
    pub fn verify_zip215_batch(items: Vec<Self>) -> Result<Vec<Envelope>, Vec<Self>> {
        let msgs: Vec<Vec<u8>> = items
            .iter()
            .map(|u| signing_input(u.0.kind, &u.0.payload))
            .collect();
        let all_good = crate::zip215::verify_batch(
            items
                .iter()
                .zip(&msgs)
                .map(|(u, msg)| (&u.0.signer, msg.as_slice(), &u.0.signature)),
        );
        if all_good {
            Ok(items.into_iter().map(|u| u.0).collect())
        } else {
            Err(items)
        }
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
    fn a_batch_verifies_exactly_when_each_does() {
        let key = SecretKey::from_bytes([7; 32]);
        let other = SecretKey::from_bytes([8; 32]);
        let sealed: Vec<Vec<u8>> = (0..30u8)
            .map(|i| {
                let k = if i % 3 == 0 { &other } else { &key };
                Envelope::seal(Kind::FeedEntry, k, vec![i; 40]).to_bytes()
            })
            .collect();
        let decode = |items: &[Vec<u8>]| {
            items
                .iter()
                .map(|b| Unverified::decode(b, Kind::FeedEntry).unwrap())
                .collect::<Vec<_>>()
        };
        let opened = Unverified::verify_zip215_batch(decode(&sealed)).unwrap();
        for (env, bytes) in opened.iter().zip(&sealed) {
            assert_eq!(env, &Envelope::open(bytes, Kind::FeedEntry).unwrap());
        }
        let mut bad = sealed.clone();
        let n = bad[11].len();
        bad[11][n - 1] ^= 1; // the signature
        let back = Unverified::verify_zip215_batch(decode(&bad)).unwrap_err();
        let verdicts: Vec<bool> = back
            .into_iter()
            .map(|u| u.verify(SignatureRule::Zip215).is_ok())
            .collect();
        let strict: Vec<bool> = bad
            .iter()
            .map(|b| Envelope::open(b, Kind::FeedEntry).is_ok())
            .collect();
        assert_eq!(verdicts, strict);
        assert_eq!(verdicts.iter().filter(|ok| !**ok).count(), 1);
        assert!(!verdicts[11]);
    }
}
