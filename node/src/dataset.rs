//! Dataset versions on this node: publishing ([`publish`]), the records of versions and
//! manifests ([`records`]), the table layout ([`table`]), input readers ([`input`]), writing a
//! version out ([`export`]). Who may receive which columns is [`crate::access`]'s.

pub mod export;
pub mod input;
pub mod publish;
pub mod records;
pub mod table;
