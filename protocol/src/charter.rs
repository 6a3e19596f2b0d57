//! The charter: a signed, versioned roster of a federation's members.
//!
//! Signed by the federation authority key (kept offline by the platform administrator). A node
//! accepts a charter only if the authority matches the one it was configured with and the
//! version is higher than the one it holds.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, MAX_ENVELOPE_BYTES};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::{NodeId, SecretKey, Uscc};

/// Version of the charter layout.
pub const CHARTER_LAYOUT_VERSION: u8 = 1;
/// Most members a charter may list.
pub const MAX_MEMBERS: usize = 1000;

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A department node (委办局).
    Department,
    /// The district hub: relay, platform authoriser, auditor.
    Hub,
    /// The cascade node standing for the upper-level (city) platform.
    Cascade,
}

impl Role {
    /// Parses `department`, `hub` or `cascade`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "department" => Some(Role::Department),
            "hub" => Some(Role::Hub),
            "cascade" => Some(Role::Cascade),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::Hub => "hub",
            Role::Cascade => "cascade",
        }
    }
}

/// Whether a member may currently publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// In good standing.
    Active,
    /// Suspended: its new feed entries are refused and its connections closed.
    Suspended,
}

/// One member of the federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// 统一社会信用代码.
    pub uscc: Uscc,
    /// Name, e.g. 海门区公安局.
    pub name: String,
    /// The node's public key.
    pub node_key: NodeId,
    /// Role.
    pub role: Role,
    /// Multiaddresses where the node listens.
    pub addresses: Vec<String>,
    /// Standing.
    pub status: MemberStatus,
}

/// A charter version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charter {
    /// Layout version ([`CHARTER_LAYOUT_VERSION`]).
    pub layout: u8,
    /// Federation name, e.g. 海门区.
    pub federation: String,
    /// Charter version, from 1, strictly increasing.
    pub version: u64,
    /// When it was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// The authority key that signs every version.
    pub authority: NodeId,
    /// The roster.
    pub members: Vec<Member>,
    /// The IANA time zone in which the federation's dates are read (a grant's last day `until`
    /// ends at 24:00 there). Default [`DEFAULT_TIMEZONE`].
    #[serde(
        default = "default_timezone",
        skip_serializing_if = "is_default_timezone"
    )]
    pub timezone: String,
    /// Which witnesses must cosign an audit checkpoint before members take it as final.
    #[serde(default, skip_serializing_if = "WitnessPolicy::is_default")]
    pub witnesses: WitnessPolicy,
}

/// The federation's default time zone (Haimen, Nantong: China Standard Time, no DST).
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

fn is_default_timezone(tz: &String) -> bool {
    tz == DEFAULT_TIMEZONE
}

/// The witness policy of the audit log: which keys may cosign checkpoints and how many
/// cosignatures make a checkpoint final.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessPolicy {
    /// Witness keys; empty means every active cascade member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<NodeId>,
    /// Cosignatures needed; `None` means one when there is any witness, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
}

impl WitnessPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Why a charter was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CharterError {
    /// Bad envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Payload is not a charter.
    #[error("payload is not a charter: {0}")]
    Payload(#[from] DecodeError),
    /// Signed by another key than the configured authority.
    #[error("charter signed by {found}, but this federation's authority is {expected}")]
    WrongAuthority {
        /// Signer.
        found: NodeId,
        /// Configured authority.
        expected: NodeId,
    },
    /// A structural problem.
    #[error("invalid charter: {0}")]
    Invalid(String),
}

impl Charter {
    /// Checks the roster (unique keys and codes, names, size, version).
    pub fn check(&self) -> Result<(), CharterError> {
        let bad = |m: String| Err(CharterError::Invalid(m));
        if self.layout != CHARTER_LAYOUT_VERSION {
            return bad(format!("unsupported layout {}", self.layout));
        }
        if self.version == 0 {
            return bad("version starts at 1".into());
        }
        if self.federation.trim().is_empty() {
            return bad("federation name is empty".into());
        }
        if self.members.len() > MAX_MEMBERS {
            return bad(format!("more than {MAX_MEMBERS} members"));
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!(
                "timezone {:?} is not an IANA time zone name (e.g. {DEFAULT_TIMEZONE})",
                self.timezone
            ));
        }
        let witnesses = self.witness_keys();
        if let Some(q) = self.witnesses.quorum {
            if q as usize > witnesses.len() {
                return bad(format!(
                    "the witness quorum {q} is larger than the {} witnesses",
                    witnesses.len()
                ));
            }
        }
        if let Some(k) = self.witnesses.keys.iter().find(|k| !self.is_active(k)) {
            return bad(format!("witness {k} is not an active member"));
        }
        let mut keys = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for m in &self.members {
            if m.name.trim().is_empty() {
                return bad(format!("member {} has no name", m.uscc));
            }
            if !keys.insert(m.node_key) {
                return bad(format!("node key {} is listed twice", m.node_key));
            }
            if !codes.insert(m.uscc.clone()) {
                return bad(format!("USCC {} is listed twice", m.uscc));
            }
        }
        Ok(())
    }

