//! Feed entries: each node's append-only, hash-chained, signed log of public events.
//!
//! Entry `n` carries `seq = n` (from 1) and `prev`, the [`EntryHash`] of entry `n-1` (all zero
//! for entry 1). The hash of an entry is BLAKE3 over its signed payload bytes, so it is fixed by
//! what the signer signed, not by how an envelope happens to be encoded. Two different entries
//! with the same feed and seq are a fork.

use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::application::GrantEvent;
use crate::catalogue::{Entry, ValidationErrors};
use crate::codec::{self, DecodeError, MAX_ENVELOPE_BYTES};
use crate::dataset::DatasetVersion;
use crate::envelope::{Envelope, EnvelopeError, Kind, SignatureRule, Unverified};
use crate::{NodeId, ResourceCode, SecretKey};

/// Version of the feed entry layout a node signs under a charter whose rules are ZIP-215
/// ([`crate::Charter::signature_rule`]): 3, signed for ZIP-215 rules.
pub const FEED_ENTRY_VERSION: u8 = 3;
/// The earlier layout, judged by strict rules: what a node signs under a charter of layout 1.
/// (Layout 2 brought [`FeedEntry::charter`]; layout 3 changes nothing but the rules.)
pub const STRICT_FEED_ENTRY_VERSION: u8 = 2;

/// The rules an entry of layout `version` is judged by, or `None` for a layout this node
/// does not know.
pub fn signature_rule(version: u8) -> Option<SignatureRule> {
    match version {
        STRICT_FEED_ENTRY_VERSION => Some(SignatureRule::Strict),
        FEED_ENTRY_VERSION => Some(SignatureRule::Zip215),
        _ => None,
    }
}

/// The layout a node signs an entry in, to be judged by `rule` (the rule of the charter
/// version the entry names).
pub fn entry_version(rule: SignatureRule) -> u8 {
    match rule {
        SignatureRule::Strict => STRICT_FEED_ENTRY_VERSION,
        SignatureRule::Zip215 => FEED_ENTRY_VERSION,
    }
}

/// BLAKE3 of an entry's signed payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryHash(#[serde(with = "crate::bytes32")] pub [u8; 32]);

impl EntryHash {
    /// The `prev` of entry 1.
    pub const ZERO: EntryHash = EntryHash([0; 32]);

    /// Hashes payload bytes.
    pub fn of(payload: &[u8]) -> Self {
        Self(*blake3::hash(payload).as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryHash({})", &self.to_hex()[..16])
    }
}

/// A public event recorded in a feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// A new catalogue entry.
    CataloguePublished(Entry),
    /// A changed catalogue entry (same provider and code).
    CatalogueUpdated(Entry),
    /// A catalogue entry taken down (已下架).
    CatalogueWithdrawn {
        /// The withdrawn code.
        code: ResourceCode,
        /// Why.
        reason: String,
    },
    /// A new version of a dataset of one of this feed's catalogue entries.
    DatasetPublished(DatasetVersion),
    /// An application or grant event (see [`crate::application`]).
    Grant(GrantEvent),
    /// A transfer receipt: the provider's signed [`crate::receipt::Receipt`] envelope, in the
    /// consumer's feed (whose entry signature is the countersignature).
    Receipt(#[serde(with = "serde_bytes")] Vec<u8>),
    /// What this (provider) node sent one consumer of one version: logged by the provider
    /// itself, whether or not the consumer asks for a receipt.
    Transfer(crate::receipt::TransferRecord),
    /// This node's API call log head ([`crate::call::LogHead`]), anchored at least every
    /// minute while calls are made, so each call can be proved from the hub's audit log.
    CallLogHead(crate::call::LogHead),
}

/// One entry of a feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Layout version ([`FEED_ENTRY_VERSION`] or [`STRICT_FEED_ENTRY_VERSION`]): which rules
    /// the signature is judged by ([`signature_rule`]).
    pub version: u8,
    /// The feed: its owner's node key. Must equal the envelope signer.
    pub feed: NodeId,
    /// Position, from 1.
    pub seq: u64,
    /// Hash of entry `seq - 1`, or [`EntryHash::ZERO`].
    pub prev: EntryHash,
    /// Milliseconds since the Unix epoch, as the signer's clock said; never less than the
    /// previous entry's.
    pub timestamp_ms: u64,
    /// The charter version the signer held when it signed, never less than the previous
    /// entry's: the entry is judged by that version ([`crate::charter::History::judge`]).
    pub charter: u64,
    /// What happened.
    pub event: Event,
    /// The person signed in to the node who caused the event (an approver, a cataloguer);
    /// `None` when the node acted by itself or through its admin token. Absent from the
    /// payload when `None`, so entries without it read and hash as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
}

