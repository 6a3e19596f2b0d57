//! The applications view: every application of the federation and its state, built from the
//! grant events of all feeds, in the same `WriteBatch` as the feed entry that carries them.
//!
//! States: submitted → accepted (hub) → approved (provider) | rejected (hub or provider, with a
//! reason) → granted (token issued by the hub and endorsed by the provider) → revoked (hub or
//! provider); a granted application whose `until` has passed shows as expired. Every node
//! checks who signed each event: an event from anyone else changes nothing.
//!
//! A step that arrives before the one it follows waits in `applications_pending`; one that has
//! waited [`PENDING_MAX_AGE`] (by this node's clock, from when it was set aside) for a step that
//! never came expires ([`expire_pending`]): it is removed, logged, counted
//! (`rejected.pending_expired`) and judged refused, so the hub logs it as such.
//!
//! Layering: a view over [`crate::feeds`] (registered by the daemon); names no other view. The
//! hub's and the providers' automatic steps are [`crate::agent`]'s, above.

pub mod deadline;
use huitong_protocol::application::{Application, GrantEvent};
use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::{codec, Actor, Event, NodeId, Role};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::feeds::{Accepted, Applied, Feeds};
use crate::state::{now_ms, NodeState};
use crate::store::{StoreError, CF_APPLICATIONS, CF_APPLICATIONS_PENDING};

/// Where an application stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Sent by the consumer.
    Submitted,
    /// Accepted into the hub's queue.
    Accepted,
    /// Approved by the provider.
    Approved,
    /// Rejected (see the reason).
    Rejected,
    /// Token issued and endorsed.
    Granted,
    /// Revoked (see the reason).
    Revoked,
}

impl AppState {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Submitted => "submitted",
            AppState::Accepted => "accepted",
            AppState::Approved => "approved",
            AppState::Rejected => "rejected",
            AppState::Granted => "granted",
            AppState::Revoked => "revoked",
        }
    }
}

/// One application as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppRecord {
    /// The application.
    pub app: Application,
    /// The applicant's node key.
    pub applicant: NodeId,
    /// Current state.
    pub state: AppState,
    /// Rejection or revocation reason.
    pub reason: Option<String>,
    /// The token's authority block, once issued.
    #[serde(with = "serde_bytes", default)]
    pub token: Vec<u8>,
    /// The provider's third-party block, once endorsed.
    #[serde(with = "serde_bytes", default)]
    pub block: Vec<u8>,
    /// `(state, ms, signer)` of every step.
    pub history: Vec<(AppState, u64, NodeId)>,
    /// What the provider approved (may be less than applied for), once approved.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// The people who took steps: `(index into history, person)`, for the steps whose entry
    /// names the person signed in on the signer's node (steps a node took by itself name
    /// nobody).
    #[serde(default)]
    pub by: Vec<(usize, Actor)>,
}

impl AppRecord {
    /// Notes that the latest step was taken by `by` (nothing when `None`).
    fn took_latest_step(&mut self, by: Option<&Actor>) {
        if let (Some(by), Some(last)) = (by, self.history.len().checked_sub(1)) {
            self.by.push((last, by.clone()));
        }
    }

    /// The person who took step `i` of the history, if its entry names one.
    pub fn step_by(&self, i: usize) -> Option<&Actor> {
        self.by.iter().find(|(j, _)| *j == i).map(|(_, a)| a)
    }
}

/// The scope a provider approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The 信息项 approved.
    pub fields: Vec<String>,
    /// The last day approved, `YYYY-MM-DD` (federation-local).
    pub until: String,
    /// How API services answer under the grant.
    #[serde(default)]
    pub terms: huitong_protocol::application::CallTerms,
}

impl AppRecord {
    /// The 信息项 granted: what the provider approved, else what was applied for.
    pub fn granted_fields(&self) -> &[String] {
        self.approval
            .as_ref()
            .map_or(self.app.fields.as_slice(), |a| a.fields.as_slice())
    }

