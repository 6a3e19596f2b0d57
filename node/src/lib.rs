//! The huitong node: store, network, feeds, catalogue, admin API and CLI.
//!
//! Layering (no cycles): `store` → `state`/`feeds`/`catalogue`/`charter` → `net` → `http` →
//! `daemon` → `cli`. The binary (`main.rs`) only parses arguments and sets up logging.
#![deny(unreachable_pub)]

pub mod api;
pub mod catalogue;
pub mod charter;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod feeds;
pub mod http;
pub mod net;
pub mod state;
pub mod store;
