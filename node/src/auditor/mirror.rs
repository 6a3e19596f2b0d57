//! A member's mirror of the hub's log: after each checkpoint it accepts, a member fetches the
//! new entries from the hub and appends them to its own copy (same C2SP layout, under its own
//! `audit/`), keeping them only if they hash to the hub's signed root. The mirror lets
//! `huitong audit verify --record` prove inclusion with no network at all, and entries that do
//! not match the hub's own checkpoint are recorded as a split view.

use std::sync::Arc;

use huitong_protocol::wire::MAX_AUDIT_ENTRIES;
use tracing::info;

use super::client;
use crate::audit::appender::on_log;
use crate::audit::{checkpoints, keys};
use crate::audit_log::tiles::LogError;
use crate::link::Transport;
use crate::state::NodeState;

/// The largest gap a mirror fetches in one go (entries are held in memory until they are
/// checked against the checkpoint): about 140 MB of records.
pub const MAX_GAP: u64 = 1_000_000;

/// Brings the mirror up to the latest checkpoint held; returns the mirror's size.
pub async fn sync(state: &Arc<NodeState>, t: &Transport) -> Result<u64, String> {
    let (_, hub, _) = keys(state).ok_or("no charter naming a hub")?;
    if hub == state.id() {
        return size(state).await;
    }
    let _one_at_a_time = state.audit.mirror_lock.lock().await;
    let Some(target) = checkpoints::latest(state).map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let have = size(state).await?;
    if have >= target.size {
        return Ok(have);
    }
    if target.size - have > MAX_GAP {
        return Err(format!(
            "the mirror is {} entries behind the checkpoint (more than {MAX_GAP}); proofs come from the hub until it catches up",
            target.size - have
        ));
    }
    let mut entries = Vec::new();
    while have + (entries.len() as u64) < target.size {
        let from = have + entries.len() as u64;
        let count = (target.size - from).min(MAX_AUDIT_ENTRIES);
        let page = client::entries(t, &hub, from, count)
            .await
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Err(format!("the hub sent no entries from {from}"));
        }
        entries.extend(page);
    }
    entries.truncate((target.size - have) as usize);
    let t2 = target.clone();
    let extended = on_log(state, move |log| {
        if log.size() != have {
            return Ok(());
        }
        log.extend(entries, &t2)
    })
    .await;
    match extended {
        Ok(()) => {
            info!(target: "huitong::audit", size = target.size, "audit log mirrored");
            Ok(target.size)
        }
        Err(e @ LogError::NotTheCheckpoint { .. }) => {
            let reason = format!("entries {have}..{} from the hub: {e}", target.size);
            checkpoints::record_conflict(state, &target, &target, reason.clone())
                .map_err(|e| e.to_string())?;
            Err(reason)
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn size(state: &Arc<NodeState>) -> Result<u64, String> {
    on_log(state, |l| Ok(l.size()))
        .await
        .map_err(|e| e.to_string())
}
