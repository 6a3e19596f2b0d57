//! Accepting charter versions: only versions signed by the configured authority, for this
//! federation, and newer than the one held, are stored.
//!
//! Layering: just above `state` and `store` (it adds `NodeState::offer_charter`); the network
//! and the admin API offer it charters.

use huitong_protocol::charter::CharterError;
use huitong_protocol::Charter;
use tracing::info;

use crate::state::NodeState;
use crate::store::StoreError;

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
    /// Not newer.
    #[error("charter version {offered} is not newer than the version {held} this node holds")]
    NotNewer {
        /// Offered.
        offered: u64,
        /// Held.
        held: u64,
    },
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NodeState {
    /// Verifies and stores a charter envelope; returns the accepted charter.
    pub fn offer_charter(&self, bytes: &[u8]) -> Result<Charter, OfferError> {
        let authority = self.authority.ok_or(OfferError::NoAuthority)?;
        let (charter, _) = Charter::open(bytes, &authority)?;
        if charter.federation != self.config.federation.name {
            return Err(OfferError::Federation {
                found: charter.federation,
                expected: self.config.federation.name.clone(),
            });
        }
        let w = self.store.writer();
        let held = self.with_charter(|c| c.map_or(0, |c| c.version));
        if charter.version <= held {
            return Err(OfferError::NotNewer {
                offered: charter.version,
                held,
            });
        }
        self.store.put_charter(&w, bytes)?;
        info!(target: "huitong::audit", version = charter.version, members = charter.members.len(), "accepted charter");
        self.set_charter(charter.clone());
        Ok(charter)
    }

    /// The current charter version (0 when none).
    pub fn charter_version(&self) -> u64 {
        self.with_charter(|c| c.map_or(0, |c| c.version))
    }
}