    /// The last day of use: what the provider approved, else what was applied for.
    pub fn granted_until(&self) -> &str {
        self.approval
            .as_ref()
            .map_or(self.app.until.as_str(), |a| a.until.as_str())
    }

    /// `expired` for a granted application past its last day, else the state's name.
    pub fn shown_state(&self, today: &str) -> String {
        match self.state {
            AppState::Granted if self.granted_until() < today => "expired".into(),
            s => s.as_str().into(),
        }
    }
}

fn decode(v: &[u8]) -> Result<AppRecord, StoreError> {
    codec::decode(v, usize::MAX).map_err(|e| StoreError::Corrupt {
        cf: CF_APPLICATIONS,
        detail: e.to_string(),
    })
}

/// One application.
pub fn get(state: &NodeState, id: &str) -> Result<Option<AppRecord>, StoreError> {
    let s = &state.store;
    s.db()
        .get_cf(s.cf(CF_APPLICATIONS), id.as_bytes())?
        .map(|v| decode(&v))
        .transpose()
}

/// Every application.
pub fn all(state: &NodeState) -> Result<Vec<AppRecord>, StoreError> {
    let s = &state.store;
    s.db()
        .iterator_cf(s.cf(CF_APPLICATIONS), IteratorMode::Start)
        .map(|r| decode(&r?.1))
        .collect()
}

/// The applications of `consumer` for `provider`'s `code`.
fn of(
    state: &NodeState,
    consumer: &NodeId,
    provider: &NodeId,
    code: &str,
) -> Result<Vec<AppRecord>, StoreError> {
    Ok(all(state)?
        .into_iter()
        .filter(|r| {
            r.applicant == *consumer && r.app.provider == *provider && r.app.code.as_str() == code
        })
        .collect())
}

/// The granted application of `consumer` for `provider`'s `code` that lasts longest.
pub fn grant_for(
    state: &NodeState,
    consumer: &NodeId,
    provider: &NodeId,
    code: &str,
) -> Result<Option<AppRecord>, StoreError> {
    Ok(of(state, consumer, provider, code)?
        .into_iter()
        .filter(|r| r.state == AppState::Granted)
        .max_by(|a, b| a.app.until.cmp(&b.app.until)))
}

/// The latest application of `consumer` for `provider`'s `code`, in any state.
pub fn latest_of(
    state: &NodeState,
    consumer: &NodeId,
    provider: &NodeId,
    code: &str,
) -> Result<Option<AppRecord>, StoreError> {
    Ok(of(state, consumer, provider, code)?
        .into_iter()
        .max_by_key(|r| r.history.last().map(|h| h.1).unwrap_or(0)))
}

/// An event that arrived before the one it follows (events from different feeds arrive in any
/// order): kept in `applications_pending` and applied once the record catches up.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Deferred {
    signer: NodeId,
    at_ms: u64,
    event: GrantEvent,
    /// Position of the carrying entry in the signer's feed.
    #[serde(default)]
    seq: u64,
    /// BLAKE3 of the carrying entry.
    #[serde(default)]
    hash: [u8; 32],
    /// Whether the signer is the hub in the charter version its entry names.
    #[serde(default)]
    hub: bool,
    /// When this node set it aside (ms; 0 in records of older versions: the signer's time is
    /// used instead).
    #[serde(default)]
    since_ms: u64,
    /// The person the carrying entry names.
    #[serde(default)]
    by: Option<Actor>,
}

/// How long a grant event waits for the step it follows before it expires.
pub const PENDING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The reason an expired event is judged refused with.
const EXPIRED: &str = "expired: the step it follows never arrived";

