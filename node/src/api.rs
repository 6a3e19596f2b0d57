//! The admin API's typed requests and responses, shared by the HTTP server ([`crate::http`])
//! and the CLI's client ([`crate::client`]), and where a running node writes its API address
//! and token. Paths are under `/api/v1`.
//!
//! Layering: above the modules whose types the answers carry (catalogue, audit services,
//! stats); below the daemon, the HTTP server, the client and the CLI, which all use it (the
//! server and the client never name each other).

/// File in the node directory with the API's bound address (written by the daemon once the API
/// is bound, removed at shutdown; read by the client).
pub const API_ADDR_FILE: &str = "api.addr";
/// The portal's bound address, written at start (absent when the portal is off).
pub const PORTAL_ADDR_FILE: &str = "portal.addr";
/// The file holding the service gateway's own address (when `[gateway] listen` is set).
pub const GATEWAY_ADDR_FILE: &str = "gateway.addr";
/// File in the node directory with the API bearer token (mode 0600).
pub const API_TOKEN_FILE: &str = "api.token";

pub mod accounts;

use std::collections::BTreeMap;

use huitong_protocol::{FieldError, Member};
use serde::{Deserialize, Serialize};

use crate::auditor::verify::RecordReport;
use crate::catalogue::Record;

/// `GET /api/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// Organisation name.
    pub name: String,
    /// Organisation USCC.
    pub org_code: String,
    /// Role.
    pub role: String,
    /// Federation name.
    pub federation: String,
    /// libp2p PeerId.
    pub peer_id: String,
    /// Node public key (hex).
    pub node_key: String,
    /// Charter version held (0: none yet).
    pub charter_version: u64,
    /// Members in the charter.
    pub members: usize,
    /// Whether this node is an active member.
    pub active_member: bool,
    /// Connected member peers.
    pub connected_peers: usize,
    /// Listening addresses.
    pub listen: Vec<String>,
    /// The bulk data port (TCP + TLS 1.3 with the node key) where consumers fetch chunks;
    /// `None` when it is off.
    #[serde(default)]
    pub data_listen: Option<String>,
    /// Feeds held.
    pub feeds: usize,
    /// Latest seq of this node's own feed.
    pub own_seq: u64,
    /// Live catalogue entries.
    pub catalogue_entries: u64,
    /// Catalogue changes the ranked search index does not hold yet (0: up to date; it waits
    /// while a bulk catch-up such as a fresh node's sync keeps arriving).
    #[serde(default)]
    pub search_pending: u64,
    /// Entries accepted from other nodes since start.
    pub accepted: u64,
    /// Refused messages since start, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Peers refused at connection because they are not in the charter.
    pub refused_peers: Vec<String>,
    /// Detected forks.
    pub forks: Vec<ForkInfo>,
    /// Charter equivocation found: the authority signed two charters of one version.
    #[serde(default)]
    pub charter_equivocations: Vec<CharterEquivocation>,
    /// Restored from a backup and still catching up on its own feed from its peers (appends
    /// are refused until then).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub catching_up: Option<crate::catchup::Behind>,
    /// The charter admits this node under another USCC than `node.org_code` (appends are
    /// refused until it is fixed): what is wrong and what to do.
    #[serde(default)]
    pub org_code_problem: Option<String>,
    /// Store schema version.
    pub schema_version: u32,
    /// Dataset transfer counters since start.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub transfer: crate::stats::StatsView,
    /// The audit log as this node sees it.
    #[serde(default)]
    pub audit: AuditStatus,
}

/// The audit part of `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditStatus {
    /// Size of the largest checkpoint held (hub-signed and checked here; 0: none yet).
    pub checkpoint_size: u64,
    /// Witnesses that cosigned it.
    pub cosigned_by: Vec<String>,
    /// Size of the largest final checkpoint held: one with the charter's witness quorum
    /// (0: none yet). Records are proved only against final checkpoints.
    #[serde(default)]
    pub final_size: u64,
    /// Split views found, including consistency proofs the hub withheld (kept across restarts;
    /// details: `huitong audit verify`).
    pub split_views: u64,
    /// Size of the largest checkpoint held when it still waits for the witness quorum.
    #[serde(default)]
    pub pending_witness: Option<u64>,
    /// Witness cosignatures a checkpoint needs to be final.
    #[serde(default)]
    pub witness_quorum: u64,
    /// Events found missing from the hub's log (kept across restarts; details:
    /// `huitong audit verify`).
    #[serde(default)]
    pub omissions: u64,
}

/// The versions of one resource.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Versions {
    /// Resource code.
    pub code: String,
    /// Provider name.
    pub provider: String,
    /// Versions, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<huitong_protocol::dataset::DatasetVersion>,
}

