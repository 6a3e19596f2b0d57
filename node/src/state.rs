//! Node state shared by the network event loop and the admin API: the node directory, the
//! store, the chunk store, the node key, the configuration, the charter versions held, the audit's
//! in-memory state, the cache of verified grant tokens, a restored node's catch-up on its own
//! feed, the free-space ledger of its running jobs, and the counters `status` reports.
//!
//! Layering: above the store, the chunk store, the counters, `catchup`, `outfile` and `audit_log` only; every module
//! above uses it, and it names none of them (the feeds' views, the network and the audit services
//! get their own handles from the daemon).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use huitong_config::Config;
use huitong_protocol::charter::History;
use huitong_protocol::{Charter, NodeId, SecretKey};

use crate::chunks::ChunkStore;
use crate::store::Store;

/// How many refused peers `status` remembers.
const MAX_REFUSED: usize = 64;

/// In-memory counters for `status`.
#[derive(Default, Debug, Clone, serde::Serialize)]
pub struct Counters {
    /// Rejected messages by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Recently refused peers (not in the charter), newest last.
    pub refused_peers: VecDeque<String>,
    /// Entries accepted from other nodes.
    pub accepted: u64,
}

/// State shared by every part of a running node.
pub struct NodeState {
    /// The node directory (`huitong.toml`, `node.key`, `db/`, `chunks/`, `audit/`, …).
    pub dir: PathBuf,
    /// The store (shared with the chunk store, which keeps small chunks in it).
    pub store: Arc<Store>,
    /// The node key.
    pub key: SecretKey,
    /// The configuration.
    pub config: Config,
    /// The authority this node trusts, if configured.
    pub authority: Option<NodeId>,
    /// The chunk store (dataset contents).
    pub chunks: ChunkStore,
    /// Transfer counters.
    pub transfer: crate::stats::Stats,
    /// The audit log (hub) and checkpoint watch (every node).
    pub audit: crate::audit_log::AuditState,
    /// Grant tokens whose signatures verified (one verification per token, not per chunk).
    pub grants: huitong_protocol::grant::TokenCache,
    /// A restored node's catch-up on its own feed (nothing pending otherwise).
    pub catch_up: crate::catchup::CatchUp,
    /// Free space: what running pulls, exports and publishes reserved, and the floor kept free
    /// on the node directory's file system (`storage.keep_free_mib`).
    pub space: crate::outfile::Space,
    /// The hash-chained log of API service calls, made and answered.
    pub calls: crate::call_log::CallLog,
    charters: RwLock<History>,
    counters: Mutex<Counters>,
}