/// Removes every grant event that has waited longer than `max_age` for the step it follows:
/// each is logged on `huitong::audit`, counted (`rejected.pending_expired`) and judged refused
/// (the hub logs it so), in one batch. Returns how many expired.
pub fn expire_pending(feeds: &Feeds, max_age: std::time::Duration) -> Result<u64, StoreError> {
    let cutoff = now_ms().saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
    let records = feeds.commit_judged(|state, batch| {
        let pcf = state.store.cf(CF_APPLICATIONS_PENDING);
        let mut judged = Vec::new();
        for kv in state.store.db().iterator_cf(pcf, IteratorMode::Start) {
            let (k, v) = kv?;
            let d = match codec::decode::<Deferred>(&v, usize::MAX) {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "unreadable waiting application event removed");
                    batch.delete_cf(pcf, &k);
                    continue;
                }
            };
            let since = if d.since_ms == 0 { d.at_ms } else { d.since_ms };
            if since > cutoff {
                continue;
            }
            batch.delete_cf(pcf, &k);
            warn!(
                target: "huitong::audit",
                id = d.event.id(),
                signer = %d.signer,
                seq = d.seq,
                waited_secs = now_ms().saturating_sub(since) / 1000,
                "grant event expired: the step it follows never arrived"
            );
            judged.push(d.judged(Some(EXPIRED)).record());
        }
        Ok(judged)
    })?;
    for _ in &records {
        feeds.state().reject("pending_expired");
    }
    Ok(records.len() as u64)
}

/// A grant event the view has judged: applied, or refused for good. Events that wait for an
/// earlier step are judged when they apply (see [`apply`]).
#[derive(Clone, Debug)]
pub struct Judged {
    /// Who signed it.
    pub signer: NodeId,
    /// Position in the signer's feed.
    pub seq: u64,
    /// BLAKE3 of the carrying entry.
    pub hash: [u8; 32],
    /// The signer's time (ms).
    pub at_ms: u64,
    /// The event.
    pub event: GrantEvent,
    /// `None`: applied; `Some(why)`: refused.
    pub refused: Option<&'static str>,
}

impl Judged {
    /// The audit record of the event as judged: its official kind when applied,
    /// [`RecordKind::Refused`] when refused (a "revocation" signed by someone who may not revoke
    /// is logged as refused, never as a revocation).
    pub fn record(&self) -> Record {
        let kind = match (&self.event, self.refused) {
            (_, Some(_)) => RecordKind::Refused,
            (GrantEvent::Submitted(_), None) => RecordKind::Application,
            (
                GrantEvent::Accepted { .. }
                | GrantEvent::Approved { .. }
                | GrantEvent::Rejected { .. },
                None,
            ) => RecordKind::Decision,
            (GrantEvent::Issued { .. } | GrantEvent::Endorsed { .. }, None) => RecordKind::Grant,
            (GrantEvent::Revoked { .. }, None) => RecordKind::Revocation,
        };
        Record {
            kind,
            id: self.event.id().to_owned(),
            signer: self.signer,
            seq: self.seq,
            hash: self.hash,
            at_ms: self.at_ms,
        }
    }
}

/// The applications as a view over the feeds: each grant event is judged, and logged as judged.
pub struct View;

impl crate::feeds::View for View {
    fn reset(&self, state: &NodeState, batch: &mut WriteBatch) -> Result<(), StoreError> {
        state.store.clear(batch, CF_APPLICATIONS)?;
        state.store.clear(batch, CF_APPLICATIONS_PENDING)
    }

    fn apply(&self, state: &NodeState, batch: &mut WriteBatch, a: &Accepted<'_>) -> Applied {
        let e = &a.entry.entry;
        let Event::Grant(g) = &e.event else {
            return Ok(Vec::new());
        };
        let this = Deferred {
            signer: e.feed,
            at_ms: e.timestamp_ms,
            event: g.clone(),
            seq: e.seq,
            hash: a.entry.hash.0,
            hub: a.role == Role::Hub,
            since_ms: now_ms(),
            by: e.by.clone(),
        };
        Ok(apply(state, batch, this)?
            .iter()
            .map(Judged::record)
            .collect())
    }
}

impl Deferred {
    fn judged(&self, refused: Option<&'static str>) -> Judged {
        Judged {
            signer: self.signer,
            seq: self.seq,
            hash: self.hash,
            at_ms: self.at_ms,
            event: self.event.clone(),
            refused,
        }
    }
}

