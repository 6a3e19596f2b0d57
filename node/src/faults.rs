//! Deliberate misbehaviour for tests, so they can check that the other nodes catch it.
//!
//! Compiled in only with the `fault-injection` feature, which only the tests crate enables
//! (as a dev-dependency feature, so `cargo build --release --workspace` leaves it out). A test
//! switches a fault on for one running node by writing its name as a line of `<node dir>/faults`;
//! the file is read at each check. Without the feature every fault is off and no file is read.

use crate::state::NodeState;

/// Whether this binary was built with fault injection (a test build: never deploy it).
pub const COMPILED: bool = cfg!(feature = "fault-injection");

/// Whether fault `name` is switched on for this node.
pub fn on(state: &NodeState, name: &str) -> bool {
    lines(state).iter().any(|l| l == name)
}

/// The arguments of fault `name` switched on for this node: `x` for each line `name:x`.
pub fn args(state: &NodeState, name: &str) -> Vec<String> {
    lines(state)
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::to_owned))
        .collect()
}

/// The lines of `<node dir>/faults`.
#[cfg(feature = "fault-injection")]
fn lines(state: &NodeState) -> Vec<String> {
    let Some(dir) = state.audit.dir.parent() else {
        return Vec::new();
    };
    std::fs::read_to_string(dir.join("faults"))
        .map(|s| s.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// No faults without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
fn lines(_state: &NodeState) -> Vec<String> {
    Vec::new()
}
