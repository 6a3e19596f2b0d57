//! Wire messages between nodes.
//!
//! - Gossip (gossipsub topic `huitong/{federation}/1`): a [`Gossip`] message carrying one signed
//!   feed entry or charter envelope.
//! - Feed sync (request-response, [`FEED_SYNC_PROTOCOL`]): anti-entropy. On every connection and
//!   periodically a node sends its [`Summary`] (`{feed → latest seq}` and its charter version);
//!   the peer answers with its own; each side then asks for the ranges it lacks. The summary
//!   also carries the audit checkpoint notes the node vouches for, so a split view reaches every
//!   member even when the gossip that carried it was lost.
//!
//! Requests are at most [`crate::codec::MAX_REQUEST_BYTES`], responses at most
//! [`crate::codec::MAX_RESPONSE_BYTES`].

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::NodeId;

/// The request-response protocol name for feed sync.
pub const FEED_SYNC_PROTOCOL: &str = "/huitong/feed-sync/1";
/// Most entries a node returns for one range request.
pub const MAX_RANGE_ENTRIES: u32 = 2000;

/// The latest seq a node holds of one feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The feed.
    pub feed: NodeId,
    /// Latest contiguous seq held.
    pub seq: u64,
}

/// What a node holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Charter version held.
    pub charter_version: u64,
    /// One head per feed.
    pub heads: Vec<Head>,
    /// Audit checkpoint notes this node vouches for (see [`crate::audit::note`]): its latest
    /// checkpoint and both notes of its newest split-view evidence, at most
    /// [`MAX_SUMMARY_NOTES`] (a receiver ignores the rest). Absent when empty, so a summary
    /// without them reads the same to older nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<ByteBuf>,
}

/// Most checkpoint notes a summary carries: the latest checkpoint and the two notes of each of
/// the four newest pieces of split-view evidence.
pub const MAX_SUMMARY_NOTES: usize = 9;

/// A feed-sync request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// "Here is what I hold; what do you hold?"
    Summary(Summary),
    /// Entries `from..` of `feed`, at most `limit` (capped at [`MAX_RANGE_ENTRIES`]).
    Range {
        /// The feed.
        feed: NodeId,
        /// First seq wanted.
        from: u64,
        /// Most entries wanted.
        limit: u32,
    },
    /// Charter envelopes from version `from` on, oldest first (at most [`MAX_CHARTERS`]).
    Charters {
        /// First version wanted.
        from: u64,
    },
}

/// Most charter versions a node returns for one request.
pub const MAX_CHARTERS: usize = 16;

/// A feed-sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's summary.
    Summary(Summary),
    /// Envelope bytes of consecutive entries.
    Entries(Vec<ByteBuf>),
    /// Charter envelopes, oldest first, consecutive versions.
    Charters(Vec<ByteBuf>),
    /// The request was refused (not a member, malformed, …).
    Refused(String),
}

/// A gossip message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    /// A signed feed entry envelope.
    Entry(ByteBuf),
    /// A signed charter envelope.
    Charter(ByteBuf),
    /// A signed audit-log checkpoint note (see [`crate::audit::note`]), from the hub, a witness
    /// or any member passing on what it saw.
    Checkpoint(ByteBuf),
    /// An omission report: a signed feed entry envelope of an auditable event that a member
    /// found missing from the hub's audit log past its deadline. Receivers check the signature
    /// and that it is an auditable event, then check the log for it themselves.
    Omission(ByteBuf),
}

/// The stream protocol for dataset manifests and chunks (bulk data, not gossip).
///
/// On one stream the consumer sends [`DataRequest`] frames one after another and reads a
/// [`DataResponse`] frame for each; a `Chunk` response is followed by exactly `len` raw bytes.
/// A frame is a 4-byte big-endian length and that many bytes of CBOR, at most
/// [`MAX_DATA_FRAME`] for requests and [`crate::dataset::MAX_MANIFEST_BYTES`] + 4 KiB for
/// responses.
pub const DATA_PROTOCOL: &str = "/huitong/data/1";
/// Largest request frame.
pub const MAX_DATA_FRAME: usize = 64 * 1024;
/// The ALPN protocol of the bulk data port: the same [`DataRequest`]/[`DataResponse`] frames
/// as [`DATA_PROTOCOL`], carried over TCP + TLS 1.3 where both ends prove their node key with a
/// libp2p TLS certificate (one connection per stream).
pub const DATA_TLS_ALPN: &[u8] = b"huitong-data/1";

