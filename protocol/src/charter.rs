//! The charter: a signed, versioned roster of a federation's members.
//!
//! Signed by the federation authority key (kept offline by the platform administrator). A node
//! accepts a charter only if the authority matches the one it was configured with, and keeps
//! every version: version N+1 names the hash of version N ([`Charter::previous`]), so the
//! versions form one chain, and two different charters of one version are equivocation
//! evidence, like a feed fork.
//!
//! Feed entries name the charter version their signer held ([`crate::FeedEntry::charter`]) and
//! are judged against that version, not against whatever version the judging node holds
//! ([`History::judge`]): so suspending, removing or re-keying a member leaves its earlier entries
//! valid on every node, old or fresh. What stops a suspended member from back-dating new entries
//! to an old version is the version that suspended it: it closes the member's feed at the last
//! seq the federation keeps ([`ClosedFeed`]).

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, MAX_ENVELOPE_BYTES};
use crate::envelope::{Envelope, EnvelopeError, Kind, SignatureRule};
use crate::{NodeId, SecretKey, Uscc};

mod history;
pub use history::{History, HistoryError, Refusal};

/// Version of the charter layout a new charter gets: 2, whose feed entries are judged by ZIP-215
/// rules ([`Charter::signature_rule`]). Layout 1 (strict rules) is still accepted; a node that
/// knows only layout 1 refuses a layout-2 charter, so no entry it would judge differently can
/// name one before it is upgraded.
pub const CHARTER_LAYOUT_VERSION: u8 = 2;
/// The first charter layout whose entries are judged by ZIP-215 rules.
pub const ZIP215_CHARTER_LAYOUT: u8 = 2;
/// The highest charter version (far beyond any real federation; keeps version arithmetic
/// clear of overflow).
pub const MAX_VERSION: u64 = 1 << 40;
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
    /// Suspended from publishing but allowed to stay connected and read: it may sync the
    /// catalogue and pull what it is authorised for; its new feed entries are refused and
    /// nobody fetches its feed.
    ReadOnly,
}

impl MemberStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Suspended => "suspended",
            MemberStatus::ReadOnly => "read_only",
        }
    }
}

/// BLAKE3 of a charter version's signed payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CharterHash(#[serde(with = "crate::bytes32")] pub [u8; 32]);

impl CharterHash {
    /// Hashes a charter envelope's payload.
    pub fn of(payload: &[u8]) -> Self {
        Self(*blake3::hash(payload).as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for CharterHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CharterHash({})", &self.to_hex()[..16])
    }
}

/// A feed closed by a charter version: the key stopped being active in that version (suspended,
/// removed, re-keyed) or changed member (USCC) or role, and of its entries that name an earlier
/// version, only those up to `last_seq` stand. Its later entries must name this version or a
/// later one and are judged by it: a suspended member cannot back-date an entry to a version
/// in which it was active, and a member cannot keep a role it lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedFeed {
    /// The key whose feed is closed.
    pub node_key: NodeId,
    /// The last seq of its feed that the federation keeps (0: none).
    pub last_seq: u64,
}

/// How fast one feed may grow, the same for every node so that every node accepts the same
/// entries: at most `entries_per_hour` entries whose timestamps fall within any one hour. A
/// member that floods its feed is refused past the quota instead of filling every member's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedQuota {
    /// Entries per feed per hour of entry timestamps.
    pub entries_per_hour: u32,
}

/// The default [`FeedQuota`]: 20,000 entries an hour (a bulk catalogue import of several
/// thousand entries fits; a flood of millions does not).
pub const DEFAULT_ENTRIES_PER_HOUR: u32 = 20_000;

impl Default for FeedQuota {
    fn default() -> Self {
        Self {
            entries_per_hour: DEFAULT_ENTRIES_PER_HOUR,
        }
    }
}

impl FeedQuota {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
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
    /// The hash of version `version - 1` (none for version 1): the versions form one chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<CharterHash>,
    /// Feeds this version closes: every key that was active in the previous version and is not
    /// active, or not the same member (USCC, role), in this one, with the last seq of its feed
    /// the federation keeps among the entries that name an earlier version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<ClosedFeed>,
    /// How fast one feed may grow.
    #[serde(default, skip_serializing_if = "FeedQuota::is_default")]
    pub feed_quota: FeedQuota,
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
    /// Does not follow the version it claims to follow.
    #[error("charter version {version} does not follow version {held}: {why}")]
    Chain {
        /// The offered version.
        version: u64,
        /// The version it should follow.
        held: u64,
        /// What is wrong.
        why: String,
    },
}

impl Charter {
    /// The rules by which the signature of a feed entry naming this version is judged
    /// ([`crate::feed::FeedEntry::charter`]): ZIP-215 from layout 2, strict before. An entry's
    /// own layout says which rules it was signed for ([`crate::feed::signature_rule`]); one
    /// signed for ZIP-215 may name only a version whose rules are ZIP-215
    /// ([`History::judge_rule`]), so nodes that hold that version — and only they can judge the
    /// entry — all judge it alike.
    pub fn signature_rule(&self) -> SignatureRule {
        if self.layout >= ZIP215_CHARTER_LAYOUT {
            SignatureRule::Zip215
        } else {
            SignatureRule::Strict
        }
    }