/// A started pull (`POST /api/v1/pulls`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullStarted {
    /// Its id, for `GET /api/v1/pulls/{id}`.
    pub id: u64,
    /// The same pull was already running into this output (started by an earlier `huitong
    /// pull`): this is its id.
    #[serde(default)]
    pub attached: bool,
}

/// A checkpoint of the running node's store and a copy of its audit log, staged for
/// `huitong backup` to copy (`POST /api/v1/backup`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupStaged {
    /// The staging directory (in the node directory's `backup-staging/`); the CLI copies what
    /// it holds and removes it.
    #[schema(value_type = String)]
    pub staging: std::path::PathBuf,
    /// The store's checkpoint in it (`<staging>/db`).
    #[schema(value_type = String)]
    pub db: std::path::PathBuf,
    /// This node's own feed head in it.
    pub own_seq: u64,
    /// When it was taken (ms since the epoch).
    pub created_at_ms: u64,
    /// The audit log (the hub's log, or a member's mirror) as of one checkpoint, taken after
    /// the store's; `None` when the node holds no audit log yet.
    #[serde(default)]
    pub audit: Option<StagedAudit>,
}

/// The copy of the audit log in a backup staging ([`BackupStaged::audit`]): the checkpoint and
/// exactly the tiles it needs, taken while the node held the log.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StagedAudit {
    /// The copy (`<staging>/audit`).
    #[schema(value_type = String)]
    pub dir: std::path::PathBuf,
    /// The log's origin (checkpoint key name).
    pub origin: String,
    /// The hub's key (hex), which signs the checkpoint.
    pub hub: String,
    /// The checkpoint's tree size.
    pub size: u64,
}

/// A detected fork.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForkInfo {
    /// Feed (node key hex).
    pub feed: String,
    /// Member name, if known.
    pub member: Option<String>,
    /// The seq with two different entries.
    pub seq: u64,
    /// When it was detected (ms).
    pub detected_at_ms: u64,
}

/// `POST /api/v1/catalogue` answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// Resource code.
    pub code: String,
    /// `published` or `updated`.
    pub event: String,
    /// Seq in this node's feed.
    pub seq: u64,
}

/// `POST /api/v1/catalogue/batch`: many entries at once (at most [`MAX_BATCH`]).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Batch {
    /// The entries, in order.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<huitong_protocol::catalogue::RawEntry>,
}

/// Most entries in one batch request.
pub const MAX_BATCH: usize = 2000;

/// `POST /api/v1/catalogue/batch` answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchPublished {
    /// New entries.
    pub published: usize,
    /// Updated entries.
    pub updated: usize,
    /// Seq of the last entry in this node's feed.
    pub last_seq: u64,
}

/// `POST /api/v1/catalogue/withdraw`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Withdraw {
    /// Resource code.
    pub code: String,
    /// Reason (下架原因).
    pub reason: String,
}

/// Query of `GET /api/v1/catalogue` (list and search).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Query {
    /// Full-text query.
    pub q: Option<String>,
    /// Provider USCC or part of its name.
    pub provider: Option<String>,
    /// Classification prefix.
    pub classification: Option<String>,
    /// Share type (key or Chinese label).
    pub share_type: Option<String>,
    /// Open type (key or Chinese label).
    pub open_type: Option<String>,
    /// Exact resource code.
    pub code: Option<String>,
}

/// `GET /api/v1/catalogue` answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Records {
    /// Matching records.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Record>,
}

/// `GET /api/v1/charter` answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CharterView {
    /// Federation.
    pub federation: String,
    /// Version.
    pub version: u64,
    /// Layout (2: feed entries naming it are judged by ZIP-215 rules; 1: strictly).
    #[serde(default)]
    pub layout: u8,
    /// Issued at (ms).
    pub issued_at_ms: u64,
    /// Authority key (hex).
    pub authority: String,
    /// Members.
    #[schema(value_type = Vec<Object>)]
    pub members: Vec<Member>,
    /// The time zone of the federation's dates.
    #[serde(default)]
    pub timezone: String,
    /// The audit witness policy.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub witnesses: huitong_protocol::charter::WitnessPolicy,
    /// The hash of the previous version (none for version 1).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub previous: Option<huitong_protocol::charter::CharterHash>,
    /// Feeds this version closed.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub closed: Vec<huitong_protocol::charter::ClosedFeed>,
    /// How fast one feed may grow.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub feed_quota: huitong_protocol::charter::FeedQuota,
    /// The earliest version this node holds (it fills in earlier ones from peers).
    #[serde(default)]
    pub first_held: u64,
    /// This node's head of each member's feed, by node key (hex): what `charter suspend`
    /// closes a feed at by default.
    #[serde(default)]
    pub feed_heads: std::collections::BTreeMap<String, u64>,
    /// The signed envelope, hex.
    pub envelope_hex: String,
}