/// A request on the data protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// The manifest of a version (`None`: the latest).
    Manifest {
        /// Resource code.
        code: crate::ResourceCode,
        /// Version.
        version: Option<u64>,
        /// The grant token, for 有条件共享 resources.
        #[serde(default)]
        grant: Option<ByteBuf>,
    },
    /// One chunk of a version.
    Chunk {
        /// Resource code.
        code: crate::ResourceCode,
        /// Version the chunk belongs to.
        version: u64,
        /// The chunk.
        hash: crate::dataset::ChunkHash,
        /// The grant token, for 有条件共享 resources.
        #[serde(default)]
        grant: Option<ByteBuf>,
    },
    /// A receipt for a completed pull of `fields` of a version (empty: a file version).
    Receipt {
        /// Resource code.
        code: crate::ResourceCode,
        /// Version pulled.
        version: u64,
        /// 信息项 pulled.
        fields: Vec<String>,
        /// The grant token it was pulled under.
        #[serde(default)]
        grant: Option<ByteBuf>,
    },
    /// A question for the hub about its audit log.
    Audit(AuditRequest),
    /// A call to the provider's API service over resource `code` (its latest version).
    Call {
        /// Resource code (an entry with share mode 接口).
        code: crate::ResourceCode,
        /// The grant token, for 有条件共享 信息项.
        #[serde(default)]
        grant: Option<ByteBuf>,
        /// What is asked.
        query: crate::call::Query,
    },
    /// Where this node's bulk data port listens ([`DATA_TLS_ALPN`]), so a consumer can fetch
    /// chunks over TCP + TLS 1.3 instead of this connection; answered by
    /// [`DataResponse::BulkPort`].
    BulkPort,
    /// The first rows of version `version` of an 无条件共享 table, for a portal's preview:
    /// only the 信息项 shared without conditions, at most [`MAX_PREVIEW_ROWS`] rows.
    Preview {
        /// Resource code.
        code: crate::ResourceCode,
        /// Version.
        version: u64,
    },
}

/// Most rows a [`DataResponse::Preview`] holds.
pub const MAX_PREVIEW_ROWS: usize = 10;
/// Most 信息项 a [`DataResponse::Preview`] shows (the first ones of the entry).
pub const MAX_PREVIEW_COLUMNS: usize = 50;
/// Most characters of one cell in a [`DataResponse::Preview`] (longer ones are cut, with `…`).
pub const MAX_PREVIEW_CELL_CHARS: usize = 200;
/// Largest [`DataResponse::Preview`] frame a consumer reads (the bounds above give at most
/// 50 × 10 × 200 characters of up to 4 bytes: 400,000 bytes, plus the names).
pub const MAX_PREVIEW_BYTES: usize = 512 * 1024;

/// Most entries the hub returns for one [`AuditRequest::Entries`].
pub const MAX_AUDIT_ENTRIES: u64 = 256;

/// A question about the hub's audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRequest {
    /// The latest checkpoint note.
    Checkpoint,
    /// A consistency proof from tree size `old` to tree size `new`.
    Consistency {
        /// Smaller size.
        old: u64,
        /// Larger size.
        new: u64,
    },
    /// The entries whose record id is `id` (application id, receipt id, charter version).
    Find {
        /// Record id.
        id: String,
    },
    /// Up to `count` (at most [`MAX_AUDIT_ENTRIES`]) entries from index `from`, for mirrors.
    Entries {
        /// First index.
        from: u64,
        /// How many.
        count: u64,
    },
    /// Entry `index` and its inclusion proof in the tree of size `size`.
    Inclusion {
        /// Entry index.
        index: u64,
        /// Tree size.
        size: u64,
    },
}

