//! The `huitong.toml` schema and its defaults.

use std::net::SocketAddr;

use huitong_protocol::{NodeId, Role, Uscc};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub node: NodeConfig,
    /// Which federation it belongs to.
    #[serde(default)]
    pub federation: FederationConfig,
    /// Peer-to-peer networking.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The local admin API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Disk space kept free for the node's own files.
    #[serde(default, skip_serializing_if = "StorageConfig::is_default")]
    pub storage: StorageConfig,
    /// How applications are handled on this node.
    #[serde(default, skip_serializing_if = "ApplicationsConfig::is_default")]
    pub applications: ApplicationsConfig,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "NotifyConfig::is_default")]
    pub notify: NotifyConfig,
    /// `[portal]`: the sharing portal's own address.
    #[serde(default)]
    pub portal: PortalConfig,
    /// `[gateway]`: a listener of its own for the service gateway (on the department LAN).
    #[serde(default, skip_serializing_if = "GatewayConfig::is_default")]
    pub gateway: GatewayConfig,
    /// `[services]`: the API services this node answers (接口共享).
    #[serde(default, skip_serializing_if = "ServicesConfig::is_default")]
    pub services: ServicesConfig,
    /// `[collect]`: where this node's resources are collected from (采集).
    #[serde(default, skip_serializing_if = "crate::CollectConfig::is_default")]
    pub collect: crate::CollectConfig,
}

/// `[services]`: quotas on the calls this node answers, per consumer node and resource (per
/// grant, for conditional data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// Calls a second (a burst of as many is allowed). Unset: [`DEFAULT_CALLS_PER_SECOND`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_second: Option<u32>,
    /// Calls a day (federation time). Unset: [`DEFAULT_CALLS_PER_DAY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls_per_day: Option<u64>,
    /// Seconds between two anchors of this node's call log head in the hub's audit log (while
    /// calls are made), 1 to 60. Unset: [`DEFAULT_ANCHOR_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_secs: Option<u64>,
    /// Proxied services: each 接口 resource of this node answered by a department backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendConfig>,
}

/// `[[services.backends]]`: the department's own HTTP/JSON service behind one of this node's
/// 接口 resources. Its credentials (headers) are in the node's secrets file, never here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The resource code (`class/number`) the backend answers.
    pub code: String,
    /// The backend's base URL (`http://host:port/path`); calls go to base URL + the call's path.
    pub base_url: String,
    /// Seconds a call may take at the backend, 1 to 10 (the consumer's node waits 15 s for the
    /// whole call). Unset: [`DEFAULT_BACKEND_TIMEOUT_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Largest answer taken from the backend (KiB), 1 to [`MAX_BACKEND_RESPONSE_KIB`]. Unset:
    /// [`DEFAULT_BACKEND_RESPONSE_KIB`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_kib: Option<u64>,
}

/// The default time a backend call may take.
pub const DEFAULT_BACKEND_TIMEOUT_SECS: u64 = 8;
/// The default largest backend answer (KiB).
pub const DEFAULT_BACKEND_RESPONSE_KIB: u64 = 1024;
/// The largest backend answer that can be set (KiB): it must fit a signed call answer.
pub const MAX_BACKEND_RESPONSE_KIB: u64 = 1536;