/// What one event does to a record.
enum Verdict {
    /// The record after the event.
    Apply(Box<AppRecord>),
    /// Not yet: the application, or the step this event follows, has not arrived.
    Later,
    /// Never: wrong signer, or a duplicate.
    Refuse(&'static str),
}

/// The transition of `rec` by `event` signed by `signer` (`signer_is_hub` from the charter).
fn transition(
    rec: Option<AppRecord>,
    signer: &NodeId,
    signer_is_hub: bool,
    at_ms: u64,
    event: &GrantEvent,
) -> Verdict {
    let mut rec = match (event, rec) {
        (GrantEvent::Submitted(app), None) => {
            let rec = AppRecord {
                app: app.clone(),
                applicant: *signer,
                state: AppState::Submitted,
                reason: None,
                token: Vec::new(),
                block: Vec::new(),
                history: vec![(AppState::Submitted, at_ms, *signer)],
                approval: None,
                by: Vec::new(),
            };
            return Verdict::Apply(Box::new(rec));
        }
        (GrantEvent::Submitted(_), Some(_)) => return Verdict::Refuse("duplicate application id"),
        (_, None) => return Verdict::Later,
        (_, Some(r)) => r,
    };
    let provider = *signer == rec.app.provider;
    if !signer_is_hub && !provider {
        return Verdict::Refuse("not signed by the hub or the provider");
    }
    let next = match (event, rec.state) {
        (GrantEvent::Accepted { .. }, AppState::Submitted) if signer_is_hub => AppState::Accepted,
        (
            GrantEvent::Approved {
                fields,
                until,
                terms,
                ..
            },
            AppState::Accepted,
        ) if provider => {
            match approval(&rec.app, fields.as_deref(), until.as_deref(), terms) {
                Ok(a) => rec.approval = Some(a),
                Err(why) => return Verdict::Refuse(why),
            }
            AppState::Approved
        }
        (GrantEvent::Rejected { reason, .. }, AppState::Submitted | AppState::Accepted) => {
            rec.reason = Some(reason.clone());
            AppState::Rejected
        }
        (GrantEvent::Issued { token, .. }, AppState::Approved)
            if signer_is_hub && rec.token.is_empty() =>
        {
            rec.token = token.clone();
            AppState::Approved
        }
        (GrantEvent::Endorsed { block, .. }, AppState::Approved)
            if provider && !rec.token.is_empty() =>
        {
            rec.block = block.clone();
            AppState::Granted
        }
        (GrantEvent::Revoked { reason, .. }, AppState::Approved | AppState::Granted) => {
            rec.reason = Some(reason.clone());
            AppState::Revoked
        }
        // Terminal states take nothing more.
        (_, AppState::Rejected | AppState::Revoked) => {
            return Verdict::Refuse("the application is closed")
        }
        // A later step that arrived first, or a hub-only step by the provider (or the reverse).
        (GrantEvent::Accepted { .. } | GrantEvent::Issued { .. }, _) if !signer_is_hub => {
            return Verdict::Refuse("only the hub may do this")
        }
        (GrantEvent::Approved { .. } | GrantEvent::Endorsed { .. }, _) if !provider => {
            return Verdict::Refuse("only the provider may do this")
        }
        // Out of order: wait if the step this event follows has not come yet, else it is late.
        (e, _) => {
            let rank = match rec.state {
                AppState::Submitted => 0,
                AppState::Accepted => 1,
                AppState::Approved if rec.token.is_empty() => 2,
                AppState::Approved => 3,
                _ => 4,
            };
            let needs = match e {
                GrantEvent::Accepted { .. } => 0,
                GrantEvent::Approved { .. } => 1,
                GrantEvent::Issued { .. } | GrantEvent::Revoked { .. } => 2,
                GrantEvent::Endorsed { .. } => 3,
                GrantEvent::Submitted(_) | GrantEvent::Rejected { .. } => 0,
            };
            return if rank < needs {
                Verdict::Later
            } else {
                Verdict::Refuse("duplicate or out-of-order step")
            };
        }
    };
    rec.state = next;
    rec.history.push((next, at_ms, *signer));
    Verdict::Apply(Box::new(rec))
}

/// The approval of `fields` until `until` (`None`: as applied for) of `app`, or why it is wider
/// than the application.
pub fn approval(
    app: &Application,
    fields: Option<&[String]>,
    until: Option<&str>,
    terms: &huitong_protocol::application::CallTerms,
) -> Result<Approval, &'static str> {
    let fields = fields.map_or_else(|| app.fields.clone(), <[String]>::to_vec);
    let until = until.unwrap_or(&app.until).to_owned();
    if fields.is_empty() || fields.iter().any(|f| !app.fields.contains(f)) {
        return Err("the approval names 信息项 that were not applied for");
    }
    if !huitong_protocol::dataset::is_date(&until) {
        return Err("the approved last day is not a date YYYY-MM-DD");
    }
    if until > app.until {
        return Err("the approval lasts longer than applied for (approve a shorter period only)");
    }
    if terms.masked.iter().any(|m| !fields.contains(m)) {
        return Err("the approval masks 信息项 it does not approve");
    }
    if terms.calls_per_second == Some(0) || terms.calls_per_day == Some(0) {
        return Err("the approval's call quota is 0 (give at least 1 call, or revoke the grant)");
    }
    Ok(Approval {
        fields,
        until,
        terms: terms.clone(),
    })
}

