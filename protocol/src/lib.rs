//! Huitong protocol: the types every node agrees on, their CBOR codecs and their validation.
//!
//! This crate does no I/O and reads no clock: callers pass the current time in. Everything a
//! node signs, stores or sends over the wire is defined here, together with the size limit its
//! decoder enforces. `docs/protocol.md` describes the byte layout with test vectors that
//! `tests/vectors.rs` regenerates.
#![deny(missing_docs, unreachable_pub)]

pub mod actor;
pub mod application;
pub mod audit;
mod bytes32;
pub mod call;
pub mod catalogue;
pub mod charter;
pub mod codec;
pub mod dataset;
pub mod envelope;
pub mod feed;
pub mod grant;
pub mod identity;
pub mod receipt;
pub mod refusal;
pub mod resource_code;
pub mod uscc;
pub mod wire;
pub mod zip215;

pub use actor::Actor;
pub use catalogue::{Entry, FieldError, ValidationErrors};
pub use charter::{Charter, Member, MemberStatus, Role};
pub use envelope::{Envelope, Kind};
pub use feed::{EntryHash, Event, FeedEntry};
pub use identity::{NodeId, SecretKey};
pub use resource_code::{Classification, ResourceCode};
pub use uscc::Uscc;