impl BackendConfig {
    /// Time a call may take at the backend.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_BACKEND_TIMEOUT_SECS))
    }

    /// Largest answer taken (bytes).
    pub fn max_response(&self) -> usize {
        usize::try_from(
            self.max_response_kib
                .unwrap_or(DEFAULT_BACKEND_RESPONSE_KIB)
                * 1024,
        )
        .unwrap_or(usize::MAX)
    }

    fn check(&self) -> Result<(), String> {
        if !self.code.contains('/') || self.code.len() > 32 {
            return Err(format!(
                "code {:?} must be a resource code, class/number",
                self.code
            ));
        }
        let rest = self.base_url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "base_url {:?} must start with http:// (the backend sits on the department's own network, behind this node)",
                self.base_url
            )
        })?;
        if rest.is_empty()
            || rest.starts_with('/')
            || !self.base_url.bytes().all(|b| b.is_ascii_graphic())
            || rest.contains(['?', '#', '@'])
        {
            return Err(format!(
                "base_url {:?} must be http://host[:port][/path], without spaces, user, query or fragment",
                self.base_url
            ));
        }
        if self.timeout_secs.is_some_and(|t| !(1..=10).contains(&t)) {
            return Err(
                "timeout_secs must be 1 to 10 (the consumer's node waits 15 s for a whole call)"
                    .into(),
            );
        }
        if self
            .max_response_kib
            .is_some_and(|k| !(1..=MAX_BACKEND_RESPONSE_KIB).contains(&k))
        {
            return Err(format!(
                "max_response_kib must be 1 to {MAX_BACKEND_RESPONSE_KIB}"
            ));
        }
        Ok(())
    }
}

/// The default seconds between call log anchors.
pub const DEFAULT_ANCHOR_SECS: u64 = 60;

/// The default calls a second per consumer and resource.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 200;
/// The default calls a day per consumer and resource.
pub const DEFAULT_CALLS_PER_DAY: u64 = 1_000_000;

impl ServicesConfig {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Calls a second.
    pub fn calls_per_second(&self) -> u32 {
        self.calls_per_second.unwrap_or(DEFAULT_CALLS_PER_SECOND)
    }

    /// Calls a day.
    pub fn calls_per_day(&self) -> u64 {
        self.calls_per_day.unwrap_or(DEFAULT_CALLS_PER_DAY)
    }

    /// The backend of resource `code`, if it is a proxied service.
    pub fn backend(&self, code: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.code == code)
    }

    /// Time between two call log anchors.
    pub fn anchor_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.anchor_secs.unwrap_or(DEFAULT_ANCHOR_SECS))
    }
}

/// `[notify]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// An `http://` URL that receives a JSON POST for each notification (a new incoming
    /// application, a decision on this node's application, a deadline one working day away, a
    /// revocation, an audit alarm), e.g. the department's gateway to 政务微信, 钉钉 or e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl NotifyConfig {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[portal]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Address of the sharing portal (共享门户), loopback; port 0 picks a free port (written to
    /// `portal.addr`). `off` serves no portal.
    #[serde(default = "default_portal")]
    pub listen: String,
    /// Largest file a cataloguer may upload as a dataset version through the portal, in MiB
    /// (the CLI's `dataset publish` has no such limit).
    #[serde(default = "default_max_upload_mib")]
    pub max_upload_mib: u64,
    /// PEM certificate chain: with `tls_key`, the portal serves HTTPS (needed to listen
    /// anywhere but loopback).
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert` (keep it 0600).
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// The address people open, e.g. `https://portal.haimen.example:7420`: off loopback the
    /// portal answers only requests naming this host (against DNS rebinding), and forms only
    /// from this origin.
    #[serde(default)]
    pub public_origin: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            listen: default_portal(),
            max_upload_mib: default_max_upload_mib(),
            tls_cert: None,
            tls_key: None,
            public_origin: None,
        }
    }
}

fn default_max_upload_mib() -> u64 {
    1024
}

fn default_portal() -> String {
    "127.0.0.1:7420".into()
}

/// `[gateway]`: where the department's systems reach the service gateway (`/svc/…`) besides
/// the admin API's loopback address — e.g. the node's address on the department LAN, so
/// systems on other machines call through it. Serves the gateway only, never the admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on, e.g. `"10.20.0.5:7430"`. Unset: no listener of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// PEM certificate chain: with `tls_key`, the gateway serves HTTPS (needed to listen
    /// anywhere but loopback: client keys must not cross the LAN in clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert` (keep it 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl GatewayConfig {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[applications]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationsConfig {
    /// 办理时限: working days (Monday to Friday, federation time) an approver has to decide an
    /// application once the hub accepted it. Unset: [`DEFAULT_DEADLINE_WORKING_DAYS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_working_days: Option<u32>,
}

