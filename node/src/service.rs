//! API services (接口共享): departments' systems call each other's data through their nodes.
//!
//! - [`clients`]: the department systems allowed to call through this node's gateway, each
//!   with its own key.
//! - [`consumer`]: a call made for one of them — the catalogue, this node's grant, the query
//!   sent to the provider's node over libp2p, the signed answer checked.
//! - [`provider`]: a call answered — decided by [`crate::access`] like a pull, for every
//!   信息项 it reads, within the consumer's quota ([`quota`]), answered from the resource's
//!   latest dataset version ([`table`]) or forwarded to the department's own backend
//!   ([`proxy`]), masked as the grant says ([`mask`]), signed.
//! - [`crate::call_log`]: both sides' hash-chained call log.
//!
//! Layering: above the access policy, the catalogue and dataset records, the applications view
//! and [`crate::link`]; below the data server (which answers calls) and the HTTP gateway.

pub mod clients;
pub mod consumer;
pub mod mask;
pub mod provider;
pub mod proxy;
pub mod quota;
pub mod table;