/// A feed entry that passed signature and shape checks.
#[derive(Clone, Debug)]
pub struct VerifiedEntry {
    /// The decoded entry.
    pub entry: FeedEntry,
    /// Hash of the signed payload.
    pub hash: EntryHash,
    /// The envelope as received, for storage and forwarding.
    pub envelope: Envelope,
}

/// Why a feed entry was refused before any membership or chain check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// Bad envelope (size, CBOR, kind, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Payload is not a feed entry.
    #[error("payload is not a feed entry: {0}")]
    Payload(#[from] DecodeError),
    /// Unknown layout version.
    #[error("unsupported feed entry version {0}")]
    Version(u8),
    /// The signer is not the feed owner.
    #[error("entry of feed {feed} signed by {signer}: only a feed's owner may sign its entries")]
    WrongSigner {
        /// Feed owner.
        feed: NodeId,
        /// Actual signer.
        signer: NodeId,
    },
    /// Seq 0 or a chain start that does not point at zero.
    #[error("seq {0} is not valid (feeds start at 1, entry 1 has a zero prev hash)")]
    Seq(u64),
    /// The entry names no charter version.
    #[error("the entry names charter version 0 (entries name the charter version their signer held, from 1)")]
    NoCharter,
    /// The carried application or grant event breaks a rule.
    #[error("invalid application or grant event: {0}")]
    Grant(String),
    /// The carried receipt does not verify or is not the feed owner's.
    #[error("invalid receipt: {0}")]
    Receipt(String),
    /// The carried call log anchor is malformed.
    #[error("invalid call log anchor: {0}")]
    CallLog(String),
    /// The carried dataset announcement breaks a rule.
    #[error("invalid dataset announcement: {0}")]
    Dataset(String),
    /// The person named as having caused the event is not a valid account.
    #[error("invalid actor: {0}")]
    Actor(String),
    /// The carried catalogue entry breaks the catalogue rules.
    #[error("invalid catalogue entry: {0}")]
    Invalid(ValidationErrors),
}

impl FeedEntry {
    /// Signs this entry with the feed owner's key.
    pub fn seal(&self, key: &SecretKey) -> VerifiedEntry {
        let payload = codec::encode(self);
        let hash = EntryHash::of(&payload);
        VerifiedEntry {
            entry: self.clone(),
            hash,
            envelope: Envelope::seal(Kind::FeedEntry, key, payload),
        }
    }
}

/// An entry's timestamp and the charter version it names: what judging the next entry of the
/// feed needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    /// [`FeedEntry::timestamp_ms`].
    pub timestamp_ms: u64,
    /// [`FeedEntry::charter`].
    pub charter: u64,
}

impl Stamp {
    /// Reads the stamp of an entry this node verified before it stored it (no signature check;
    /// the event is skipped, not built).
    pub fn from_stored(bytes: &[u8]) -> Result<Self, FeedError> {
        unverified_fields(bytes)
    }
}

/// Where an entry says it sits: its feed and seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Position {
    /// [`FeedEntry::feed`].
    pub feed: NodeId,
    /// [`FeedEntry::seq`].
    pub seq: u64,
}