/// The default 办理时限, in working days.
pub const DEFAULT_DEADLINE_WORKING_DAYS: u32 = 5;

impl ApplicationsConfig {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The 办理时限 in working days.
    pub fn deadline_working_days(&self) -> u32 {
        self.deadline_working_days
            .unwrap_or(DEFAULT_DEADLINE_WORKING_DAYS)
    }
}

/// `[node]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The organisation's name, e.g. 海门区公安局.
    pub name: String,
    /// Its 统一社会信用代码.
    pub org_code: String,
    /// `department` (default), `hub` or `cascade`.
    #[serde(default = "default_role")]
    pub role: String,
}

/// `[federation]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Federation name (default 海门区); names the gossip topic.
    #[serde(default = "default_federation")]
    pub name: String,
    /// Hex public key of the authority that signs charters. Until it is set the node cannot
    /// accept a charter and so talks to nobody.
    #[serde(default)]
    pub authority_key: Option<String>,
}

/// `[network]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddresses to listen on (QUIC and TCP).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Extra multiaddresses to dial at start (charter members' addresses are dialled anyway).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Seconds between anti-entropy rounds with every connected peer.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// The bulk data port, where consumers fetch chunks over TCP + TLS 1.3 authenticated by
    /// the node key: `"IP:PORT"` (e.g. `"0.0.0.0:7401"`, the port to open in a firewall),
    /// `"off"` (chunks then go over the libp2p connection, slower), or unset: the host of the
    /// first TCP listen address with a port the system picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_listen: Option<String>,
}

/// `[api]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Loopback address of the admin API; port 0 picks a free port (written to `api.addr`).
    #[serde(default = "default_api")]
    pub listen: String,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `huitong_node=debug` (overridden by `RUST_LOG`).
    #[serde(default = "default_level")]
    pub level: String,
    /// Log to this file (relative to the node directory) instead of stderr, rotated by size;
    /// unset (the default) logs to stderr, which systemd sends to the journal.
    #[serde(default)]
    pub file: Option<String>,
    /// Size in MiB at which the log file is rotated (`node.log` → `node.log.1`).
    #[serde(default = "default_max_file_mib")]
    pub max_file_mib: u64,
    /// Rotated log files kept (`node.log.1` … `node.log.N`); older ones are removed.
    #[serde(default = "default_keep_files")]
    pub keep_files: usize,
}

/// `[storage]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// MiB kept free on the node directory's file system (the store, the chunk store, the
    /// audit log): pulls, exports and publishes are refused rather than eat into it. Unset (the
    /// default): the larger of 1 GiB and 5 % of the file system, at most a quarter of it; 0
    /// keeps nothing back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_free_mib: Option<u64>,
    /// The directory people signed in to the API (and the portal) exchange files through:
    /// their pulls are written and their dataset publishes read only inside it. Relative paths
    /// are in the node directory. Unset (the default): `exchange` in the node directory. The
    /// node's admin token (the CLI) is not confined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_dir: Option<std::path::PathBuf>,
    /// KiB up to which a chunk (a table's column chunk, a file's short last chunk) is kept in
    /// the node's database instead of a file of its own under `chunks/`: a table version is
    /// hundreds of such chunks, and a file each costs an inode, a rename and an fsync. 0 keeps
    /// every chunk in a file. Unset (the default): [`DEFAULT_SMALL_CHUNK_KIB`]; at most
    /// [`MAX_SMALL_CHUNK_KIB`]. Chunks already stored stay where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_chunk_kib: Option<u32>,
}