fn pending_prefix(id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k
}

/// Applies a grant event (entry `seq` of `signer`'s feed, hashing to `hash`) to the view, in the
/// batch that stores the entry, whatever order events from different feeds arrive in: an event
/// that comes before the step it follows waits in `applications_pending` and is applied when that
/// step arrives. Returns every event judged by this call (this one, unless it waits, and any
/// waiting ones it let through), for the audit log. The signer's role is the one in the charter
/// version its entry names (so every node, old or fresh, judges alike).
fn apply(
    state: &NodeState,
    batch: &mut WriteBatch,
    this: Deferred,
) -> Result<Vec<Judged>, StoreError> {
    let (signer, at_ms, event) = (&this.signer, this.at_ms, &this.event);
    let id = event.id();
    let rec = match transition(get(state, id)?, signer, this.hub, at_ms, event) {
        Verdict::Apply(rec) => {
            let mut rec = *rec;
            rec.took_latest_step(this.by.as_ref());
            rec
        }
        Verdict::Refuse(why) => {
            warn!(target: "huitong::audit", %signer, id, why, "ignored application event");
            return Ok(vec![this.judged(Some(why))]);
        }
        Verdict::Later => {
            let mut key = pending_prefix(id);
            key.extend_from_slice(&signer.0);
            key.extend_from_slice(&this.seq.to_be_bytes());
            batch.put_cf(
                state.store.cf(CF_APPLICATIONS_PENDING),
                key,
                codec::encode(&this),
            );
            return Ok(Vec::new());
        }
    };
    let mut judged = vec![this.judged(None)];
    // Apply whatever was waiting for this step, until nothing more applies.
    let pcf = state.store.cf(CF_APPLICATIONS_PENDING);
    let prefix = pending_prefix(id);
    let mut waiting: Vec<(Vec<u8>, Deferred)> = Vec::new();
    for kv in state.store.db().prefix_iterator_cf(pcf, &prefix) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) {
            break;
        }
        match codec::decode::<Deferred>(&v, usize::MAX) {
            Ok(d) => waiting.push((k.to_vec(), d)),
            Err(e) => warn!(id, error = %e, "unreadable waiting application event"),
        }
    }
    waiting.sort_by_key(|(_, d)| d.at_ms);
    let (rec, done) = settle(rec, &waiting);
    for (i, refused) in done {
        batch.delete_cf(pcf, &waiting[i].0);
        if let Some(why) = refused {
            warn!(target: "huitong::audit", signer = %waiting[i].1.signer, id, why, "ignored application event");
        }
        judged.push(waiting[i].1.judged(refused));
    }
    batch.put_cf(
        state.store.cf(CF_APPLICATIONS),
        id.as_bytes(),
        codec::encode(&rec),
    );
    Ok(judged)
}

