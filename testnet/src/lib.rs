//! Launch and drive a local Huitong federation: node directories, an authority key, a signed
//! charter, `huitong run` processes on loopback, health checks, demo catalogue entries and demo
//! datasets.
//!
//! Used by the `huitong-testnet` binary (`huitong testnet up|status|down`), by the multi-node
//! tests and by the benchmarks. It drives nodes only the way a user does: the `huitong` binary
//! and its admin API. It also starts the real database servers the collection and subscription
//! tests and benchmarks use ([`pg`], [`mariadb`]).

pub mod datasets;
pub mod demo;
pub mod ids;
pub mod logins;
pub mod mariadb;
pub mod members;
mod net;
pub mod pg;

pub use net::{Answer, NodeInfo, Options, Testnet, LOG_FILE, OUT_FILE, STATE_FILE};

/// `s` percent-encoded for a URL query (every byte but unreserved ASCII).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