/// Default of `storage.small_chunk_kib`: below the smallest chunk a file is cut into (256 KiB
/// but for its last), above most column chunks of a table.
pub const DEFAULT_SMALL_CHUNK_KIB: u32 = 128;
/// The largest `storage.small_chunk_kib` accepted: larger values would have the database
/// rewrite them on every compaction.
pub const MAX_SMALL_CHUNK_KIB: u32 = 1024;

impl StorageConfig {
    /// Whether nothing is set (then `huitong init` writes no `[storage]` table).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Bytes up to which a chunk is kept in the database (`small_chunk_kib`, or its default).
    pub fn small_chunk_bytes(&self) -> usize {
        self.small_chunk_kib.unwrap_or(DEFAULT_SMALL_CHUNK_KIB) as usize * 1024
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The largest `storage.keep_free_mib` accepted (16 TiB).
const MAX_KEEP_FREE_MIB: u64 = 16 * 1024 * 1024;

fn default_role() -> String {
    "department".into()
}
fn default_federation() -> String {
    "海门区".into()
}
fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/udp/7400/quic-v1".into(),
        "/ip4/0.0.0.0/tcp/7400".into(),
    ]
}
fn default_sync_interval() -> u64 {
    10
}
fn default_api() -> String {
    "127.0.0.1:7410".into()
}
fn default_level() -> String {
    "info".into()
}
fn default_max_file_mib() -> u64 {
    16
}
fn default_keep_files() -> usize {
    5
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            bootstrap: Vec::new(),
            sync_interval_secs: default_sync_interval(),
            data_listen: None,
        }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            name: default_federation(),
            authority_key: None,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: default_level(),
            file: None,
            max_file_mib: default_max_file_mib(),
            keep_files: default_keep_files(),
        }
    }
}

impl Config {
    /// A fresh configuration with defaults.
    pub fn new(name: &str, org_code: &str, role: Role) -> Self {
        Self {
            node: NodeConfig {
                name: name.into(),
                org_code: org_code.into(),
                role: role.as_str().into(),
            },
            federation: FederationConfig {
                name: default_federation(),
                authority_key: None,
            },
            network: NetworkConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            applications: ApplicationsConfig::default(),
            notify: NotifyConfig::default(),
            services: ServicesConfig::default(),
            portal: PortalConfig::default(),
            gateway: GatewayConfig::default(),
            collect: crate::CollectConfig::default(),
        }
    }