/// Two different charters of one version, both signed by the authority.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CharterEquivocation {
    /// The version.
    pub version: u64,
    /// Hash of the version held.
    pub held: String,
    /// Hash of the contradicting one.
    pub other: String,
}

/// `POST /api/v1/charter`: a new signed charter version.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CharterSubmit {
    /// The signed envelope, hex.
    pub envelope_hex: String,
}

/// Every error answer.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong and what to do.
    pub error: String,
    /// Field problems, for validation errors.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<FieldError>,
}

/// `POST /api/v1/applications`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyRequest {
    /// Resource code.
    pub code: String,
    /// Provider USCC, when several providers use the code.
    pub provider: Option<String>,
    /// 信息项 asked for.
    pub fields: Vec<String>,
    /// 用途.
    pub purpose: String,
    /// 依据.
    pub basis: String,
    /// Last day, `YYYY-MM-DD`.
    pub until: String,
}

/// An application as listed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppView {
    /// Application id.
    pub id: String,
    /// Resource code.
    pub code: String,
    /// Provider name.
    pub provider: String,
    /// Applicant name.
    pub applicant: String,
    /// 信息项.
    pub fields: Vec<String>,
    /// 用途.
    pub purpose: String,
    /// 依据.
    pub basis: String,
    /// Last day.
    pub until: String,
    /// State (`submitted`, `accepted`, `approved`, `rejected`, `granted`, `expired`, `revoked`).
    pub state: String,
    /// Rejection or revocation reason.
    pub reason: Option<String>,
    /// What the provider approved, when it approved less than applied for or at all.
    #[serde(default)]
    pub approved_fields: Option<Vec<String>>,
    /// 信息项 API services return masked under the grant.
    #[serde(default)]
    pub masked: Vec<String>,
    /// API services answer only 核验 under the grant.
    #[serde(default)]
    pub verify_only: bool,
    /// Calls a second the grant allows, when the approval set it.
    #[serde(default)]
    pub calls_per_second: Option<u32>,
    /// Calls a day the grant allows, when the approval set it.
    #[serde(default)]
    pub calls_per_day: Option<u64>,
    /// The last day the provider approved.
    #[serde(default)]
    pub approved_until: Option<String>,
    /// When the issued grant token expires (Unix seconds; 24:00 of the last day in the
    /// federation's time zone), read from the token itself.
    #[serde(default)]
    pub grant_expires: Option<u64>,
    /// Every step, oldest first: what, when, which node, and who there.
    #[serde(default)]
    pub timeline: Vec<AppStep>,
    /// 办理时限, while the provider has still to decide (accepted): the last day
    /// (`YYYY-MM-DD`, federation time) and the working days left (negative once overdue).
    #[serde(default)]
    pub deadline: Option<Deadline>,
}

impl AppView {
    /// The terms of calls the approval set (masked 信息项, 核验 only, the grant's quota), each
    /// as a phrase, in Chinese or (`en`) English; empty when it set none.
    pub fn call_terms(&self, en: bool) -> Vec<String> {
        let mut out = Vec::new();
        if !self.masked.is_empty() {
            out.push(if en {
                format!("masked {}", self.masked.join(","))
            } else {
                format!("脱敏：{}", self.masked.join("、"))
            });
        }
        if self.verify_only {
            out.push(if en { "核验 only" } else { "仅核验" }.to_string());
        }
        if let Some(n) = self.calls_per_second {
            out.push(if en {
                format!("≤ {n} calls/s")
            } else {
                format!("每秒至多 {n} 次调用")
            });
        }
        if let Some(n) = self.calls_per_day {
            out.push(if en {
                format!("≤ {n} calls/day")
            } else {
                format!("每日至多 {n} 次调用")
            });
        }
        out
    }
}

/// The day an application is to be decided by.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deadline {
    /// The last day.
    pub due: String,
    /// Working days from today until then (0 on the day, negative once past).
    pub working_days_left: i64,
}

/// One step of an application's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppStep {
    /// The state the step led to (`submitted`, `accepted`, `approved`, `granted`, …; the hub's
    /// issuing of the grant shows as a second `approved`).
    pub state: String,
    /// When its entry was signed (ms since the epoch).
    pub at_ms: u64,
    /// The member whose node signed it.
    pub node: String,
    /// The person signed in there who took it (`None`: the node by itself).
    #[schema(value_type = Option<Object>)]
    pub by: Option<huitong_protocol::Actor>,
}

/// `POST /api/v1/applications/{id}/approve`: the provider's approval, possibly partial.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approve {
    /// Approve only these 信息项 (a subset of those applied for).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Approve until this day (not after the one applied for), `YYYY-MM-DD`.
    #[serde(default)]
    pub until: Option<String>,
    /// API services return these (approved) 信息项 masked (脱敏).
    #[serde(default)]
    pub masked: Vec<String>,
    /// API services answer only 核验 (match / no match) under this grant.
    #[serde(default)]
    pub verify_only: bool,
    /// Calls a second under this grant (at most the provider's `[services]` rate).
    #[serde(default)]
    pub calls_per_second: Option<u32>,
    /// Calls a day under this grant (at most the provider's `[services]` count).
    #[serde(default)]
    pub calls_per_day: Option<u64>,
}

