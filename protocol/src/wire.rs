//! Wire messages between nodes.
//!
//! - Gossip (gossipsub topic `huitong/{federation}/1`): a [`Gossip`] message carrying one signed
//!   feed entry or charter envelope.
//! - Feed sync (request-response, [`FEED_SYNC_PROTOCOL`]): anti-entropy. On every connection and
//!   periodically a node sends its [`Summary`] (`{feed → latest seq}` and its charter version);
//!   the peer answers with its own; each side then asks for the ranges it lacks.
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
}

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
    /// The latest charter envelope.
    Charter,
}

/// A feed-sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's summary.
    Summary(Summary),
    /// Envelope bytes of consecutive entries.
    Entries(Vec<ByteBuf>),
    /// The responder's charter envelope, if it has one.
    Charter(Option<ByteBuf>),
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
}
