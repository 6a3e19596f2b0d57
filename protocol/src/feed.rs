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
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::{NodeId, ResourceCode, SecretKey};

/// Version of the feed entry layout (2: entries name the charter version they are judged by).
pub const FEED_ENTRY_VERSION: u8 = 2;

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
    /// Layout version ([`FEED_ENTRY_VERSION`]).
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
    /// Opens envelope bytes and checks everything that needs no local state.
    pub fn open(bytes: &[u8]) -> Result<Self, FeedError> {
        Self::check(Envelope::open(bytes, Kind::FeedEntry)?)
    }

    /// Opens many entries at once (a range answer): exactly what [`VerifiedEntry::open`]
    /// returns for each, in order, with the signatures checked as one batch
    /// ([`Envelope::open_many`]).
    pub fn open_many<B: AsRef<[u8]>>(items: &[B]) -> Vec<Result<Self, FeedError>> {
        Envelope::open_many(items, Kind::FeedEntry)
            .into_iter()
            .map(|envelope| Self::check(envelope?))
            .collect()
    }

    /// Checks an opened envelope's entry: everything that needs no local state.
    fn check(envelope: Envelope) -> Result<Self, FeedError> {
        let entry: FeedEntry = codec::decode(envelope.payload(), MAX_ENVELOPE_BYTES)?;
        if entry.version != FEED_ENTRY_VERSION {
            return Err(FeedError::Version(entry.version));
        }
        if entry.feed != envelope.signer() {
            return Err(FeedError::WrongSigner {
                feed: entry.feed,
                signer: envelope.signer(),
            });
        }
        if entry.seq == 0 || (entry.seq == 1) != (entry.prev == EntryHash::ZERO) {
            return Err(FeedError::Seq(entry.seq));
        }
        if entry.charter == 0 {
            return Err(FeedError::NoCharter);
        }
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
        let hash = EntryHash::of(envelope.payload());
        Ok(Self {
            entry,
            hash,
            envelope,
        })
    }
}
