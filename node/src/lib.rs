//! The huitong node: store, network, feeds, catalogue, admin API and CLI.
//!
//! Layering (no cycles): `store`/`chunks` → `state`/`feeds`/`catalogue`/`charter`/`dataset` →
//! `net` → `transfer` → `http` →
//! `daemon` → `cli`. The binary (`main.rs`) only parses arguments and sets up logging.
#![deny(unreachable_pub)]

pub mod access;
pub mod agent;
pub mod api;
pub mod applications;
pub mod audit;
pub mod audit_log;
pub mod auditor;
pub mod catalogue;
pub mod charter;
pub mod chunks;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod dataset;
pub mod durable;
pub mod faults;
pub mod feeds;
pub mod http;
pub mod link;
pub mod net;
pub mod receipts;
pub mod state;
pub mod stats;
pub mod store;
pub mod transfer;
