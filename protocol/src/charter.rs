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

    /// Whether `key` belongs to an active member.
    pub fn is_active(&self, key: &NodeId) -> bool {
        self.member(key)
            .is_some_and(|m| m.status == MemberStatus::Active)
    }
}