/// Applies waiting events to `rec` until none applies; returns the record and which of them
/// are done with: `(index, None)` applied, `(index, Some(why))` refused.
fn settle(
    mut rec: AppRecord,
    waiting: &[(Vec<u8>, Deferred)],
) -> (AppRecord, Vec<(usize, Option<&'static str>)>) {
    let mut done: Vec<(usize, Option<&'static str>)> = Vec::new();
    loop {
        let mut progressed = false;
        for (i, (_, d)) in waiting.iter().enumerate() {
            if done.iter().any(|(j, _)| *j == i) {
                continue;
            }
            match transition(Some(rec.clone()), &d.signer, d.hub, d.at_ms, &d.event) {
                Verdict::Apply(r) => {
                    rec = *r;
                    rec.took_latest_step(d.by.as_ref());
                    done.push((i, None));
                    progressed = true;
                }
                Verdict::Refuse(why) => done.push((i, Some(why))),
                Verdict::Later => {}
            }
        }
        if !progressed {
            return (rec, done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::{ResourceCode, SecretKey};

    /// Consumer, provider and hub keys, and an application of `fields` until `until`.
    fn parties(fields: &[&str], until: &str) -> (NodeId, NodeId, NodeId, Application) {
        let (consumer, provider, hub) = (
            SecretKey::from_bytes([1; 32]).public(),
            SecretKey::from_bytes([2; 32]).public(),
            SecretKey::from_bytes([3; 32]).public(),
        );
        let app = Application {
            id: "0123456789abcdef0123456789abcdef".to_string(),
            code: ResourceCode::parse("101001/000001").expect("valid code"),
            provider,
            fields: fields.iter().map(|f| f.to_string()).collect(),
            purpose: "核验".into(),
            basis: "依据".into(),
            until: until.into(),
        };
        (consumer, provider, hub, app)
    }

    /// Every order of arrival of the five steps ends granted (pending events wait their turn).
    #[test]
    fn steps_from_different_feeds_apply_in_any_order() {
        let (consumer, provider, hub, app) = parties(&["姓名"], "2099-12-31");
        let id = app.id.clone();
        let steps = [
            (consumer, GrantEvent::Submitted(app)),
            (hub, GrantEvent::Accepted { id: id.clone() }),
            (
                provider,
                GrantEvent::Approved {
                    id: id.clone(),
                    fields: None,
                    until: None,
                    terms: Default::default(),
                },
            ),
            (
                hub,
                GrantEvent::Issued {
                    id: id.clone(),
                    token: vec![1],
                },
            ),
            (
                provider,
                GrantEvent::Endorsed {
                    id: id.clone(),
                    block: vec![2],
                },
            ),
        ];
        let is_hub = |k: &NodeId| *k == hub;
        let mut orders = vec![vec![0usize, 1, 2, 3, 4]];
        // All 120 permutations.
        for n in 0..5 {
            let mut next = Vec::new();
            for o in &orders {
                for i in n..5 {
                    let mut p = o.clone();
                    p.swap(n, i);
                    next.push(p);
                }
            }
            orders = next;
        }
        assert_eq!(orders.len(), 120);
        for order in orders {
            let mut rec: Option<AppRecord> = None;
            let mut waiting: Vec<(Vec<u8>, Deferred)> = Vec::new();
            for (t, &i) in order.iter().enumerate() {
                let (signer, event) = &steps[i];
                match transition(rec.clone(), signer, is_hub(signer), t as u64, event) {
                    Verdict::Apply(r) => {
                        let (r, done) = settle(*r, &waiting);
                        waiting = waiting
                            .into_iter()
                            .enumerate()
                            .filter(|(j, _)| !done.iter().any(|(d, _)| d == j))
                            .map(|(_, w)| w)
                            .collect();
                        rec = Some(r);
                    }
                    Verdict::Later => waiting.push((
                        vec![],
                        Deferred {
                            signer: *signer,
                            at_ms: t as u64,
                            event: event.clone(),
                            seq: t as u64,
                            hash: [0; 32],
                            hub: is_hub(signer),
                            since_ms: 0,
                            by: None,
                        },
                    )),
                    Verdict::Refuse(why) => panic!("{order:?}: step {i} refused: {why}"),
                }
            }
            let r = rec.expect("submitted");
            assert_eq!(r.state, AppState::Granted, "{order:?}");
            assert!(waiting.is_empty(), "{order:?}");
        }
        // The wrong signer is refused, never deferred.
        let r = match transition(None, &consumer, false, 0, &steps[0].1) {
            Verdict::Apply(r) => *r,
            _ => panic!("submission applies"),
        };
        assert!(matches!(
            transition(
                Some(r),
                &consumer,
                false,
                1,
                &GrantEvent::Approved {
                    id,
                    fields: None,
                    until: None,
                    terms: Default::default(),
                }
            ),
            Verdict::Refuse(_)
        ));
    }

    /// A partial approval narrows the grant; an approval wider than the application is refused.
    #[test]
    fn an_approval_may_narrow_but_never_widen_the_application() {
        let (consumer, provider, hub, app) = parties(&["姓名", "性别"], "2030-12-31");
        let id = app.id.clone();
        let step = |rec: Option<AppRecord>, who: &NodeId, e: GrantEvent| match transition(
            rec,
            who,
            *who == hub,
            0,
            &e,
        ) {
            Verdict::Apply(r) => Ok(*r),
            Verdict::Refuse(why) => Err(why),
            Verdict::Later => Err("later"),
        };
        let r = step(None, &consumer, GrantEvent::Submitted(app)).unwrap();
        let r = step(Some(r), &hub, GrantEvent::Accepted { id: id.clone() }).unwrap();
        let approve = |fields: Option<Vec<&str>>, until: Option<&str>| GrantEvent::Approved {
            id: id.clone(),
            fields: fields.map(|f| f.into_iter().map(String::from).collect()),
            until: until.map(String::from),
            terms: Default::default(),
        };
        for (wide, why) in [
            (approve(Some(vec!["姓名", "民族"]), None), "applied for"),
            (approve(Some(vec![]), None), "applied for"),
            (approve(None, Some("2031-01-01")), "longer"),
        ] {
            let e = step(Some(r.clone()), &provider, wide).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let narrow = step(
            Some(r.clone()),
            &provider,
            approve(Some(vec!["性别"]), Some("2030-06-30")),
        )
        .unwrap();
        assert_eq!(narrow.granted_fields(), ["性别".to_string()]);
        assert_eq!(narrow.granted_until(), "2030-06-30");
        let whole = step(Some(r), &provider, approve(None, None)).unwrap();
        assert_eq!(
            whole.granted_fields(),
            ["姓名".to_string(), "性别".to_string()]
        );
        assert_eq!(whole.granted_until(), "2030-12-31");
    }

    #[test]
    fn a_granted_application_past_its_day_shows_expired() {
        let key = SecretKey::from_bytes([1; 32]).public();
        let mut r = AppRecord {
            app: Application {
                id: "0123456789abcdef0123456789abcdef".into(),
                code: ResourceCode::parse("101001/000001").expect("valid code"),
                provider: key,
                fields: vec!["姓名".into()],
                purpose: "核验".into(),
                basis: "依据".into(),
                until: "2026-11-27".into(),
            },
            applicant: key,
            state: AppState::Granted,
            reason: None,
            token: Vec::new(),
            block: Vec::new(),
            history: Vec::new(),
            approval: None,
            by: Vec::new(),
        };
        assert_eq!(
            r.shown_state("2026-11-27"),
            "granted",
            "valid through its last day"
        );
        assert_eq!(r.shown_state("2026-11-28"), "expired");
        r.state = AppState::Revoked;
        assert_eq!(r.shown_state("2026-11-28"), "revoked");
    }
}
