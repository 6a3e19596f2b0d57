//! The automatic steps of the workflow, run every half second from the view (so they resume
//! after a restart):
//! - the hub accepts each submitted application into its queue (统一受理), or rejects it at
//!   once when the resource is unknown, withdrawn, 不予共享 (citing the legal basis) or needs no
//!   application, or when it asks for 信息项 the resource does not have;
//! - the hub issues the token of each approved application (平台授权, platform key);
//! - a provider endorses the issued token of each application it approved, once it has checked
//!   that the token is within its approval (consumer, resource, provider, 信息项, expiry); a
//!   wider token is refused and reported (the hub alone cannot widen a grant).
//!
//! Layering: an actor above the views it reads ([`crate::applications`], [`crate::catalogue`]),
//! the access policy ([`crate::access`]) and the network ([`crate::net`], to gossip its steps);
//! only the daemon starts it.

use std::sync::Arc;
use std::time::Duration;

use huitong_protocol::application::GrantEvent;
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::Event;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::applications::{all, AppRecord, AppState};
use crate::feeds::Feeds;
use crate::net::Client;
use crate::state::NodeState;
use huitong_protocol::grant::{self as grants, GrantFacts};

/// The scope a granted application allows: what the provider approved (which may be less than
/// applied for), ending at 24:00 of the last day in the federation's time zone.
pub fn approved_scope(state: &NodeState, r: &AppRecord) -> Option<GrantFacts> {
    Some(GrantFacts {
        id: r.app.id.clone(),
        code: r.app.code.to_string(),
        provider: r.app.provider,
        consumer: r.applicant,
        fields: r.granted_fields().to_vec(),
        expires: state.end_of_day(r.granted_until())?,
    })
}

/// The provider's endorsement of the token the hub issued — only if the token is within what
/// this node approved. A wider token is refused and reported: the provider revokes the
/// application with the reason (in its feed, so in the audit log) instead of endorsing.
fn endorse(state: &NodeState, r: &AppRecord) -> Option<GrantEvent> {
    let id = r.app.id.clone();
    let approved = approved_scope(state, r)?;
    let hub = state.hub_key()?;
    // A token that is not exactly a grant under the platform key, or one wider than the
    // approval, is refused: never endorsed, and reported.
    let why = match grants::inspect(&r.token, &hub) {
        Ok(minted) => minted.exceeds(&approved),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = why {
        error!(target: "huitong::audit", %id, %why, "the hub's token is not within this node's approval: refused, application revoked");
        state.reject("grant_wider_than_approval");
        return Some(GrantEvent::Revoked {
            id,
            reason: format!(
                "the platform's grant token is not within the provider's approval: {why}"
            ),
        });
    }
    match grants::endorse(&state.key, &r.token, &approved) {
        Ok(block) => Some(GrantEvent::Endorsed { id, block }),
        Err(e) => {
            warn!(%id, error = %e, "cannot endorse a grant");
            None
        }
    }
}

/// Runs until `shutdown`.
pub async fn run(feeds: Arc<Feeds>, net: Client, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let f = feeds.clone();
        let entries = match tokio::task::spawn_blocking(move || step(&f)).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, "application agent step panicked");
                continue;
            }
        };
        for v in entries {
            net.publish(&v).await;
        }
    }
}

/// The hub's decision on a submitted application: accepted into the queue (统一受理), or
/// rejected at once for the reasons [`crate::access::application_refusal`] gives.
fn triage(state: &NodeState, r: &AppRecord) -> GrantEvent {
    let id = r.app.id.clone();
    let record = crate::catalogue::get(&state.store, r.app.code.as_str())
        .ok()
        .and_then(|v| v.into_iter().find(|c| c.feed == r.app.provider));
    let reason = match record {
        None => Some(format!("the provider publishes no resource {}", r.app.code)),
        Some(rec) => crate::access::application_refusal(&rec, &r.app.fields),
    };
    match reason {
        Some(reason) => GrantEvent::Rejected { id, reason },
        None => GrantEvent::Accepted { id },
    }
}

fn step(feeds: &Feeds) -> Vec<VerifiedEntry> {
    let state = &**feeds.state();
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
                let Some(mut facts) = approved_scope(state, &r) else {
                    continue;
                };
                if crate::faults::on(&state.dir, "hub-mints-applied-scope") {
                    // A hub that ignores a partial approval (tests only).
                    facts.fields = r.app.fields.clone();
                    facts.expires = state.end_of_day(&r.app.until).unwrap_or(facts.expires);
                }
                match grants::mint(&state.key, &facts) {
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
                endorse(state, &r)
            }
            _ => None,
        };
        if let Some(event) = event {
            let what = format!("{event:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned();
            match feeds.append(Event::Grant(event)) {
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
