//! The audit's state below [`crate::state`]: the log's files ([`tiles`], the C2SP tlog-tiles
//! layout the hub appends to and every member mirrors) and the in-memory [`AuditState`] that
//! `NodeState` holds (the open log, the checkpoint watcher's [`inbox`], the alarm deadlines and
//! the counters the watch keeps).
//!
//! Layering: depends only on `protocol` and [`crate::durable`]; `state` holds an
//! [`AuditState`], and the audit view ([`crate::audit`]) and services ([`crate::auditor`]) above
//! use it. Nothing here reads the store or the network.

pub mod inbox;
pub mod tiles;

pub use inbox::{Inbound, Inbox, Source};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable that overrides the audit deadlines (read once at start), e.g.
/// `checkpoints=2,omission_secs=5,proof_secs=3`.
pub const DEADLINES_ENV: &str = "HUITONG_AUDIT_DEADLINES";

/// How long the watch waits before raising an alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// An own event is overdue once this many newer final checkpoints were accepted without
    /// it (and [`Self::omission`] has passed).
    pub checkpoints: u64,
    /// The least time an event is given to reach the log.
    pub omission: Duration,
    /// How long a consistency proof may be withheld while the hub answers other questions.
    pub proof: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            checkpoints: 3,
            omission: Duration::from_secs(60),
            proof: Duration::from_secs(15),
        }
    }
}

impl Deadlines {
    /// Parses `name=value` pairs over the defaults; unknown names and bad values are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut d = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected name=value"))?;
            let n: u64 = value
                .parse()
                .ok()
                .filter(|&n| (1..=86_400).contains(&n))
                .ok_or_else(|| format!("{pair:?}: expected a number from 1 to 86400"))?;
            match name {
                "checkpoints" => d.checkpoints = n,
                "omission_secs" => d.omission = Duration::from_secs(n),
                "proof_secs" => d.proof = Duration::from_secs(n),
                _ => {
                    return Err(format!(
                        "{name:?}: expected checkpoints, omission_secs or proof_secs"
                    ))
                }
            }
        }
        Ok(d)
    }

    /// The deadlines from [`DEADLINES_ENV`], or the defaults (with a warning if it is invalid).
    pub fn from_env() -> Self {
        let Ok(text) = std::env::var(DEADLINES_ENV) else {
            return Self::default();
        };
        Self::parse(&text).unwrap_or_else(|e| {
            tracing::warn!(target: "huitong::audit", error = %e, "{DEADLINES_ENV} ignored");
            Self::default()
        })
    }
}

/// The audit parts of the node state.
pub struct AuditState {
    /// The log directory (`<node dir>/audit`).
    pub dir: PathBuf,
    /// The hub's log, or a member's mirror of it, opened on first use.
    pub log: Mutex<Option<tiles::TileLog>>,
    /// Serialises mirror updates.
    pub mirror_lock: tokio::sync::Mutex<()>,
    /// How many charter versions are known to be in the hub's log (0: none yet).
    pub charter_logged: std::sync::atomic::AtomicU64,
    /// Checkpoints waiting for the watcher.
    pub inbox: Inbox,
    /// Alarm deadlines (from the environment at start).
    pub deadlines: Deadlines,
    /// Size of the latest final checkpoint held (kept by the watcher).
    pub final_size: AtomicU64,
    /// When the hub last answered a checkpoint poll (ms; 0: never).
    pub hub_answered_ms: AtomicU64,
    /// Consistency proofs asked of the hub and not served: old size → first failure (ms).
    pub proofs_owed: Mutex<HashMap<u64, u64>>,
    /// How many rows of split-view evidence are stored (`None`: not counted yet), kept by
    /// `audit::checkpoints`; its lock also serialises storing evidence.
    pub evidence_rows: Mutex<Option<u64>>,
    /// The checkpoint notes this node vouches for in its anti-entropy summary (its latest
    /// checkpoint and the notes of its newest split-view evidence), kept by the watcher.
    pub vouched: Mutex<Vec<Vec<u8>>>,
}

impl AuditState {
    /// Audit state for a node directory.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            log: Mutex::new(None),
            mirror_lock: tokio::sync::Mutex::new(()),
            charter_logged: std::sync::atomic::AtomicU64::new(0),
            inbox: Inbox::default(),
            deadlines: Deadlines::from_env(),
            final_size: AtomicU64::new(0),
            hub_answered_ms: AtomicU64::new(0),
            proofs_owed: Mutex::new(HashMap::new()),
            evidence_rows: Mutex::new(None),
            vouched: Mutex::new(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse() {
        let d = Deadlines::parse("checkpoints=2, omission_secs=5,proof_secs=3").unwrap();
        assert_eq!(d.checkpoints, 2);
        assert_eq!(d.omission, Duration::from_secs(5));
        assert_eq!(d.proof, Duration::from_secs(3));
        assert_eq!(Deadlines::parse("").unwrap(), Deadlines::default());
        assert!(Deadlines::parse("checkpoints=0").is_err());
        assert!(Deadlines::parse("proof=3").is_err());
        assert!(Deadlines::parse("proof_secs").is_err());
    }
}
