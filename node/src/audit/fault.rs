//! Test-only faults of the hub, to show that members catch a dishonest hub for real.
//!
//! Compiled only with the cargo feature `fault-injection` (which only the tests crate enables,
//! as a dev-dependency feature, so release builds never contain it); without it every function
//! here is a no-op. The faults are read once from [`FAULT_ENV`] (`HUITONG_FAULT`), a comma
//! separated list:
//!
//! - `split-view:<node key hex>`: the hub answers that member's checkpoint polls with a
//!   hub-signed checkpoint of a different tree of the same size (a split view);
//! - `omit:<record kind or signer key hex>`: the hub drops those records instead of logging them;
//! - `withhold-proofs`: the hub never answers consistency-proof questions.

use huitong_protocol::audit::Record;
use huitong_protocol::wire::AuditRequest;
use huitong_protocol::NodeId;

use crate::state::NodeState;

/// The environment variable naming the faults.
pub const FAULT_ENV: &str = "HUITONG_FAULT";

pub use imp::{omit, shown, stall};

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::OnceLock;

    use super::{AuditRequest, NodeId, NodeState, Record, FAULT_ENV};

    #[derive(Default)]
    struct Faults {
        split_view: Vec<NodeId>,
        omit: Vec<String>,
        withhold_proofs: bool,
    }

    fn faults() -> &'static Faults {
        static FAULTS: OnceLock<Faults> = OnceLock::new();
        FAULTS.get_or_init(|| {
            let mut f = Faults::default();
            let text = std::env::var(FAULT_ENV).unwrap_or_default();
            for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match item.split_once(':') {
                    Some(("split-view", key)) => match NodeId::from_hex(key) {
                        Ok(k) => f.split_view.push(k),
                        Err(e) => tracing::error!(%item, error = %e, "bad fault"),
                    },
                    Some(("omit", what)) => f.omit.push(what.to_owned()),
                    None if item == "withhold-proofs" => f.withhold_proofs = true,
                    _ => tracing::error!(%item, "unknown fault"),
                }
            }
            if !text.is_empty() {
                tracing::warn!(target: "huitong::audit", faults = %text, "FAULT INJECTION ACTIVE: this node misbehaves on purpose");
            }
            f
        })
    }

    /// Whether the hub drops this record instead of logging it.
    pub fn omit(r: &Record) -> bool {
        let signer = r.signer.to_hex();
        faults()
            .omit
            .iter()
            .any(|w| w == r.kind.as_str() || *w == signer)
    }

    /// Under `withhold-proofs`, holds a consistency question (this blocking thread) for 30 s,
    /// longer than any asker's deadline, so it passes with no answer.
    pub fn stall(req: &AuditRequest) {
        if faults().withhold_proofs && matches!(req, AuditRequest::Consistency { .. }) {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    }

    /// The checkpoint note the hub shows `requester`: its own, or under `split-view` a
    /// hub-signed checkpoint of another tree of the same size.
    pub fn shown(state: &NodeState, requester: &NodeId, note: Vec<u8>) -> Vec<u8> {
        if !faults().split_view.contains(requester) {
            return note;
        }
        let Some((origin, hub, _)) = crate::audit::keys(state) else {
            return note;
        };
        match huitong_protocol::audit::note::open_checkpoint(&note, &origin, &hub, &[]) {
            Ok(cp) => {
                let mut other = cp.root.0.to_vec();
                other.extend_from_slice(b"another history");
                huitong_protocol::audit::note::sign_checkpoint(
                    &state.key,
                    &origin,
                    cp.size,
                    tlog_tiles::record_hash(&other),
                )
            }
            Err(_) => note,
        }
    }
}

/// Without the `fault-injection` feature: an honest hub.
#[cfg(not(feature = "fault-injection"))]
mod imp {
    use super::{AuditRequest, NodeId, NodeState, Record};

    /// Never drops a record.
    pub fn omit(_: &Record) -> bool {
        false
    }

    /// Never holds a question.
    pub fn stall(_: &AuditRequest) {}

    /// Shows everyone the hub's own note.
    pub fn shown(_: &NodeState, _: &NodeId, note: Vec<u8>) -> Vec<u8> {
        note
    }
}
