//! The automatic steps of the workflow, run every half second from the view (so they resume
//! after a restart):
//! - the hub accepts each submitted application into its queue (统一受理), or rejects it at
//!   once when the resource is unknown, withdrawn, 不予共享 (citing the legal basis) or needs no
//!   application, or when it asks for 信息项 the resource does not have;
//! - the hub issues the token of each approved application (平台授权, platform key);
//! - a provider endorses the issued token of each application it approved.

use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::application::GrantEvent;
use huitong_protocol::catalogue::ShareType;
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::Event;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{all, AppRecord, AppState};
use crate::net::{Client, Command};
use crate::state::NodeState;
use huitong_protocol::grant::{self as grants, GrantFacts};

/// Seconds since the epoch at the end (23:59:59 UTC) of a `YYYY-MM-DD` day.
pub fn end_of_day(date: &str) -> Option<u64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let t = d.and_hms_opt(23, 59, 59)?.and_utc().timestamp();
    u64::try_from(t).ok()
}

/// Runs until `shutdown`.
pub async fn run(state: Arc<NodeState>, net: Client, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let s = state.clone();
        let entries = match tokio::task::spawn_blocking(move || step(&s)).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "application agent step panicked");
                continue;
            }
        };
        for v in entries {
            let msg = huitong_protocol::wire::Gossip::Entry(serde_bytes::ByteBuf::from(
                v.envelope.to_bytes(),
            ));
            net.send(Command::Gossip(msg)).await;
        }
    }
}

/// The hub's decision on a submitted application.
fn triage(state: &NodeState, r: &AppRecord) -> GrantEvent {
    let id = r.app.id.clone();
    let reject = |reason: String| GrantEvent::Rejected {
        id: id.clone(),
        reason,
    };
    let record = crate::catalogue::get(&state.store, r.app.code.as_str())
        .ok()
        .and_then(|v| v.into_iter().find(|c| c.feed == r.app.provider));
    let Some(rec) = record else {
        return reject(format!("the provider publishes no resource {}", r.app.code));
    };
    let e = &rec.entry;
    if let Some(why) = &rec.withdrawn {
        return reject(format!("{} was withdrawn (已下架): {why}", e.code));
    }
    match e.share_type {
        ShareType::None => {
            return reject(format!(
                "{} is 不予共享; legal basis: {}",
                e.code,
                e.share_condition.as_deref().unwrap_or("not given")
            ))
        }
        ShareType::Unconditional => {
            return reject(format!(
                "{} is 无条件共享 and needs no application: pull it directly",
                e.code
            ))
        }
        ShareType::Conditional => {}
    }
    let unknown: Vec<&str> = r
        .app
        .fields
        .iter()
        .filter(|f| !e.items.iter().any(|i| &i.name == *f))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return reject(format!("{} has no 信息项 {unknown:?}", e.code));
    }
    if let Some(i) = e
        .items
        .iter()
        .find(|i| r.app.fields.contains(&i.name) && e.effective_share_type(i) == ShareType::None)
    {
        return reject(format!("信息项 {:?} is 不予共享", i.name));
    }
    GrantEvent::Accepted { id }
}

fn step(state: &NodeState) -> Vec<VerifiedEntry> {
    let me = state.id();
    let is_hub = state.is_hub();
    let records = match all(state) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot read applications");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for r in records {
        let event = match r.state {
            AppState::Submitted if is_hub => Some(triage(state, &r)),
            AppState::Approved if is_hub && r.token.is_empty() => {
                let Some(expires) = end_of_day(&r.app.until) else {
                    continue;
                };
                let facts = GrantFacts {
                    id: r.app.id.clone(),
                    code: r.app.code.to_string(),
                    consumer: r.applicant,
                    fields: r.app.fields.clone(),
                    expires,
                };
                match grants::mint(&state.key, &r.app.provider, &facts) {
                    Ok(token) => Some(GrantEvent::Issued {
                        id: r.app.id.clone(),
                        token,
                    }),
                    Err(e) => {
                        warn!(id = %r.app.id, error = %e, "cannot mint a grant");
                        None
                    }
                }
            }
            AppState::Approved
                if r.app.provider == me && !r.token.is_empty() && r.block.is_empty() =>
            {
                match grants::endorse(&state.key, &r.token, &r.app.id) {
                    Ok(block) => Some(GrantEvent::Endorsed {
                        id: r.app.id.clone(),
                        block,
                    }),
                    Err(e) => {
                        warn!(id = %r.app.id, error = %e, "cannot endorse a grant");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(event) = event {
            let what = format!("{event:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned();
            match state.append(Event::Grant(event)) {
                Ok(v) => {
                    info!(target: "huitong::audit", id = %r.app.id, step = %what, "application step");
                    out.push(v);
                }
                Err(e) => warn!(id = %r.app.id, error = %e, "cannot record an application step"),
            }
        }
    }
    out
}
