//! The applications view: every application of the federation and its state, built from the
//! grant events of all feeds, in the same `WriteBatch` as the feed entry that carries them.
//!
//! States: submitted → accepted (hub) → approved (provider) | rejected (hub or provider, with a
//! reason) → granted (token issued by the hub and endorsed by the provider) → revoked (hub or
//! provider); a granted application whose `until` has passed shows as expired. Every node
//! checks who signed each event: an event from anyone else changes nothing.
//!
//! [`agent`] performs the hub's and the providers' automatic steps.

pub mod agent;

use huitong_protocol::application::{Application, GrantEvent};
use huitong_protocol::{codec, NodeId, Role};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::state::NodeState;
use crate::store::{StoreError, CF_APPLICATIONS};

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
}

impl AppRecord {
    /// `expired` for a granted application past its `until`, else the state's name.
    pub fn shown_state(&self, today: &str) -> String {
        match self.state {
            AppState::Granted if self.app.until.as_str() < today => "expired".into(),
            s => format!("{s:?}").to_lowercase(),
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

/// Stages the view change of one grant event signed by `signer`.
pub fn apply(
    state: &NodeState,
    batch: &mut WriteBatch,
    signer: &NodeId,
    at_ms: u64,
    event: &GrantEvent,
) -> Result<(), StoreError> {
    let cf = state.store.cf(CF_APPLICATIONS);
    let id = event.id();
    let existing = get(state, id)?;
    let is_hub = state.role_of(signer) == Some(Role::Hub);
    let refuse = |why: &str| {
        warn!(target: "huitong::audit", %signer, id, why, "ignored application event");
        Ok(())
    };
    let mut rec = match (event, existing) {
        (GrantEvent::Submitted(app), None) => AppRecord {
            app: app.clone(),
            applicant: *signer,
            state: AppState::Submitted,
            reason: None,
            token: Vec::new(),
            block: Vec::new(),
            history: Vec::new(),
        },
        (GrantEvent::Submitted(_), Some(_)) => return refuse("duplicate application id"),
        (_, None) => return refuse("unknown application"),
        (_, Some(r)) => r,
    };
    let provider = *signer == rec.app.provider;
    let next = match (event, rec.state) {
        (GrantEvent::Submitted(_), _) => AppState::Submitted,
        (GrantEvent::Accepted { .. }, AppState::Submitted) if is_hub => AppState::Accepted,
        (GrantEvent::Approved { .. }, AppState::Accepted) if provider => AppState::Approved,
        (GrantEvent::Rejected { reason, .. }, AppState::Submitted | AppState::Accepted)
            if is_hub || provider =>
        {
            rec.reason = Some(reason.clone());
            AppState::Rejected
        }
        (GrantEvent::Issued { token, .. }, AppState::Approved) if is_hub => {
            rec.token = token.clone();
            AppState::Approved
        }
        (GrantEvent::Endorsed { block, .. }, AppState::Approved)
            if provider && !rec.token.is_empty() =>
        {
            rec.block = block.clone();
            AppState::Granted
        }
        (GrantEvent::Revoked { reason, .. }, AppState::Approved | AppState::Granted)
            if is_hub || provider =>
        {
            rec.reason = Some(reason.clone());
            AppState::Revoked
        }
        _ => return refuse("not allowed for this signer in this state"),
    };
    rec.state = next;
    rec.history.push((next, at_ms, *signer));
    batch.put_cf(cf, id.as_bytes(), codec::encode(&rec));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::{ResourceCode, SecretKey};

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
