//! Applications for 有条件共享 resources (统一受理、平台授权) and the grant events that follow.
//!
//! The consumer's feed carries [`Application`]s; the hub's feed accepts them and issues grant
//! tokens; the provider's feed approves, rejects, endorses (its third-party block of the token)
//! and revokes. Who may sign which event is checked by every node when it applies the event.

use serde::{Deserialize, Serialize};

use crate::{NodeId, ResourceCode};

/// Longest free text (purpose, basis, reasons).
pub const MAX_TEXT: usize = 2000;
/// Most 信息项 one application may ask for.
pub const MAX_FIELDS: usize = 256;

/// Whether `s` is a random id as applications and transfer records carry: 32 lower-case hex
/// digits.
pub fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// An application for some 信息项 of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// 32 lower-case hex digits chosen by the applicant.
    pub id: String,
    /// The resource.
    pub code: ResourceCode,
    /// The provider's node key.
    pub provider: NodeId,
    /// The 信息项 asked for.
    pub fields: Vec<String>,
    /// 用途.
    pub purpose: String,
    /// 依据 (the legal or policy basis).
    pub basis: String,
    /// Last day of use, `YYYY-MM-DD` (the grant expires at 24:00 of that day in the federation's
    /// time zone, see [`crate::Charter::end_of_day`]).
    pub until: String,
}

impl Application {
    /// Checks the shape rules.
    pub fn check(&self) -> Result<(), String> {
        if !is_id(&self.id) {
            return Err("id must be 32 lower-case hex digits".into());
        }
        if self.fields.is_empty() || self.fields.len() > MAX_FIELDS {
            return Err(format!("name between 1 and {MAX_FIELDS} 信息项"));
        }
        for (what, text) in [("purpose", &self.purpose), ("basis", &self.basis)] {
            if text.trim().is_empty() || text.chars().count() > MAX_TEXT {
                return Err(format!(
                    "{what} must be given, at most {MAX_TEXT} characters"
                ));
            }
        }
        if !crate::dataset::is_date(&self.until) {
            return Err(format!("until {:?} is not a date YYYY-MM-DD", self.until));
        }
        Ok(())
    }
}

/// Application and grant events (payloads of feed entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantEvent {
    /// A consumer applies (its own feed).
    Submitted(Application),
    /// The hub accepts it into the one queue (统一受理).
    Accepted {
        /// Application id.
        id: String,
    },
    /// The provider approves, possibly less than was asked for (partial approval): fewer
    /// 信息项 or an earlier last day. The grant follows what the provider approved.
    Approved {
        /// Application id.
        id: String,
        /// The 信息项 approved (a subset of those applied for); `None`: all of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fields: Option<Vec<String>>,
        /// The last day approved (not after the one applied for); `None`: as applied for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        /// How API services answer under this grant (the provider applies them itself).
        #[serde(default, skip_serializing_if = "CallTerms::is_default")]
        terms: CallTerms,
    },
    /// The hub or the provider rejects, with the reason.
    Rejected {
        /// Application id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The hub issues the token's authority block (platform key).
    Issued {
        /// Application id.
        id: String,
        /// The biscuit token (authority block only).
        #[serde(with = "serde_bytes")]
        token: Vec<u8>,
    },
    /// The provider's approval as a third-party block of the token.
    Endorsed {
        /// Application id.
        id: String,
        /// The serialized third-party block.
        #[serde(with = "serde_bytes")]
        block: Vec<u8>,
    },
    /// The provider or the hub revokes the grant.
    Revoked {
        /// Application id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// How an API service answers calls under a grant: the provider's own terms, recorded in its
/// approval and applied by it on every call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTerms {
    /// 信息项 returned masked (脱敏), e.g. 身份证号 → its first 6 and last 4 digits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// Only 核验 calls (match / no match), no lookups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_only: bool,
    /// Calls a second under this grant (a burst of as many); the provider's `[services]` rate
    /// when unset, and never more than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_second: Option<u32>,
    /// Calls a federation day under this grant; the provider's `[services]` count when unset,
    /// and never more than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_day: Option<u64>,
}

impl CallTerms {
    /// Whether nothing is set (answers as approved, unmasked).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl GrantEvent {
    /// The application the event is about.
    pub fn id(&self) -> &str {
        match self {
            GrantEvent::Submitted(a) => &a.id,
            GrantEvent::Accepted { id }
            | GrantEvent::Approved { id, .. }
            | GrantEvent::Rejected { id, .. }
            | GrantEvent::Issued { id, .. }
            | GrantEvent::Endorsed { id, .. }
            | GrantEvent::Revoked { id, .. } => id,
        }
    }

    /// Checks the shape rules.
    pub fn check(&self) -> Result<(), String> {
        match self {
            GrantEvent::Submitted(a) => a.check(),
            GrantEvent::Approved {
                fields,
                until,
                terms,
                ..
            } => {
                if let Some(f) = fields {
                    if f.is_empty() || f.len() > MAX_FIELDS {
                        return Err(format!("approve between 1 and {MAX_FIELDS} 信息项"));
                    }
                }
                if terms.masked.len() > MAX_FIELDS {
                    return Err(format!("mask at most {MAX_FIELDS} 信息项"));
                }
                match until {
                    Some(u) if !crate::dataset::is_date(u) => {
                        Err(format!("until {u:?} is not a date YYYY-MM-DD"))
                    }
                    _ => Ok(()),
                }
            }
            GrantEvent::Rejected { reason, .. } | GrantEvent::Revoked { reason, .. }
                if reason.trim().is_empty() || reason.chars().count() > MAX_TEXT =>
            {
                Err(format!(
                    "a reason must be given, at most {MAX_TEXT} characters"
                ))
            }
            _ => Ok(()),
        }
    }
}