    /// Checks values; on error returns the dotted key and a message saying how to fix it.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.node.name.trim().is_empty() {
            return Err((
                "node.name",
                "must not be empty; give the organisation's name".into(),
            ));
        }
        Uscc::parse(&self.node.org_code).map_err(|e| {
            (
                "node.org_code",
                format!("{e}; give the organisation's 18-character 统一社会信用代码"),
            )
        })?;
        self.role()?;
        if self.federation.name.trim().is_empty() {
            return Err(("federation.name", "must not be empty".into()));
        }
        self.authority_key()?;
        if self.network.sync_interval_secs == 0 || self.network.sync_interval_secs > 3600 {
            return Err((
                "network.sync_interval_secs",
                "must be between 1 and 3600 seconds".into(),
            ));
        }
        for (key, list) in [
            ("network.listen", &self.network.listen),
            ("network.bootstrap", &self.network.bootstrap),
        ] {
            if let Some(bad) = list.iter().find(|a| !a.starts_with('/')) {
                return Err((
                    key,
                    format!("{bad:?} is not a multiaddress; write e.g. \"/ip4/0.0.0.0/udp/7400/quic-v1\""),
                ));
            }
        }
        if let Some(d) = self.network.data_listen.as_deref() {
            if d.trim() != "off" && d.trim().parse::<std::net::SocketAddr>().is_err() {
                return Err((
                    "network.data_listen",
                    format!(
                        "{d:?} is not an IP:PORT address; write e.g. \"0.0.0.0:7401\", or \"off\""
                    ),
                ));
            }
        }
        // Port 0 picks a free port for each, so only a fixed port can clash.
        let api = self.api_addr()?;
        if self.portal_addr()? == Some(api) && api.port() != 0 {
            return Err((
                "portal.listen",
                format!(
                    "{} is also api.listen; give the portal its own port (e.g. 127.0.0.1:7420)",
                    self.portal.listen
                ),
            ));
        }
        if let Some(g) = self.gateway_addr()? {
            let portal = self.portal_addr()?;
            if g.port() != 0 && (g == api || Some(g) == portal) {
                return Err((
                    "gateway.listen",
                    format!("{g} is also the admin API's or the portal's address; give the gateway its own port (e.g. 7430)"),
                ));
            }
        }
        if self.log.max_file_mib == 0 || self.log.max_file_mib > 4096 {
            return Err((
                "log.max_file_mib",
                "must be between 1 and 4096 (MiB)".into(),
            ));
        }
        if self.log.keep_files > 100 {
            return Err(("log.keep_files", "must be at most 100".into()));
        }
        if self
            .log
            .file
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return Err((
                "log.file",
                "must not be empty; remove the key to log to stderr (the journal)".into(),
            ));
        }
        if let Some(url) = &self.notify.webhook {
            let ok = url
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if !ok {
                return Err((
                    "notify.webhook",
                    format!("{url:?} is not an http:// URL with a host (e.g. http://10.1.2.3:8080/huitong); HTTPS gateways are not supported yet: put a local relay in front"),
                ));
            }
        }
        if self
            .applications
            .deadline_working_days
            .is_some_and(|d| !(1..=60).contains(&d))
        {
            return Err((
                "applications.deadline_working_days",
                "must be between 1 and 60 (working days); remove the key for the default of 5"
                    .into(),
            ));
        }
        if self
            .storage
            .keep_free_mib
            .is_some_and(|m| m > MAX_KEEP_FREE_MIB)
        {
            return Err((
                "storage.keep_free_mib",
                format!("must be at most {MAX_KEEP_FREE_MIB} (MiB, 16 TiB); remove the key for the default (the larger of 1 GiB and 5 % of the file system)"),
            ));
        }
        if self
            .storage
            .small_chunk_kib
            .is_some_and(|k| k > MAX_SMALL_CHUNK_KIB)
        {
            return Err((
                "storage.small_chunk_kib",
                format!("must be at most {MAX_SMALL_CHUNK_KIB} (KiB); remove the key for the default of {DEFAULT_SMALL_CHUNK_KIB}, or set 0 to keep every chunk in a file"),
            ));
        }
        if self.services.calls_per_second == Some(0) {
            return Err((
                "services.calls_per_second",
                format!("must be at least 1; remove the key for the default of {DEFAULT_CALLS_PER_SECOND}"),
            ));
        }
        if self
            .services
            .anchor_secs
            .is_some_and(|s| !(1..=60).contains(&s))
        {
            return Err((
                "services.anchor_secs",
                format!("must be 1 to 60 (seconds; calls are anchored at least every minute); remove the key for the default of {DEFAULT_ANCHOR_SECS}"),
            ));
        }
        let mut codes = std::collections::HashSet::new();
        for b in &self.services.backends {
            if let Err(why) = b.check() {
                return Err(("services.backends", format!("{}: {why}", b.code)));
            }
            if !codes.insert(b.code.as_str()) {
                return Err((
                    "services.backends",
                    format!("{} has two backends; keep one", b.code),
                ));
            }
        }
        self.collect.check()?;
        if self.services.calls_per_day == Some(0) {
            return Err((
                "services.calls_per_day",
                format!(
                    "must be at least 1; remove the key for the default of {DEFAULT_CALLS_PER_DAY}"
                ),
            ));
        }
        Ok(())
    }

    /// The role.
    pub fn role(&self) -> Result<Role, (&'static str, String)> {
        Role::parse(&self.node.role).ok_or((
            "node.role",
            format!(
                "{:?} is not a role; use department, hub or cascade",
                self.node.role
            ),
        ))
    }

    /// The authority key, if configured.
    pub fn authority_key(&self) -> Result<Option<NodeId>, (&'static str, String)> {
        self.federation
            .authority_key
            .as_deref()
            .map(|k| {
                NodeId::from_hex(k).map_err(|e| {
                    (
                        "federation.authority_key",
                        format!("{e}; paste the 64-hex-character public key the platform administrator gave you"),
                    )
                })
            })
            .transpose()
    }

    /// The admin API socket address (always loopback).
    pub fn api_addr(&self) -> Result<SocketAddr, (&'static str, String)> {
        loopback(
            "api.listen",
            &self.api.listen,
            "127.0.0.1:7410",
            "the admin API",
        )
    }

    /// The portal's socket address, `None` when `portal.listen = "off"`. Off loopback it needs
    /// TLS (`tls_cert`, `tls_key`) and `public_origin`.
    pub fn portal_addr(&self) -> Result<Option<SocketAddr>, (&'static str, String)> {
        let p = &self.portal;
        if p.listen.trim() == "off" {
            return Ok(None);
        }
        if p.tls_cert.is_some() != p.tls_key.is_some() {
            return Err((
                "portal.tls_cert",
                "give both portal.tls_cert and portal.tls_key (PEM files), or neither".into(),
            ));
        }
        if let Some(o) = &p.public_origin {
            self.public_host()?;
            if !o.starts_with("https://") && p.tls_cert.is_some() {
                return Err((
                    "portal.public_origin",
                    format!("{o:?}: the portal serves HTTPS, so write the origin as https://…"),
                ));
            }
        }
        let addr: SocketAddr = p.listen.parse().map_err(|_| {
            (
                "portal.listen",
                format!(
                    "{:?} is not an address; write e.g. \"127.0.0.1:7420\"",
                    p.listen
                ),
            )
        })?;
        if !addr.ip().is_loopback() && (p.tls_cert.is_none() || p.public_origin.is_none()) {
            return Err((
                "portal.listen",
                format!("{addr} is not a loopback address: a portal reached from other machines needs HTTPS and its public address; set portal.tls_cert, portal.tls_key and portal.public_origin (e.g. \"https://portal.haimen.example:7420\"), or listen on 127.0.0.1"),
            ));
        }
        Ok(Some(addr))
    }

    /// The gateway's own address, if it has one: loopback, or any address with HTTPS.
    pub fn gateway_addr(&self) -> Result<Option<SocketAddr>, (&'static str, String)> {
        let g = &self.gateway;
        let Some(listen) = &g.listen else {
            return Ok(None);
        };
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            return Err((
                "gateway.tls_cert",
                "give both gateway.tls_cert and gateway.tls_key (PEM files), or neither".into(),
            ));
        }
        let addr: SocketAddr = listen.parse().map_err(|_| {
            (
                "gateway.listen",
                format!("{listen:?} is not an address; write e.g. \"10.20.0.5:7430\""),
            )
        })?;
        if !addr.ip().is_loopback() && g.tls_cert.is_none() {
            return Err((
                "gateway.listen",
                format!("{addr} is not a loopback address: a gateway reached from other machines needs HTTPS (client keys must not cross the network in clear); set gateway.tls_cert and gateway.tls_key, or listen on 127.0.0.1"),
            ));
        }
        Ok(Some(addr))
    }

    /// The host (and port, if given) of `portal.public_origin`, as browsers send it in `Host`.
    pub fn public_host(&self) -> Result<Option<String>, (&'static str, String)> {
        let Some(o) = &self.portal.public_origin else {
            return Ok(None);
        };
        let host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .map(|h| h.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ']));
        match host {
            // Browsers leave the default port out of `Host`.
            Some(h) => Ok(Some(
                h.to_ascii_lowercase()
                    .strip_suffix(if o.starts_with("https://") { ":443" } else { ":80" })
                    .map_or_else(|| h.to_ascii_lowercase(), str::to_string),
            )),
            None => Err((
                "portal.public_origin",
                format!("{o:?} is not an origin; write e.g. \"https://portal.haimen.example:7420\" (scheme, host, optional port; no path)"),
            )),
        }
    }
}

