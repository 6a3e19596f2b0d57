//! Dataset versions on this node: publishing ([`publish`]), the records of versions and
//! manifests ([`records`]), the table layout ([`table`]), input readers ([`input`]), writing a
//! version out ([`export`]), the first rows for a preview ([`preview`]), which versions are kept and collecting the chunks of the others
//! ([`gc`]). Who may receive which columns is [`crate::access`]'s.
//!
//! Layering: beside the other views over the feeds ([`records::View`] is registered by the
//! daemon); above the catalogue, the chunk store and the feeds (publishing appends). The
//! catalogue never names it.

pub mod export;
pub mod gc;
pub mod input;
pub mod preview;
pub mod publish;
pub mod records;
pub mod table;
