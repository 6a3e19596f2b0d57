//! The hub's test-only audit faults, to show that members catch a dishonest hub for real.
//!
//! Switched on through [`crate::faults`] (a line of `<node dir>/faults`, honoured only with the
//! `fault-injection` feature, which only the tests crate enables; without it nothing is read and
//! the hub is honest):
//!
//! - `split-view:<node key hex>`: the hub answers that member's checkpoint polls with a
//!   hub-signed checkpoint of a different tree of the same size (a split view);
//! - `omit:<record kind or signer key hex>`: the hub drops those records instead of logging them;
//! - `withhold-proofs`: the hub never answers consistency-proof questions;
//! - `no-checkpoint-gossip` (any node; checked in `auditor::watch`): the node gossips no
//!   checkpoint note, so what it saw reaches others only through its anti-entropy summary.

use huitong_protocol::audit::note::{open_checkpoint, sign_checkpoint};
use huitong_protocol::audit::Record;
use huitong_protocol::wire::AuditRequest;
use huitong_protocol::NodeId;

use crate::faults::{args, on};
use crate::state::NodeState;

/// Whether the hub drops this record instead of logging it.
pub fn omit(state: &NodeState, r: &Record) -> bool {
    let signer = r.signer.to_hex();
    args(&state.dir, "omit")
        .iter()
        .any(|w| w == r.kind.as_str() || *w == signer)
}

/// Under `withhold-proofs`, holds a consistency question (this blocking thread) for 30 s,
/// longer than any asker's deadline, so it passes with no answer.
pub fn stall(state: &NodeState, req: &AuditRequest) {
    if matches!(req, AuditRequest::Consistency { .. }) && on(&state.dir, "withhold-proofs") {
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}

/// The checkpoint note the hub shows `requester`: its own, or under `split-view` a hub-signed
/// checkpoint of another tree of the same size.
pub fn shown(state: &NodeState, requester: &NodeId, note: Vec<u8>) -> Vec<u8> {
    let hex = requester.to_hex();
    if !args(&state.dir, "split-view").contains(&hex) {
        return note;
    }
    let Some((origin, hub, _)) = super::keys(state) else {
        return note;
    };
    match open_checkpoint(&note, &origin, &hub, &[]) {
        Ok(cp) => {
            let mut other = cp.root.0.to_vec();
            other.extend_from_slice(b"another history");
            sign_checkpoint(
                &state.key,
                &origin,
                cp.size,
                tlog_tiles::record_hash(&other),
            )
        }
        Err(_) => note,
    }
}