    /// Checks the roster (unique keys and codes, names, size, version).
    pub fn check(&self) -> Result<(), CharterError> {
        let bad = |m: String| Err(CharterError::Invalid(m));
        if !(1..=CHARTER_LAYOUT_VERSION).contains(&self.layout) {
            return bad(format!(
                "unsupported layout {} (this node knows layouts 1 to {CHARTER_LAYOUT_VERSION}: upgrade it)",
                self.layout
            ));
        }
        if self.version == 0 || self.version > MAX_VERSION {
            return bad(format!(
                "version {} is not in 1..={MAX_VERSION}",
                self.version
            ));
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
        if (self.version == 1) != self.previous.is_none() {
            return bad(if self.version == 1 {
                "version 1 cannot name a previous version".into()
            } else {
                format!(
                    "version {} does not name the hash of version {}",
                    self.version,
                    self.version - 1
                )
            });
        }
        let hubs = self.members.iter().filter(|m| m.role == Role::Hub).count();
        if hubs != 1 {
            return bad(format!(
                "a charter needs exactly one hub, this one has {hubs} (admit the hub first, with --role hub, and only one)"
            ));
        }
        if let Some(m) = self.member(&self.authority) {
            return bad(format!(
                "the authority key is also the node key of member {} ({}): the authority key must be a separate key kept offline (`huitong authority keygen`)",
                m.name, m.uscc
            ));
        }
        if self.feed_quota.entries_per_hour == 0 {
            return bad("feed_quota.entries_per_hour must be at least 1".into());
        }
        let mut closed = std::collections::HashSet::new();
        if let Some(c) = self.closed.iter().find(|c| !closed.insert(c.node_key)) {
            return bad(format!("feed {} is closed twice", c.node_key));
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

    /// Checks that this version follows `prev` (whose payload hashes to `prev_hash`): the next
    /// version number, the same federation and authority, and a closed feed for every key that
    /// was active in `prev` and is not in this version (the closure is what keeps a suspended
    /// member from back-dating entries).
    pub fn follows(&self, prev: &Charter, prev_hash: &CharterHash) -> Result<(), CharterError> {
        let fail = |why: String| {
            Err(CharterError::Chain {
                version: self.version,
                held: prev.version,
                why,
            })
        };
        if self.version != prev.version + 1 {
            return fail(format!("its version is not {}", prev.version + 1));
        }
        if self.previous != Some(*prev_hash) {
            return fail(format!(
                "it names previous hash {}, but version {} hashes to {}",
                self.previous.map_or_else(|| "none".into(), |h| h.to_hex()),
                prev.version,
                prev_hash.to_hex()
            ));
        }
        if self.federation != prev.federation || self.authority != prev.authority {
            return fail("it changes the federation name or the authority".into());
        }
        if self.layout < prev.layout {
            return fail(format!(
                "it goes back from layout {} to layout {}",
                prev.layout, self.layout
            ));
        }
        for m in prev
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Active)
        {
            let closed = self.closed.iter().any(|c| c.node_key == m.node_key);
            let same = self.member(&m.node_key).is_some_and(|n| {
                n.status == MemberStatus::Active && n.uscc == m.uscc && n.role == m.role
            });
            if !same && !closed {
                return fail(format!(
                    "member {} ({}) is no longer active as the same member and role under key {}, but its feed is not closed",
                    m.name, m.uscc, m.node_key
                ));
            }
        }
        if let Some(c) = self.closed.iter().find(|c| !prev.is_active(&c.node_key)) {
            return fail(format!(
                "it closes the feed of {}, which was not active in version {}",
                c.node_key, prev.version
            ));
        }
        Ok(())
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
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    midnight_in(tz, d.succ_opt()?)?.checked_sub(1)
}

/// Seconds since the Unix epoch of 00:00 on `date` (`YYYY-MM-DD`) in `tz` (the earlier, where a
/// clock change repeats it).
pub fn start_of_day_in(tz: chrono_tz::Tz, date: &str) -> Option<u64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    midnight_in(tz, d)
}

/// Seconds since the Unix epoch of 00:00 on `d` in `tz`.
fn midnight_in(tz: chrono_tz::Tz, d: chrono::NaiveDate) -> Option<u64> {
    use chrono::TimeZone;
    let t = tz
        .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
        .earliest()?;
    u64::try_from(t.timestamp()).ok()
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
        // The day before ends one second before the day starts.
        assert_eq!(
            start_of_day_in(chrono_tz::Asia::Shanghai, "2031-01-01"),
            Some(end + 1)
        );
        assert_eq!(start_of_day_in(chrono_tz::UTC, "2030-02-30"), None);
        // 2030-12-31 17:00 UTC is already 2031-01-01 in Beijing.
        assert_eq!(
            today_in(chrono_tz::Asia::Shanghai, 1_924_966_800_000),
            "2031-01-01"
        );
        assert_eq!(today_in(chrono_tz::UTC, 1_924_966_800_000), "2030-12-31");
    }
}
