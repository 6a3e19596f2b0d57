//! Deliberate misbehaviour for tests, so they can check that the other nodes catch it.
//!
//! Compiled in only with the `fault-injection` feature, which only the tests crate enables
//! (as a dev-dependency feature, so `cargo build --release --workspace` leaves it out). A test
//! switches a fault on for one running node by writing its name as a line of `<node dir>/faults`;
//! the file is read at each check. Without the feature every fault is off and no file is read.
//!
//! Layering: a leaf. Callers pass the node directory (`NodeState::dir`).

use std::path::Path;

/// Whether this binary was built with fault injection (a test build: never deploy it).
pub const COMPILED: bool = cfg!(feature = "fault-injection");

/// Whether fault `name` is switched on for the node in `node_dir`.
pub fn on(node_dir: &Path, name: &str) -> bool {
    lines(node_dir).iter().any(|l| l == name)
}

/// The arguments of fault `name` switched on for the node in `node_dir`: `x` for each line
/// `name:x`.
pub fn args(node_dir: &Path, name: &str) -> Vec<String> {
    lines(node_dir)
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::to_owned))
        .collect()
}

/// The lines of `<node dir>/faults`.
#[cfg(feature = "fault-injection")]
fn lines(node_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(node_dir.join("faults"))
        .map(|s| s.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// No faults without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
fn lines(_node_dir: &Path) -> Vec<String> {
    Vec::new()
}