impl Position {
    /// Reads where envelope bytes say their entry sits, **without checking the signature**:
    /// a cheap look at a range answer (is it the feed and seqs asked for?) before it is queued
    /// for the full check. Nothing read this way may be trusted beyond that.
    pub fn peek(bytes: &[u8]) -> Result<Self, FeedError> {
        unverified_fields(bytes)
    }
}

/// Some fields of the entry in envelope bytes, read without a signature check (the event is
/// skipped, not built).
fn unverified_fields<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FeedError> {
    let envelope = Envelope::from_stored(bytes, Kind::FeedEntry)?;
    Ok(codec::decode(envelope.payload(), MAX_ENVELOPE_BYTES)?)
}

impl VerifiedEntry {
    /// An entry this node verified before it stored it, with its stored hash (no signature
    /// check: for replaying the node's own store).
    pub fn from_stored(bytes: &[u8], hash: EntryHash) -> Result<Self, FeedError> {
        let envelope = Envelope::from_stored(bytes, Kind::FeedEntry)?;
        let entry = codec::decode(envelope.payload(), MAX_ENVELOPE_BYTES)?;
        Ok(Self {
            entry,
            hash,
            envelope,
        })
    }
}

impl VerifiedEntry {
    /// Opens envelope bytes and checks everything that needs no local state: the entry's
    /// fields, then its signature by the rules its layout names.
    pub fn open(bytes: &[u8]) -> Result<Self, FeedError> {
        let (unverified, entry, rule) = Self::unverified(bytes)?;
        Self::verified(unverified.verify(rule)?, entry)
    }

