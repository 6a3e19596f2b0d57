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
#[cfg(feature = "fault-injection")]
pub fn on(state: &NodeState, name: &str) -> bool {
    let Some(dir) = state.audit.dir.parent() else {
        return false;
    };
    std::fs::read_to_string(dir.join("faults"))
        .map(|s| s.lines().any(|l| l.trim() == name))
        .unwrap_or(false)
}

/// Whether fault `name` is switched on for this node: never, without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
pub fn on(_state: &NodeState, _name: &str) -> bool {
    false
}