/// The hub's answer about its audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditResponse {
    /// The latest checkpoint note (none while the log is empty).
    Checkpoint(Option<ByteBuf>),
    /// Proof hashes (32 bytes each).
    Proof(Vec<ByteBuf>),
    /// Indexes of the entries found.
    Found(Vec<u64>),
    /// Consecutive entries.
    Entries(Vec<ByteBuf>),
    /// An entry and its inclusion proof hashes.
    Entry {
        /// Entry bytes.
        entry: ByteBuf,
        /// Proof hashes (32 bytes each).
        proof: Vec<ByteBuf>,
    },
}

pub use crate::refusal::RefusalKind;

/// A response on the data protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataResponse {
    /// The manifest envelope bytes and its feed announcement.
    Manifest {
        /// The announcement (from the provider's feed).
        announced: crate::dataset::DatasetVersion,
        /// The sealed manifest envelope.
        envelope: ByteBuf,
    },
    /// The chunk follows as `len` raw bytes.
    Chunk {
        /// Length of the raw bytes that follow.
        len: u32,
    },
    /// A signed receipt envelope.
    Receipt(ByteBuf),
    /// An answer about the audit log.
    Audit(AuditResponse),
    /// The provider's answer to a call: a [`crate::call::Answer`] envelope.
    Answer(ByteBuf),
    /// A call over the consumer's quota: try again after `retry_after_ms`.
    Throttled {
        /// When a call would pass, in milliseconds.
        retry_after_ms: u64,
        /// What was exceeded, for people.
        message: String,
        /// The provider's signed word for it: a [`crate::call::Answer`] envelope whose outcome
        /// is [`crate::call::Outcome::Throttled`] (absent from older providers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed: Option<ByteBuf>,
    },
    /// The first rows of a table version: the 信息项 shown and up to [`MAX_PREVIEW_ROWS`]
    /// rows of them (cells cut to [`MAX_PREVIEW_CELL_CHARS`]).
    Preview {
        /// The 信息项 shown, in order.
        columns: Vec<String>,
        /// Rows, each with one cell per column.
        rows: Vec<Vec<String>>,
    },
    /// The TCP port of the provider's bulk data port on the address the consumer reached it
    /// at; `None` when it has none (then the consumer stays on the libp2p connection).
    BulkPort {
        /// The port.
        port: Option<u16>,
    },
    /// Refused, with the reason for a person.
    Refused {
        /// Machine-readable kind.
        kind: RefusalKind,
        /// What was wrong and what to do.
        message: String,
        /// For a call: the provider's signed word for the refusal, a [`crate::call::Answer`]
        /// envelope whose outcome is [`crate::call::Outcome::Refused`] (absent for other
        /// requests, for failures of the provider, and from older providers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed: Option<ByteBuf>,
    },
}

impl DataResponse {
    /// An unsigned refusal.
    pub fn refused(kind: RefusalKind, message: impl Into<String>) -> Self {
        DataResponse::Refused {
            kind,
            message: message.into(),
            signed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// A refusal as a release without signed refusals reads it.
    #[derive(Debug, Deserialize)]
    enum EarlierResponse {
        Refused { kind: RefusalKind, message: String },
    }

    #[test]
    fn a_signed_refusal_reads_as_a_refusal_to_earlier_releases_and_an_unsigned_one_to_this() {
        let signed = DataResponse::Refused {
            kind: RefusalKind::NeedsGrant,
            message: "apply".into(),
            signed: Some(ByteBuf::from(vec![1, 2, 3])),
        };
        let bytes = codec::encode(&signed);
        let EarlierResponse::Refused { kind, message } = codec::decode(&bytes, 1024).unwrap();
        assert_eq!((kind, message.as_str()), (RefusalKind::NeedsGrant, "apply"));
        assert_eq!(codec::decode::<DataResponse>(&bytes, 1024).unwrap(), signed);
        // What an earlier provider sends: no `signed` field at all.
        let plain = DataResponse::refused(RefusalKind::NotFound, "no such resource");
        let bytes = codec::encode(&plain);
        assert!(!bytes.windows(6).any(|w| w == b"signed"));
        assert_eq!(codec::decode::<DataResponse>(&bytes, 1024).unwrap(), plain);
    }
}