impl NodeState {
    /// Assembles the state of the node in `dir` (its audit log is under `dir/audit`).
    pub fn new(
        dir: &Path,
        store: Arc<Store>,
        chunks: ChunkStore,
        key: SecretKey,
        config: Config,
        authority: Option<NodeId>,
        charters: History,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            store,
            chunks,
            audit: crate::audit_log::AuditState::new(dir.join("audit")),
            transfer: Default::default(),
            grants: Default::default(),
            catch_up: Default::default(),
            space: crate::outfile::Space::new(
                dir,
                crate::outfile::Floor::from_mib(config.storage.keep_free_mib),
            ),
            calls: Default::default(),
            key,
            config,
            authority,
            charters: RwLock::new(charters),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// This node's public key.
    pub fn id(&self) -> NodeId {
        self.key.public()
    }

    /// A copy of the latest charter.
    pub fn charter(&self) -> Option<Charter> {
        self.with_charter(|c| c.cloned())
    }

    /// Reads the latest charter without cloning.
    pub fn with_charter<T>(&self, f: impl FnOnce(Option<&Charter>) -> T) -> T {
        f(self
            .charters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest())
    }

    /// Reads every charter version held.
    pub fn with_history<T>(&self, f: impl FnOnce(&History) -> T) -> T {
        f(&self.charters.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the charter versions held (the caller stores what it adds).
    pub(crate) fn with_history_mut<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.charters.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// The charter role of a member.
    pub fn role_of(&self, key: &NodeId) -> Option<huitong_protocol::Role> {
        self.with_charter(|c| c.and_then(|c| c.member(key)).map(|m| m.role))
    }

    /// The hub's node key in the current charter (also the platform key that roots grants).
    pub fn hub_key(&self) -> Option<NodeId> {
        self.with_charter(|c| {
            c?.members
                .iter()
                .find(|m| m.role == huitong_protocol::Role::Hub)
                .map(|m| m.node_key)
        })
    }

    /// The time zone of the federation's dates (the charter's; Asia/Shanghai without one).
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.with_charter(|c| c.map_or(chrono_tz::Asia::Shanghai, |c| c.tz()))
    }

    /// Today's date, `YYYY-MM-DD`, in the federation's time zone.
    pub fn today(&self) -> String {
        huitong_protocol::charter::today_in(self.timezone(), now_ms())
    }

    /// Seconds since the Unix epoch at the start (00:00, federation time) of day `date`.
    pub fn start_of_day(&self, date: &str) -> Option<u64> {
        huitong_protocol::charter::start_of_day_in(self.timezone(), date)
    }

    /// Seconds since the Unix epoch at the end (24:00, federation time) of day `date`.
    pub fn end_of_day(&self, date: &str) -> Option<u64> {
        huitong_protocol::charter::end_of_day_in(self.timezone(), date)
    }

    /// Whom a restored node must hear before it appends to its own feed: the other active
    /// members, and the hub among them (see [`crate::catchup`]).
    pub fn catch_up_peers(&self) -> crate::catchup::Peers {
        let me = self.id();
        self.with_charter(|c| {
            let Some(c) = c else {
                return crate::catchup::Peers::default();
            };
            let active = || {
                c.members.iter().filter(|m| {
                    m.node_key != me && m.status == huitong_protocol::MemberStatus::Active
                })
            };
            crate::catchup::Peers {
                others: active().map(|m| m.node_key).collect(),
                hub: active()
                    .find(|m| m.role == huitong_protocol::Role::Hub)
                    .map(|m| m.node_key),
            }
        })
    }

    /// Whether this node is the hub in the current charter.
    pub fn is_hub(&self) -> bool {
        self.role_of(&self.id()) == Some(huitong_protocol::Role::Hub)
    }

    /// Counts a rejected message.
    pub fn reject(&self, reason: &str) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.rejected.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts an accepted entry.
    pub fn accepted(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accepted += 1;
    }

    /// Remembers a refused peer.
    pub fn refused_peer(&self, peer: String) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if !c.refused_peers.contains(&peer) {
            c.refused_peers.push_back(peer);
            if c.refused_peers.len() > MAX_REFUSED {
                c.refused_peers.pop_front();
            }
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub use crate::clock::now_ms;

#[cfg(test)]
pub(crate) mod testing {
    //! A node state for unit tests: a fresh store in a temporary directory and a charter (held
    //! in memory only) naming a hub and this node as a department.

    use huitong_protocol::charter::{CharterHash, CHARTER_LAYOUT_VERSION};
    use huitong_protocol::{codec, Member, MemberStatus, Role, Uscc};

    use super::*;

    fn uscc(n: u8) -> Uscc {
        let first17 = format!("11320684MB00000{n}0");
        let check = huitong_protocol::uscc::check_character(&first17).expect("valid prefix");
        Uscc::parse(&format!("{first17}{check}")).expect("valid USCC")
    }

    fn member(n: u8, key: &NodeId, role: Role) -> Member {
        Member {
            uscc: uscc(n),
            name: format!("member {n}"),
            node_key: *key,
            role,
            addresses: Vec::new(),
            status: MemberStatus::Active,
        }
    }

    /// The state of a department node (key `[9; 32]`) in a federation whose hub is `hub`; the
    /// directory lives as long as the returned guard.
    pub(crate) fn department(hub: &NodeId) -> (tempfile::TempDir, NodeState) {
        department_under_layout(hub, CHARTER_LAYOUT_VERSION)
    }

    /// [`department`] under a charter of `layout`.
    pub(crate) fn department_under_layout(
        hub: &NodeId,
        layout: u8,
    ) -> (tempfile::TempDir, NodeState) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = SecretKey::from_bytes([9; 32]);
        let authority = SecretKey::from_bytes([8; 32]).public();
        let charter = Charter {
            layout,
            federation: "海门区".into(),
            version: 1,
            issued_at_ms: 0,
            authority,
            members: vec![
                member(0, hub, Role::Hub),
                member(1, &key.public(), Role::Department),
            ],
            timezone: huitong_protocol::charter::DEFAULT_TIMEZONE.into(),
            witnesses: Default::default(),
            previous: None,
            closed: Vec::new(),
            feed_quota: Default::default(),
        };
        charter.check().expect("valid charter");
        let mut history = History::new();
        history
            .add(charter.clone(), CharterHash::of(&codec::encode(&charter)))
            .expect("first version");
        let config = Config::parse(
            &format!(
                "[node]\nname = \"member 1\"\norg_code = \"{}\"\n[storage]\nkeep_free_mib = 64\n",
                uscc(1).as_str()
            ),
            Path::new("huitong.toml"),
        )
        .expect("valid configuration");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let chunks = ChunkStore::open(&dir.path().join("chunks"), store.clone(), 128 << 10)
            .expect("chunk store");
        let state = NodeState::new(
            dir.path(),
            store,
            chunks,
            key,
            config,
            Some(authority),
            history,
        );
        (dir, state)
    }
}