    /// Opens many entries at once (a range answer), in order, **up to and including the first
    /// that does not open** (its error is the last item): each item is what
    /// [`VerifiedEntry::open`] returns for it. The entries' shape is checked first (what picks
    /// the rules and the signer), then the signatures, as one batch when all are judged by ZIP-215 rules (several times
    /// cheaper), one by one otherwise or when the batch fails — and then only up to the first
    /// bad one, so an answer with a bad signature costs the batch and that prefix, no more —
    /// and what each signed entry carries ([`VerifiedEntry::check_content`]).
    pub fn open_many<B: AsRef<[u8]>>(items: &[B]) -> Vec<Result<Self, FeedError>> {
        let mut checked = Vec::with_capacity(items.len());
        let mut first_error = None;
        for b in items {
            match Self::unverified(b.as_ref()) {
                Ok(c) => checked.push(c),
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let mut out: Vec<Result<Self, FeedError>> = Vec::with_capacity(checked.len() + 1);
        let (unverified, rest): (Vec<Unverified>, Vec<(FeedEntry, SignatureRule)>) =
            checked.into_iter().map(|(u, e, r)| (u, (e, r))).unzip();
        let batched = if rest.iter().all(|(_, r)| *r == SignatureRule::Zip215) {
            Unverified::verify_zip215_batch(unverified)
        } else {
            Err(unverified)
        };
        match batched {
            Ok(envelopes) => {
                for (envelope, (entry, _)) in envelopes.into_iter().zip(rest) {
                    let v = Self::verified(envelope, entry);
                    let bad = v.is_err();
                    out.push(v);
                    if bad {
                        return out;
                    }
                }
            }
            Err(unverified) => {
                for (u, (entry, rule)) in unverified.into_iter().zip(rest) {
                    let v = u
                        .verify(rule)
                        .map_err(FeedError::from)
                        .and_then(|envelope| Self::verified(envelope, entry));
                    let bad = v.is_err();
                    out.push(v);
                    if bad {
                        return out;
                    }
                }
            }
        }
        out.extend(first_error.map(Err));
        out
    }

    /// The rules this entry's signature was judged by.
    pub fn rule(&self) -> SignatureRule {
        // The layout was checked when the entry was opened.
        signature_rule(self.entry.version).unwrap_or(SignatureRule::Strict)
    }

    /// Decodes envelope bytes and checks the entry's fields, not its signature: the envelope,
    /// the entry, and the rules its signature is to be judged by.
    fn unverified(bytes: &[u8]) -> Result<(Unverified, FeedEntry, SignatureRule), FeedError> {
        let unverified = Unverified::decode(bytes, Kind::FeedEntry)?;
        let entry: FeedEntry = codec::decode(unverified.payload(), MAX_ENVELOPE_BYTES)?;
        let rule = signature_rule(entry.version).ok_or(FeedError::Version(entry.version))?;
        Self::check_shape(&entry, unverified.signer())?;
        Ok((unverified, entry, rule))
    }

    /// The entry of `envelope`, whose signature verified (its payload is the entry's bytes),
    /// once what it carries is checked too ([`VerifiedEntry::check_content`]).
    fn verified(envelope: Envelope, entry: FeedEntry) -> Result<Self, FeedError> {
        Self::check_content(&entry)?;
        Ok(Self {
            hash: EntryHash::of(envelope.payload()),
            entry,
            envelope,
        })
    }

    /// Checks what choosing the rules and the signer need, before any signature is checked:
    /// the feed is the signer's, the seq and link agree, a charter version is named. (The
    /// event and the actor are checked after the signature, in [`VerifiedEntry::verified`], so
    /// an unsigned forgery is refused as one, not as a bad entry.)
    fn check_shape(entry: &FeedEntry, signer: NodeId) -> Result<(), FeedError> {
        if entry.feed != signer {
            return Err(FeedError::WrongSigner {
                feed: entry.feed,
                signer,
            });
        }
        if entry.seq == 0 || (entry.seq == 1) != (entry.prev == EntryHash::ZERO) {
            return Err(FeedError::Seq(entry.seq));
        }
        if entry.charter == 0 {
            return Err(FeedError::NoCharter);
        }
        Ok(())
    }

    /// Checks what a signed entry carries: the actor, the event, a carried receipt's own
    /// signature.
    fn check_content(entry: &FeedEntry) -> Result<(), FeedError> {
        if let Some(by) = &entry.by {
            by.check().map_err(FeedError::Actor)?;
        }
        match &entry.event {
            Event::CataloguePublished(e) | Event::CatalogueUpdated(e) => {
                e.check().map_err(FeedError::Invalid)?
            }
            Event::CatalogueWithdrawn { .. } => {}
            Event::DatasetPublished(d) if d.version == 0 => {
                return Err(FeedError::Dataset("dataset versions start at 1".into()));
            }
            Event::DatasetPublished(_) => {}
            Event::Grant(g) => g.check().map_err(FeedError::Grant)?,
            Event::Receipt(bytes) => {
                let r = crate::receipt::SignedReceipt::open(bytes)
                    .map_err(|e| FeedError::Receipt(e.to_string()))?;
                if r.receipt.consumer != entry.feed {
                    return Err(FeedError::Receipt(format!(
                        "receipt for {} countersigned by {}",
                        r.receipt.consumer, entry.feed
                    )));
                }
            }
            Event::Transfer(t) => t.check().map_err(FeedError::Receipt)?,
            Event::CallLogHead(h) => h.check().map_err(FeedError::CallLog)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u8, feed: NodeId, seq: u64, prev: EntryHash) -> FeedEntry {
        FeedEntry {
            version,
            feed,
            seq,
            prev,
            timestamp_ms: 1_700_000_000_000 + seq,
            charter: 1,
            event: Event::CatalogueWithdrawn {
                code: ResourceCode::parse("101001/000001").unwrap(),
                reason: format!("test {seq}"),
            },
            by: None,
        }
    }

    /// An entry of `version` by [`crate::zip215::crafted::key`], with a signature only ZIP-215
    /// accepts.
    fn crafted(version: u8) -> Vec<u8> {
        let e = entry(version, crate::zip215::crafted::key(), 1, EntryHash::ZERO);
        Envelope::crafted_zip215(Kind::FeedEntry, codec::encode(&e)).to_bytes()
    }

    #[test]
    fn an_entry_is_judged_by_the_rules_its_layout_names() {
        let zip215 = crafted(FEED_ENTRY_VERSION);
        let opened = VerifiedEntry::open(&zip215).unwrap();
        assert_eq!(opened.rule(), SignatureRule::Zip215);
        assert!(matches!(
            VerifiedEntry::open(&crafted(STRICT_FEED_ENTRY_VERSION)),
            Err(FeedError::Envelope(EnvelopeError::BadSignature(_)))
        ));
        assert!(matches!(
            VerifiedEntry::open(&crafted(1)),
            Err(FeedError::Version(1))
        ));
        // The same verdicts in a batch.
        let key = SecretKey::from_bytes([4; 32]);
        let mut range: Vec<Vec<u8>> = Vec::new();
        let mut prev = EntryHash::ZERO;
        for seq in 1..=5 {
            let v = entry(FEED_ENTRY_VERSION, key.public(), seq, prev).seal(&key);
            prev = v.hash;
            range.push(v.envelope.to_bytes());
        }
        range.insert(2, zip215);
        let opened = VerifiedEntry::open_many(&range);
        assert_eq!(opened.len(), 6);
        assert!(opened.iter().all(Result::is_ok));
        range[2] = crafted(STRICT_FEED_ENTRY_VERSION);
        let opened = VerifiedEntry::open_many(&range);
        assert_eq!(opened.len(), 3, "opened up to the first bad entry");
        assert!(opened[..2].iter().all(Result::is_ok));
        assert!(opened[2].is_err());
    }

    #[test]
    fn a_range_stops_at_its_first_undecodable_entry() {
        let key = SecretKey::from_bytes([4; 32]);
        let mut range: Vec<Vec<u8>> = (1..=4)
            .map(|seq| {
                entry(
                    FEED_ENTRY_VERSION,
                    key.public(),
                    seq,
                    EntryHash([seq as u8; 32]),
                )
                .seal(&key)
                .envelope
                .to_bytes()
            })
            .collect();
        range[0] = entry(FEED_ENTRY_VERSION, key.public(), 1, EntryHash::ZERO)
            .seal(&key)
            .envelope
            .to_bytes();
        range[2] = vec![0xff, 0x00];
        let opened = VerifiedEntry::open_many(&range);
        assert_eq!(opened.len(), 3);
        assert!(opened[..2].iter().all(Result::is_ok));
        assert!(matches!(opened[2], Err(FeedError::Envelope(_))));
    }

    #[test]
    fn what_an_entry_carries_is_judged_after_its_signature() {
        let key = SecretKey::from_bytes([4; 32]);
        let sealed = |seq: u64, event: Event| {
            let mut e = entry(FEED_ENTRY_VERSION, key.public(), seq, EntryHash([1; 32]));
            e.event = event;
            e.seal(&key).envelope.to_bytes()
        };
        let withdrawn = || Event::CatalogueWithdrawn {
            code: ResourceCode::parse("101001/000001").unwrap(),
            reason: "test".into(),
        };
        // A signed entry carrying a receipt that is not one: refused as a bad receipt, and
        // nothing after it in a range is opened.
        let mut range: Vec<Vec<u8>> = (2..=6).map(|seq| sealed(seq, withdrawn())).collect();
        range[2] = sealed(4, Event::Receipt(vec![0xff, 0x00]));
        let opened = VerifiedEntry::open_many(&range);
        assert_eq!(opened.len(), 3);
        assert!(matches!(opened[2], Err(FeedError::Receipt(_))));
        // The same entry with its signature broken is refused for the signature.
        let mut forged = range[2].clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert!(matches!(
            VerifiedEntry::open(&forged),
            Err(FeedError::Envelope(EnvelopeError::BadSignature(_)))
        ));
    }
}