/// Parses `value` of `key` as a loopback socket address.
fn loopback(
    key: &'static str,
    value: &str,
    example: &str,
    what: &str,
) -> Result<SocketAddr, (&'static str, String)> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        (
            key,
            format!("{value:?} is not an address; write e.g. \"{example}\""),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err((
            key,
            format!("{addr} is not a loopback address; {what} only listens on 127.0.0.1 or [::1]"),
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};
    use std::path::Path;

    const GOOD: &str = r#"
[node]
name = "海门区公安局"
org_code = "91350100M000100Y43"
"#;

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse(GOOD, Path::new("huitong.toml")).unwrap();
        assert_eq!(c.network.sync_interval_secs, 10);
        assert_eq!(c.api.listen, "127.0.0.1:7410");
        assert_eq!(c.federation.name, "海门区");
        assert_eq!(c.node.role, "department");
        assert_eq!(c.storage.keep_free_mib, None);
        assert!(
            !c.to_toml().contains("[storage]"),
            "init writes no empty [storage]"
        );
        let c = Config::parse(
            &format!("{GOOD}\n[storage]\nkeep_free_mib = 256\n"),
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!(c.storage.keep_free_mib, Some(256));
        let back = Config::parse(&c.to_toml(), Path::new("h.toml")).unwrap();
        assert_eq!(back.storage.keep_free_mib, Some(256));
        let e = Config::parse(
            &format!("{GOOD}\n[storage]\nkeep_free_mib = 99999999999\n"),
            Path::new("h.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("storage.keep_free_mib"), "{e}");
        assert_eq!(c.storage.small_chunk_bytes(), 128 * 1024);
        let c = Config::parse(
            &format!("{GOOD}\n[storage]\nsmall_chunk_kib = 0\n"),
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!(c.storage.small_chunk_bytes(), 0);
        let e = Config::parse(
            &format!("{GOOD}\n[storage]\nsmall_chunk_kib = 4096\n"),
            Path::new("h.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("storage.small_chunk_kib"), "{e}");
    }

    #[test]
    fn the_deadline_defaults_to_5_working_days_and_is_bounded() {
        let c = Config::parse(GOOD, Path::new("h.toml")).unwrap();
        assert_eq!(c.applications.deadline_working_days(), 5);
        let c = Config::parse(
            &format!("{GOOD}\n[applications]\ndeadline_working_days = 10\n"),
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!(c.applications.deadline_working_days(), 10);
        for bad in ["0", "61"] {
            let e = Config::parse(
                &format!("{GOOD}\n[applications]\ndeadline_working_days = {bad}\n"),
                Path::new("h.toml"),
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("applications.deadline_working_days"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_gateway_off_loopback_needs_tls_and_backends_and_anchors_are_checked() {
        let parse = |extra: &str| Config::parse(&format!("{GOOD}\n{extra}\n"), Path::new("h.toml"));
        let e = parse("[gateway]\nlisten = \"10.0.0.5:7430\"").unwrap_err();
        assert!(
            e.to_string().contains("gateway.listen") && e.to_string().contains("HTTPS"),
            "{e}"
        );
        let e = parse("[gateway]\nlisten = \"10.0.0.5:7430\"\ntls_cert = \"c.pem\"").unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let c = parse(
            "[gateway]\nlisten = \"10.0.0.5:7430\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
        )
        .unwrap();
        assert_eq!(
            c.gateway_addr().ok().flatten().map(|a| a.port()),
            Some(7430)
        );
        let e = parse("[gateway]\nlisten = \"127.0.0.1:7410\"").unwrap_err();
        assert!(e.to_string().contains("its own port"), "{e}");
        assert!(parse("[gateway]\nlisten = \"127.0.0.1:7430\"").is_ok());
        let backend = |b: &str| {
            parse(&format!(
                "[[services.backends]]\ncode = \"301001/000001\"\n{b}"
            ))
        };
        assert!(backend("base_url = \"http://10.0.0.9:8080/api\"").is_ok());
        for bad in [
            "base_url = \"https://10.0.0.9/api\"",
            "base_url = \"http://user@10.0.0.9/\"",
            "base_url = \"http://\"",
            "base_url = \"http://a/\"\ntimeout_secs = 0",
            "base_url = \"http://a/\"\nmax_response_kib = 4096",
        ] {
            let e = backend(bad).unwrap_err();
            assert!(e.to_string().contains("services.backends"), "{bad}: {e}");
        }
        let e = parse("[services]\nanchor_secs = 61").unwrap_err();
        assert!(e.to_string().contains("anchor_secs"), "{e}");
    }

    #[test]
    fn a_portal_off_loopback_needs_tls_and_its_public_origin() {
        let parse = |portal: &str| {
            Config::parse(
                &format!("{GOOD}\n[portal]\n{portal}\n"),
                Path::new("h.toml"),
            )
        };
        let e = parse("listen = \"0.0.0.0:7420\"").unwrap_err();
        assert!(e.to_string().contains("portal.tls_cert"), "{e}");
        let e = parse("listen = \"0.0.0.0:7420\"\ntls_cert = \"c.pem\"").unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let e = parse("listen = \"0.0.0.0:7420\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\npublic_origin = \"https://a.example/path\"").unwrap_err();
        assert!(e.to_string().contains("portal.public_origin"), "{e}");
        let e = parse("listen = \"0.0.0.0:7420\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\npublic_origin = \"http://a.example\"").unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        let c = parse("listen = \"0.0.0.0:7420\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\npublic_origin = \"https://Portal.Haimen.example:7420\"").unwrap();
        assert_eq!(
            c.public_host().ok().flatten().as_deref(),
            Some("portal.haimen.example:7420")
        );
        let c = parse("listen = \"0.0.0.0:443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\npublic_origin = \"https://portal.example:443/\"").unwrap();
        assert_eq!(
            c.public_host().ok().flatten().as_deref(),
            Some("portal.example"),
            "browsers send no default port"
        );
        // Loopback without TLS stays the default.
        assert!(parse("listen = \"127.0.0.1:7420\"").is_ok());
    }

    #[test]
    fn errors_name_file_and_key() {
        let bad = GOOD.replace("Y43", "Y44");
        let e = Config::parse(&bad, Path::new("/x/huitong.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                ConfigError::Value {
                    key: "node.org_code",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.starts_with("/x/huitong.toml: key `node.org_code`"),
            "{msg}"
        );

        let bad = format!("{GOOD}\n[api]\nlisten = \"0.0.0.0:80\"\n");
        let e = Config::parse(&bad, Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("api.listen"), "{e}");

        let bad = format!("{GOOD}\n[network]\nlistn = []\n");
        let e = Config::parse(&bad, Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");

        let bad = format!("{GOOD}\n[network]\ndata_listen = \"7401\"\n");
        let e = Config::parse(&bad, Path::new("h.toml")).unwrap_err();
        assert!(e.to_string().contains("network.data_listen"), "{e}");
        for good in ["off", "0.0.0.0:7401", "[::]:7401"] {
            let text = format!("{GOOD}\n[network]\ndata_listen = \"{good}\"\n");
            let c = Config::parse(&text, Path::new("h.toml")).unwrap();
            assert_eq!(c.network.data_listen.as_deref(), Some(good));
        }
    }
}
