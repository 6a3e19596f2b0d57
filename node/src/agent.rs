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
//! The hub's steps are caused by members' applications, so they are bounded twice: all of them
//! together take at most half the hub's feed quota (`feeds::TRANSFER_SHARE_OF_QUOTA`), and
//! one applicant's at most [`APPLICANT_SHARE_OF_QUOTA`] of it an hour; the applications beyond
//! wait, still submitted, for the next step with room. So one member submitting thousands of
//! applications delays only its own.
//!
//! Layering: an actor above the views it reads ([`crate::applications`], [`crate::catalogue`]),
//! the access policy ([`crate::access`]) and the network ([`crate::net`], to gossip its steps);
//! only the daemon starts it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huitong_protocol::application::GrantEvent;
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::{Event, NodeId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::applications::{all, AppRecord, AppState};
use crate::feeds::{AppendError, Feeds};
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

/// One applicant's applications may make the hub append at most `1 / 16` of its feed quota an
/// hour (acceptances, rejections, tokens).
pub const APPLICANT_SHARE_OF_QUOTA: u32 = 16;

const HOUR_MS: u64 = 3_600_000;

/// How often the hub says that its feed quota holds its steps back (ms).
const QUOTA_WARN_EVERY_MS: u64 = 60_000;

/// The hub's steps per applicant in the last hour.
#[derive(Debug, Default)]
struct Budget {
    spent: HashMap<NodeId, VecDeque<u64>>,
    quota_warned_ms: Option<u64>,
}

impl Budget {
    /// Whether `applicant` may cause one more hub step at `now_ms`, the hub's quota being
    /// `per_hour`.
    fn admits(&mut self, applicant: &NodeId, now_ms: u64, per_hour: u32) -> bool {
        let cap = (per_hour / APPLICANT_SHARE_OF_QUOTA).max(1) as usize;
        let Some(q) = self.spent.get_mut(applicant) else {
            return true;
        };
        while q
            .front()
            .is_some_and(|&t| t.saturating_add(HOUR_MS) <= now_ms)
        {
            q.pop_front();
        }
        if q.is_empty() {
            self.spent.remove(applicant);
            return true;
        }
        q.len() < cap
    }

    fn spend(&mut self, applicant: NodeId, now_ms: u64) {
        self.spent.entry(applicant).or_default().push_back(now_ms);
    }

    /// Whether to say (now) that the quota holds the hub's steps back.
    fn warn_quota(&mut self, now_ms: u64) -> bool {
        let due = self
            .quota_warned_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= QUOTA_WARN_EVERY_MS);
        if due {
            self.quota_warned_ms = Some(now_ms);
        }
        due
    }
}

/// Runs until `shutdown`.
pub async fn run(feeds: Arc<Feeds>, net: Client, shutdown: CancellationToken) {
    let budget = Arc::new(Mutex::new(Budget::default()));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (f, b) = (feeds.clone(), budget.clone());
        let entries = match tokio::task::spawn_blocking(move || {
            step(&f, &mut b.lock().unwrap_or_else(|e| e.into_inner()))
        })
        .await
        {
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

fn step(feeds: &Feeds, budget: &mut Budget) -> Vec<VerifiedEntry> {
    let state = &**feeds.state();
    let me = state.id();
    let is_hub = state.is_hub();
    let now = crate::state::now_ms();
    let per_hour = state
        .with_history(|h| h.get(h.version()).map(|c| c.feed_quota))
        .unwrap_or_default()
        .entries_per_hour;
    // Set once the quota refuses a hub step: the rest wait for the next step.
    let mut hub_quota_full = false;
    let records = match all(state) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot read applications");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for r in records {
        let hub_step = is_hub
            && (r.state == AppState::Submitted
                || (r.state == AppState::Approved && r.token.is_empty()));
        if hub_step && (hub_quota_full || !budget.admits(&r.applicant, now, per_hour)) {
            debug!(id = %r.app.id, applicant = %r.applicant, "application waits: its applicant's share of the hub's feed quota is used up for now");
            continue;
        }
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
                    if hub_step {
                        budget.spend(r.applicant, now);
                    }
                    out.push(v);
                }
                Err(e @ AppendError::Quota { .. }) if hub_step => {
                    hub_quota_full = true;
                    if budget.warn_quota(now) {
                        warn!(id = %r.app.id, error = %e, "applications wait: the hub's share of its feed quota for members' applications is used up for now");
                    }
                }
                Err(e) => warn!(id = %r.app.id, error = %e, "cannot record an application step"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One applicant's share of the hub's quota is counted over the last hour.
    #[test]
    fn an_applicants_share_is_counted_over_the_last_hour() {
        let mut b = Budget::default();
        let (a, other) = (NodeId([1; 32]), NodeId([2; 32]));
        for t in 0..3 {
            assert!(b.admits(&a, t, 48), "{t}");
            b.spend(a, t);
        }
        assert!(!b.admits(&a, 10, 48), "48 / 16 = 3 an hour");
        assert!(
            b.admits(&other, 10, 48),
            "another applicant has its own share"
        );
        assert!(!b.admits(&a, HOUR_MS - 1, 48));
        assert!(b.admits(&a, HOUR_MS, 48), "the first step is an hour old");
        let third = NodeId([3; 32]);
        assert!(
            b.admits(&third, 0, 1),
            "at least one an hour, whatever the quota"
        );
        b.spend(third, 0);
        assert!(!b.admits(&third, 1, 1));
        assert!(b.warn_quota(0) && !b.warn_quota(QUOTA_WARN_EVERY_MS - 1));
        assert!(b.warn_quota(QUOTA_WARN_EVERY_MS));
    }
}
