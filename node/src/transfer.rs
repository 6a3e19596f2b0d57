//! Dataset transfer between nodes on dedicated libp2p streams ([`DATA_PROTOCOL`]).
//!
//! - [`server`] answers manifest, chunk, receipt and preview requests, each decided by
//!   [`crate::access`] for the member that connected (the provider decides, never the
//!   consumer's CLI).
//! - [`served`] counts what the provider sent and logs each transfer in its own feed.
//! - [`pull`] fetches a version from its provider: several streams in flight, every chunk
//!   verified before it is stored, resumable from the verified chunks after a crash.
//! - [`crate::link`] is the length-prefixed CBOR framing both use, and one request/response on a
//!   new data stream (receipts; the audit services use it too).
//! - [`preview`] asks a provider for the first rows of an 无条件共享 table this node does not
//!   hold (the portal's entry page), checked against the entry and kept per version.
//! - [`assemble`] writes a file version's output while its chunks arrive.
//!
//! Its counters for `status` are [`crate::stats`].
//!
//! Layering: above [`crate::link`] and [`crate::net`], the access policy ([`crate::access`]) and
//! the views it reads and appends to (catalogue, dataset records, applications, through
//! [`crate::feeds`]); the hub's answers to audit questions on the same streams are
//! [`crate::audit::service`]'s, below. Only the daemon, the admin API and the CLI name it.
//!
//! [`DATA_PROTOCOL`]: huitong_protocol::wire::DATA_PROTOCOL

pub mod assemble;
pub mod limits;
pub mod preview;
pub mod pull;
pub mod receipt;
pub mod refs;
pub mod served;
pub mod server;