/// A decision with a reason.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A proof file or a checkpoint note, as text.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextBody {
    /// The text.
    pub text: String,
}

/// A record's proof file.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProofFile {
    /// What it proves.
    #[schema(value_type = Object)]
    pub report: RecordReport,
    /// The c2sp.org/tlog-proof@v1 text.
    pub proof: String,
}

/// What became of an imported checkpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    /// `stored`, `known`, `cosigned` or `split view: …`.
    pub outcome: String,
}

/// A receipt, for people.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptView {
    /// Receipt id (`audit verify --record` it).
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// Consumer name.
    pub consumer: String,
    /// Resource code.
    pub code: String,
    /// Version.
    pub version: u64,
    /// 信息项.
    pub fields: Vec<String>,
    /// Bytes served.
    pub bytes: u64,
    /// Grant (application id).
    pub grant: Option<String>,
    /// When the consumer countersigned (ms).
    pub at_ms: u64,
    /// The person on the consumer's node who pulled (`None`: the node's admin token).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub by: Option<huitong_protocol::Actor>,
}

/// One API service call in this node's call log, for people.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallView {
    /// Position in the call log.
    pub seq: u64,
    /// When it ended (ms).
    pub at_ms: u64,
    /// `consumer` (this node called) or `provider` (this node answered).
    pub side: String,
    /// The other node's name.
    pub peer: String,
    /// The other node's key (hex).
    pub peer_key: String,
    /// Resource code.
    pub code: String,
    /// `lookup` or `verify`.
    pub kind: String,
    /// Grant (application id).
    pub grant: Option<String>,
    /// The call's id (the same in both nodes' logs), when answered.
    pub id: Option<String>,
    /// Hex BLAKE3 of the query.
    pub query: String,
    /// Hex BLAKE3 of the provider's signed answer.
    pub answer: Option<String>,
    /// `ok`, `refused` or `failed`.
    pub status: String,
    /// Why it was refused or failed.
    pub detail: Option<String>,
    /// Time taken on this node (µs).
    pub duration_us: u64,
    /// The calling department system (gateway client), on the consumer.
    pub client: Option<String>,
}

/// `GET /api/v1/audit/calls`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallLogView {
    /// The calls that pass the filter, oldest first.
    pub calls: Vec<CallView>,
    /// Records in the whole log.
    pub size: u64,
    /// Hex head of the chain.
    pub head: String,
    /// Why the chain does not hold, if it does not (`null`: every record follows the one
    /// before it and the stored head matches).
    pub broken: Option<String>,
}

/// One row of API call statistics.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallStatsRow {
    /// `consumer` (calls this node made) or `provider` (calls it answered).
    pub side: String,
    /// Resource code.
    pub code: String,
    /// The other node's name (per-peer rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Answered.
    pub ok: u64,
    /// Refused by the provider (grant, quota, bad query).
    pub refused: u64,
    /// Failed (provider unreachable, timeout, bad answer, backend error).
    pub failed: u64,
    /// Median time taken on this node (µs).
    pub p50_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// Slowest (µs).
    pub max_us: u64,
}

/// `GET /api/v1/audit/calls/stats`: API call statistics over a recent window.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallStatsView {
    /// The window's start (ms since the Unix epoch).
    pub since_ms: u64,
    /// Per service (side and resource).
    pub services: Vec<CallStatsRow>,
    /// Per service and other node (per consumer on the provider side, per provider on the
    /// consumer side).
    pub peers: Vec<CallStatsRow>,
    /// Calls counted.
    pub scanned: u64,
    /// The count stopped at its bound before the window's start (only the newest calls are in).
    pub cut: bool,
}

/// A provider's transfer record, for people.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferView {
    /// Transfer id (`audit verify --record` it).
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// Consumer name.
    pub consumer: String,
    /// Consumer node key (hex).
    pub consumer_key: String,
    /// Resource code.
    pub code: String,
    /// Version.
    pub version: u64,
    /// 信息项 whose chunks were sent.
    pub fields: Vec<String>,
    /// Bytes actually sent.
    pub bytes: u64,
    /// Chunks actually sent.
    pub chunks: u64,
    /// `completed` (the consumer asked for a receipt) or `abandoned`.
    pub outcome: String,
    /// The receipt, when the consumer asked for one.
    pub receipt: Option<String>,
    /// Grant (application id).
    pub grant: Option<String>,
    /// First chunk sent (ms).
    pub started_ms: u64,
    /// When it ended (ms).
    pub ended_ms: u64,
}