    /// Signs this charter with the authority key.
    pub fn seal(&self, authority: &SecretKey) -> Envelope {
        Envelope::seal(Kind::Charter, authority, codec::encode(self))
    }

    /// Opens charter bytes signed by `authority`.
    pub fn open(bytes: &[u8], authority: &NodeId) -> Result<(Charter, Envelope), CharterError> {
        let env = Envelope::open(bytes, Kind::Charter)?;
        if env.signer() != *authority {
            return Err(CharterError::WrongAuthority {
                found: env.signer(),
                expected: *authority,
            });
        }
        let charter: Charter = codec::decode(env.payload(), MAX_ENVELOPE_BYTES)?;
        if charter.authority != env.signer() {
            return Err(CharterError::Invalid(
                "charter names another authority than its signer".into(),
            ));
        }
        charter.check()?;
        Ok((charter, env))
    }

    /// The member with this node key.
    pub fn member(&self, key: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.node_key == *key)
    }

    /// The member with this USCC.
    pub fn member_by_uscc(&self, uscc: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.uscc.as_str() == uscc)
    }

    /// The keys whose cosignatures count for the audit log: the policy's keys, or every active
    /// cascade member when the policy names none.
    pub fn witness_keys(&self) -> Vec<NodeId> {
        if !self.witnesses.keys.is_empty() {
            return self.witnesses.keys.clone();
        }
        self.members
            .iter()
            .filter(|m| m.role == Role::Cascade && m.status == MemberStatus::Active)
            .map(|m| m.node_key)
            .collect()
    }

    /// How many witness cosignatures make a checkpoint final.
    pub fn witness_quorum(&self) -> usize {
        match self.witnesses.quorum {
            Some(q) => q as usize,
            None => usize::from(!self.witness_keys().is_empty()),
        }
    }

    /// The time zone of the federation's dates.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai)
    }

    /// Seconds since the Unix epoch at the end of day `date` (`YYYY-MM-DD`) in the federation's
    /// time zone: the first second after it, minus one (23:59:59 local).
    pub fn end_of_day(&self, date: &str) -> Option<u64> {
        end_of_day_in(self.tz(), date)
    }

    /// Today's date (`YYYY-MM-DD`) in the federation's time zone.
    pub fn today(&self, now_ms: u64) -> String {
        today_in(self.tz(), now_ms)
    }

    /// Whether `key` belongs to an active member.
    pub fn is_active(&self, key: &NodeId) -> bool {
        self.member(key)
            .is_some_and(|m| m.status == MemberStatus::Active)
    }
}

/// Seconds since the Unix epoch of 23:59:59 on `date` (`YYYY-MM-DD`) in `tz`.
pub fn end_of_day_in(tz: chrono_tz::Tz, date: &str) -> Option<u64> {
    use chrono::TimeZone;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let next = d.succ_opt()?.and_hms_opt(0, 0, 0)?;
    let t = tz.from_local_datetime(&next).earliest()?.timestamp() - 1;
    u64::try_from(t).ok()
}

/// The date (`YYYY-MM-DD`) in `tz` at `now_ms`.
pub fn today_in(tz: chrono_tz::Tz, now_ms: u64) -> String {
    let utc = chrono::DateTime::from_timestamp_millis(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .unwrap_or_default();
    utc.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tz_tests {
    use super::*;

    #[test]
    fn a_day_ends_at_midnight_in_the_federation_zone() {
        // 2030-12-31 24:00 in Beijing is 2030-12-31 16:00 UTC.
        let end = end_of_day_in(chrono_tz::Asia::Shanghai, "2030-12-31").unwrap();
        assert_eq!(end, 1_924_963_200 - 1);
        assert_eq!(
            end_of_day_in(chrono_tz::UTC, "2030-12-31").unwrap(),
            1_924_992_000 - 1
        );
        assert_eq!(end_of_day_in(chrono_tz::UTC, "2030-02-30"), None);
        // 2030-12-31 17:00 UTC is already 2031-01-01 in Beijing.
        assert_eq!(
            today_in(chrono_tz::Asia::Shanghai, 1_924_966_800_000),
            "2031-01-01"
        );
        assert_eq!(today_in(chrono_tz::UTC, 1_924_966_800_000), "2030-12-31");
    }
}
