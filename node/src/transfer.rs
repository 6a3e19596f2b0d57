//! Dataset transfer between nodes on dedicated libp2p streams ([`DATA_PROTOCOL`]).
//!
//! - [`server`] answers manifest, chunk and receipt requests, each decided by
//!   [`crate::access`] for the member that connected (the provider decides, never the
//!   consumer's CLI).
//! - [`served`] counts what the provider sent and logs each transfer in its own feed.
//! - [`pull`] fetches a version from its provider: several streams in flight, every chunk
//!   verified before it is stored, resumable from the verified chunks after a crash.
//! - [`frame`] is the length-prefixed CBOR framing both use.
//! - [`assemble`] writes a file version's output while its chunks arrive.
//! - [`client`] is one request/response on a new data stream (pulls, receipts, audit questions).
//!
//! Its counters for `status` are [`crate::stats`].
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

pub mod assemble;
pub mod client;
pub mod frame;
pub mod limits;
pub mod pull;
pub mod receipt;
pub mod refs;
pub mod served;
pub mod server;
