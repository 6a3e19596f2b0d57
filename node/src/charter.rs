//! Accepting charter versions: only versions signed by the configured authority, for this
//! federation, linked to the versions held ([`History::add`]), are stored, and every version is
//! kept, so that each feed entry is judged by the version it names. A second, different charter
//! of a version held is equivocation by the authority: both are kept as evidence and `status`
//! raises it, like a feed fork.
//!
//! Layering: just above `state` and `store` (it adds `NodeState::offer_charter`); the network
//! and the admin API offer it charters.

use huitong_protocol::charter::{CharterError, CharterHash, History, HistoryError};
use huitong_protocol::{Charter, NodeId};
use tracing::{info, warn};

use crate::state::NodeState;
use crate::store::{Store, StoreError};

/// Most contradicting charters kept as evidence.
const MAX_EVIDENCE: usize = 64;

/// Why a charter was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// No authority key configured.
    #[error("no federation.authority_key in huitong.toml: set it to the authority's public key before importing a charter")]
    NoAuthority,
    /// Bad signature, wrong authority, malformed.
    #[error(transparent)]
    Charter(#[from] CharterError),
    /// Another federation.
    #[error("charter is for federation {found:?} but this node is configured for {expected:?}")]
    Federation {
        /// In the charter.
        found: String,
        /// Configured.
        expected: String,
    },
    /// Held already.
    #[error("charter version {0} is held already")]
    Held(u64),
    /// Not next to the versions held.
    #[error("charter version {offered} does not follow the versions this node holds ({first}..={latest}); import the versions in between first (`huitong charter export` on a node that has them)")]
    Gap {
        /// Offered.
        offered: u64,
        /// Earliest held.
        first: u64,
        /// Latest held.
        latest: u64,
    },
    /// The authority signed two different charters of one version.
    #[error("{0}; both are kept as evidence (see `huitong status`)")]
    Equivocation(HistoryError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an accepted charter changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new latest version: re-gate peers and pass it on.
    Latest(Box<Charter>),
    /// An earlier version filled in (a node that started from a later one).
    Earlier(u64),
}

/// Loads the charter versions stored in `store`, checking each against `authority`.
pub fn load(store: &Store, authority: Option<NodeId>) -> anyhow::Result<History> {
    let mut history = History::new();
    let Some(authority) = authority else {
        return Ok(history);
    };
    for bytes in store.charters()? {
        let (charter, env) = Charter::open(&bytes, &authority)
            .map_err(|e| anyhow::anyhow!("a stored charter does not verify: {e}"))?;
        let version = charter.version;
        history
            .add(charter, CharterHash::of(env.payload()))
            .map_err(|e| anyhow::anyhow!("stored charter version {version}: {e}"))?;
    }
    Ok(history)
}

impl NodeState {
    /// What is wrong when the latest charter admits this node's key under another USCC than
    /// `node.org_code`: the node would sign entries for a department the federation does not
    /// know it as (checked at start, and before every append, since a charter may arrive or
    /// change after start).
    pub fn org_code_problem(&self) -> Option<String> {
        let me = self.id();
        let ours = &self.config.node.org_code;
        let admitted = self.with_charter(|c| {
            c.and_then(|c| c.members.iter().find(|m| m.node_key == me))
                .map(|m| (m.uscc.to_string(), m.name.clone()))
        });
        match admitted {
            Some((uscc, name)) if uscc != *ours => Some(format!(
                "node.org_code is {ours} in huitong.toml, but the charter admits this node's key \
                 as {name} ({uscc}): set node.org_code = \"{uscc}\" in huitong.toml and restart, \
                 or ask the platform administrator to correct the charter"
            )),
            _ => None,
        }
    }

    /// Verifies a charter envelope and adds it to the versions held.
    pub fn offer_charter(&self, bytes: &[u8]) -> Result<Accepted, OfferError> {
        let authority = self.authority.ok_or(OfferError::NoAuthority)?;
        let (charter, env) = Charter::open(bytes, &authority)?;
        if charter.federation != self.config.federation.name {
            return Err(OfferError::Federation {
                found: charter.federation,
                expected: self.config.federation.name.clone(),
            });
        }
        let hash = CharterHash::of(env.payload());
        let version = charter.version;
        let w = self.store.writer();
        // Checked, then stored, then added: the versions in memory never run ahead of the
        // store (every offer holds the writer lock, so nothing comes between).
        let admitted =
            self.with_history(|h| h.admits(&charter, &hash).map(|()| version > h.version()));
        match admitted {
            Ok(latest) => {
                self.store.put_charter(&w, version, bytes)?;
                self.with_history_mut(|h| h.add(charter.clone(), hash))
                    .map_err(|e| OfferError::Charter(CharterError::Invalid(e.to_string())))?;
                info!(target: "huitong::audit", version, members = charter.members.len(), "accepted charter");
                Ok(if latest {
                    Accepted::Latest(Box::new(charter))
                } else {
                    Accepted::Earlier(version)
                })
            }
            Err(HistoryError::Duplicate(v)) => Err(OfferError::Held(v)),
            Err(HistoryError::Gap {
                offered,
                first,
                latest,
            }) => Err(OfferError::Gap {
                offered,
                first,
                latest,
            }),
            Err(e @ HistoryError::Equivocation { .. }) => {
                let evidence = self.store.charter_evidence()?;
                let fresh = !evidence.iter().any(|held| held == bytes);
                // One piece proves the equivocation; a leaked authority key must not fill the disk.
                if fresh && evidence.len() < MAX_EVIDENCE {
                    self.store
                        .put_charter_evidence(&w, version, &hash.0, bytes)?;
                    warn!(target: "huitong::audit", version, error = %e, "CHARTER EQUIVOCATION: evidence stored");
                }
                self.reject("charter_equivocation");
                Err(OfferError::Equivocation(e))
            }
            Err(HistoryError::Chain(e)) => Err(OfferError::Charter(e)),
            Err(e) => Err(OfferError::Charter(CharterError::Invalid(e.to_string()))),
        }
    }

    /// The latest charter version (0 when none).
    pub fn charter_version(&self) -> u64 {
        self.with_history(History::version)
    }

    /// The stored envelope of the latest charter version.
    pub fn charter_envelope(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self.charter_version() {
            0 => Ok(None),
            v => self.store.charter(v),
        }
    }
}
