//! The local admin HTTP API (axum) on a loopback address. Every route but sign-in needs a
//! bearer token: the node's admin token kept in `api.token` (mode 0600) in the node directory,
//! or a person's session token from `POST /api/v1/login`, checked against the route's rule
//! ([`authz`]). Request bodies are limited to 1 MiB.
//!
//! Layering: above everything it serves (the views, the access policy, the transfers, the audit
//! services, the network handle) and `api`, whose types it answers with; only the daemon names
//! it.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError};
use crate::catalogue;
use crate::feeds::{AppendError, Feeds};
use crate::link::Transport;
use crate::net::{Client, Command};
use crate::state::NodeState;

/// Largest request body.
const MAX_BODY: usize = 1024 * 1024;
/// Largest batch request body.
const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

mod applications;
mod audit;
pub mod authz;
mod collect;
mod datasets;
mod entries;
mod gateway;
mod idle;
mod metrics;
pub mod openapi;
pub(crate) mod paths;
mod people;
pub mod portal;
mod subscriptions;
pub mod tls;

/// Where the portal (or the gateway's own listener) listens: plain HTTP (loopback) or HTTPS.
pub enum PortalListener {
    /// HTTP on a loopback address.
    Plain(tokio::net::TcpListener),
    /// HTTPS with the portal's certificate.
    Tls(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
}

/// What every handler reads, behind one `Arc`: axum clones the state for every request (and
/// again in each middleware), and one reference count is cheaper than fifteen.
#[derive(Clone)]
struct Ctx(Arc<Shared>);

impl std::ops::Deref for Ctx {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handlers' shared state (through [`Ctx`]).
struct Shared {
    state: Arc<NodeState>,
    feeds: Arc<Feeds>,
    net: Client,
    transport: Transport,
    /// Pulls started through the API (finished ones kept for their summary).
    pulls: Arc<crate::transfer::pull::Pulls>,
    token: Arc<String>,
    people: people::People,
    /// The address the API is bound to (for the Host check of a loopback API).
    bound: SocketAddr,
    /// The catalogue's ranked search index.
    search: Arc<crate::catalogue::search::Search>,
    /// The last `/metrics` answer and when it was made (anonymous scrapes reuse it).
    metrics: Arc<tokio::sync::Mutex<Option<(std::time::Instant, String)>>>,
    /// Previews asked of providers (the entry page of a table this node does not hold).
    previews: Arc<crate::transfer::preview::Previews>,
    /// This node's API services (its own systems' calls to them are answered here).
    services: Arc<crate::service::provider::Services>,
    /// The gateway's calls in flight, per provider.
    outbound: Arc<crate::service::consumer::Outbound>,
    /// Collection runs.
    collector: Arc<crate::collect::Collector>,
    /// Subscriptions' deliveries.
    subscriber: Arc<crate::subscribe::task::Subscriber>,
}

struct Fail(StatusCode, ApiError);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn fail(code: StatusCode, msg: impl ToString) -> Fail {
    Fail(
        code,
        ApiError {
            error: msg.to_string(),
            details: Vec::new(),
        },
    )
}

fn internal(e: impl ToString) -> Fail {
    fail(StatusCode::INTERNAL_SERVER_ERROR, e)
}

type Res<T> = Result<Json<T>, Fail>;

/// How long a request body may stop arriving before its request ends.
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// What the API and the portal serve from besides the feeds: people's accounts, the search
/// index and this node's API services.
pub struct Backends {
    /// People's accounts.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// The catalogue's ranked search.
    pub search: Arc<crate::catalogue::search::Search>,
    /// This node's API services (shared with the data server).
    pub services: Arc<crate::service::provider::Services>,
    /// Collection runs (shared with the schedule task).
    pub collector: Arc<crate::collect::Collector>,
    /// Subscriptions' deliveries (its pulls are the API's too).
    pub subscriber: Arc<crate::subscribe::task::Subscriber>,
    /// The pulls of this node (the API's and the subscriptions').
    pub pulls: Arc<crate::transfer::pull::Pulls>,
}

/// Serves the API, and the portal when it has a listener, until `shutdown` is cancelled.
pub async fn serve(
    (listener, portal, gateway_at): (
        tokio::net::TcpListener,
        Option<PortalListener>,
        Option<PortalListener>,
    ),
    feeds: Arc<Feeds>,
    transport: Transport,
    token: String,
    Backends {
        accounts,
        search,
        services,
        collector,
        subscriber,
        pulls,
    }: Backends,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = Ctx(Arc::new(Shared {
        search,
        state: feeds.state().clone(),
        feeds,
        net: transport.net.clone(),
        transport,
        pulls,
        token: Arc::new(token),
        people: people::People::new(accounts),
        bound: listener.local_addr()?,
        metrics: Arc::default(),
        previews: Arc::default(),
        services,
        outbound: Arc::default(),
        collector,
        subscriber,
    }));
    let app = Router::new()
        .route("/api/v1/login", post(people::login))
        .route("/api/v1/logout", post(people::logout))
        .route("/api/v1/me", get(people::me))
        .route("/api/v1/me/password", post(people::change_own_password))
        .route(
            "/api/v1/users",
            get(people::list_users).post(people::add_user),
        )
        .route("/api/v1/users/{account}/roles", post(people::set_roles))
        .route(
            "/api/v1/users/{account}/password",
            post(people::reset_password),
        )
        .route("/api/v1/users/{account}/disable", post(people::disable))
        .route("/api/v1/users/{account}/enable", post(people::enable))
        .route("/api/v1/status", get(status))
        .route("/api/v1/healthz", get(metrics::healthz))
        .route("/api/v1/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/audit", get(audit::check_log))
        .route("/api/v1/audit/records/{id}", get(audit::records))
        .route("/api/v1/audit/records/{id}/proof", get(audit::proof))
        .route("/api/v1/audit/proofs", post(audit::check_proof))
        .route("/api/v1/audit/checkpoints", post(audit::import_checkpoint))
        .route("/api/v1/audit/receipts", get(audit::receipts))
        .route("/api/v1/audit/transfers", get(audit::transfers))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/backup", post(stage_backup))
        .route(
            "/api/v1/catalogue",
            get(entries::list).post(entries::publish),
        )
        .route(
            "/api/v1/catalogue/batch",
            post(entries::publish_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/api/v1/catalogue/withdraw", post(entries::withdraw))
        .route("/api/v1/charter", get(charter).post(submit_charter))
        .route("/api/v1/datasets", post(datasets::publish))
        .route("/api/v1/datasets/versions", get(datasets::versions))
        .route(
            "/api/v1/pulls",
            get(datasets::list_pulls).post(datasets::start_pull),
        )
        .route("/api/v1/gc", post(datasets::gc))
        .route("/api/v1/collect/run", post(collect::run))
        .route("/api/v1/collect/runs", get(collect::runs))
        .route("/api/v1/collect/sources", get(collect::sources))
        .route(
            "/api/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/api/v1/subscriptions/{name}/remove",
            post(subscriptions::remove),
        )
        .route("/api/v1/pulls/{id}", get(datasets::pull_progress))
        .route("/api/v1/pulls/{id}/cancel", post(datasets::cancel_pull))
        .route(
            "/api/v1/applications",
            get(applications::list).post(applications::apply),
        )
        .route(
            "/api/v1/applications/{id}/approve",
            post(applications::approve),
        )
        .route(
            "/api/v1/applications/{id}/reject",
            post(applications::reject),
        )
        .route(
            "/api/v1/applications/{id}/revoke",
            post(applications::revoke),
        )
        .route("/api/v1/audit/calls", get(audit::calls))
        .route("/api/v1/audit/calls/stats", get(audit::call_stats))
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            authz::guard,
        ))
        // The service gateway checks its own client keys (not the API's tokens).
        .merge(gateway::routes(&ctx))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx.clone());
    let api = {
        let shutdown = shutdown.clone();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
    };
    let stalls = || tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_STALL);
    // The gateway on a listener of its own: its routes only, never the admin API.
    let gateway_site = gateway_at.map(|l| {
        let app = gateway::routes(&ctx)
            .layer(stalls())
            .with_state(ctx.clone());
        serve_site(l, app, shutdown.clone())
    });
    let portal_site = portal.map(|l| {
        let pages = portal::router(ctx)
            .layer(axum::middleware::map_response(portal::headers))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            // A body whose next bytes do not come within this ends its request (a client that
            // sends a request head and then nothing does not hold its connection).
            .layer(stalls());
        serve_site(l, pages, shutdown.clone())
    });
    let idle = || -> Site { Box::pin(std::future::ready(Ok(()))) };
    let (a, p, g) = tokio::join!(
        api,
        portal_site.unwrap_or_else(idle),
        gateway_site.unwrap_or_else(idle)
    );
    a.and(p).and(g)
}

/// A site being served until shutdown.
type Site = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Serves `app` on `l` (HTTP, or HTTPS with hyper's header-read timeout) until `shutdown`.
fn serve_site(l: PortalListener, app: Router, shutdown: CancellationToken) -> Site {
    match l {
        PortalListener::Plain(l) => {
            let stop = async move { shutdown.cancelled().await };
            Box::pin(
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stop)
                    .into_future(),
            )
        }
        PortalListener::Tls(l, acceptor) => {
            match tls::TlsListener::new(l, acceptor, shutdown.clone()) {
                Ok(l) => Box::pin(tls::serve(l, app, shutdown)),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            }
        }
    }
}

/// The address actually bound, for `api.addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// The contradicting charters held as evidence, each against the version held.
fn charter_equivocations(
    s: &crate::state::NodeState,
) -> Result<Vec<api::CharterEquivocation>, crate::store::StoreError> {
    let Some(authority) = s.authority else {
        return Ok(Vec::new());
    };
    Ok(s.store
        .charter_evidence()?
        .iter()
        .filter_map(|b| huitong_protocol::Charter::open(b, &authority).ok())
        .map(|(c, env)| api::CharterEquivocation {
            version: c.version,
            held: s
                .with_history(|h| h.hash(c.version))
                .map(|h| h.to_hex())
                .unwrap_or_default(),
            other: huitong_protocol::charter::CharterHash::of(env.payload()).to_hex(),
        })
        .collect())
}

async fn status(State(ctx): State<Ctx>) -> Res<api::Status> {
    status_view(&ctx).await.map(Json)
}

/// The node's status, as `status` answers it and `/metrics` counts it.
async fn status_view(ctx: &Ctx) -> Result<api::Status, Fail> {
    let s = &ctx.state;
    let heads = s.store.heads().map_err(internal)?;
    let own_seq = s.store.head(&s.id()).map_err(internal)?.seq;
    let counters = s.counters();
    let forks = s
        .store
        .forks()
        .map_err(internal)?
        .into_iter()
        .map(|f| api::ForkInfo {
            feed: f.feed.to_hex(),
            member: s.with_charter(|c| c.and_then(|c| c.member(&f.feed)).map(|m| m.name.clone())),
            seq: f.seq,
            detected_at_ms: f.detected_at_ms,
        })
        .collect();
    let charter_equivocations = charter_equivocations(s).map_err(internal)?;
    let (members, active) =
        s.with_charter(|c| c.map_or((0, false), |c| (c.members.len(), c.is_active(&s.id()))));
    Ok(api::Status {
        name: s.config.node.name.clone(),
        org_code: s.config.node.org_code.clone(),
        role: s.config.node.role.clone(),
        federation: s.config.federation.name.clone(),
        peer_id: crate::net::peer_id(&s.id())
            .map(|p| p.to_string())
            .unwrap_or_default(),
        node_key: s.id().to_hex(),
        charter_version: s.charter_version(),
        members,
        active_member: active,
        connected_peers: ctx.net.peers().await.len(),
        listen: ctx.net.listeners().await,
        data_listen: ctx.transport.bulk_listening.map(|a| a.to_string()),
        feeds: heads.len(),
        own_seq,
        catalogue_entries: catalogue::count(&s.store).map_err(internal)?,
        search_pending: ctx.search.pending(),
        accepted: counters.accepted,
        rejected: counters.rejected,
        refused_peers: counters.refused_peers.into_iter().collect(),
        forks,
        charter_equivocations,
        catching_up: ctx.feeds.catching_up().map_err(internal)?,
        org_code_problem: ctx.feeds.state().org_code_problem(),
        schema_version: crate::store::SCHEMA_VERSION,
        transfer: s.transfer.view(),
        audit: {
            use crate::audit::{checkpoints, omission, quorum};
            use crate::auditor::verify;
            let latest = checkpoints::latest(s).map_err(internal)?;
            api::AuditStatus {
                checkpoint_size: latest.as_ref().map_or(0, |c| c.size),
                cosigned_by: latest
                    .map(|c| verify::view(s, &c).cosigned_by)
                    .unwrap_or_default(),
                final_size: checkpoints::latest_final(s)
                    .map_err(internal)?
                    .map_or(0, |c| c.size),
                split_views: checkpoints::evidence_count(s).map_err(internal)?,
                pending_witness: checkpoints::pending(s).map_err(internal)?.map(|c| c.size),
                witness_quorum: quorum(s) as u64,
                omissions: omission::list(s).map_err(internal)?.len() as u64,
            }
        },
    })
}

/// Stages a checkpoint of the store, then a copy of the audit log, for `huitong backup` (see
/// [`crate::backup`]).
async fn stage_backup(State(ctx): State<Ctx>) -> Res<api::BackupStaged> {
    let state = ctx.state.clone();
    let created_at_ms = crate::state::now_ms();
    let staged = tokio::task::spawn_blocking(move || {
        let (staging, own_seq) = crate::backup::stage(&state.store, &state.id(), &state.dir)
            .map_err(|e| e.to_string())?;
        // After the store's checkpoint: the log may then hold records the copied store still
        // queues (the appender drops those), never miss records the store no longer queues.
        match stage_audit(&state, &staging.join(crate::backup::STAGED_AUDIT)) {
            Ok(audit) => Ok((staging, own_seq, audit)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    })
    .await
    .map_err(internal)?;
    let (staging, own_seq, audit) = staged.map_err(internal)?;
    tracing::info!(staging = %staging.display(), own_seq, audit_size = ?audit.as_ref().map(|a| a.size), "staged a store checkpoint and the audit log for a backup");
    Ok(Json(api::BackupStaged {
        db: staging.join(crate::backup::STAGED_DB),
        staging,
        own_seq,
        created_at_ms,
        audit,
    }))
}

/// Copies the audit log into `dest` while holding it, so no append or pruning comes between the
/// checkpoint and its tiles; `None` when this node holds no log yet.
fn stage_audit(
    state: &NodeState,
    dest: &std::path::Path,
) -> Result<Option<api::StagedAudit>, String> {
    let Some((origin, hub, _)) = crate::audit::keys(state) else {
        if state
            .audit
            .dir
            .join(crate::audit_log::tiles::CHECKPOINT_FILE)
            .exists()
        {
            return Err(format!(
                "{} holds an audit log, but this node has no charter naming the hub that signs it, so it cannot be copied consistently; import the charter (`huitong charter import`), then back up again",
                state.audit.dir.display()
            ));
        }
        return Ok(None);
    };
    let copied =
        crate::audit::appender::with_log(state, |log| log.snapshot(dest)).map_err(|e| {
            format!(
                "cannot copy the audit log in {} for the backup: {e}",
                state.audit.dir.display()
            )
        })?;
    Ok(copied.map(|c| api::StagedAudit {
        dir: dest.to_path_buf(),
        origin,
        hub: hub.to_hex(),
        size: c.size,
    }))
}

async fn peers(State(ctx): State<Ctx>) -> Res<Vec<crate::net::PeerInfo>> {
    Ok(Json(ctx.net.peers().await))
}

fn append_error(e: AppendError) -> Fail {
    match e {
        AppendError::Store(e) => internal(e),
        AppendError::CatchingUp(_) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
        AppendError::Unknown(_) => fail(StatusCode::NOT_FOUND, e),
        other => fail(StatusCode::FORBIDDEN, other),
    }
}

async fn charter(State(ctx): State<Ctx>) -> Res<api::CharterView> {
    let Some(c) = ctx.state.charter() else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "this node holds no charter yet; import one with `huitong charter import FILE` or create version 1 with `huitong charter admit`",
        ));
    };
    let env = ctx
        .state
        .charter_envelope()
        .map_err(internal)?
        .unwrap_or_default();
    let mut feed_heads = std::collections::BTreeMap::new();
    for m in &c.members {
        let head = ctx.state.store.head(&m.node_key).map_err(internal)?;
        feed_heads.insert(m.node_key.to_hex(), head.seq);
    }
    Ok(Json(api::CharterView {
        federation: c.federation,
        version: c.version,
        layout: c.layout,
        issued_at_ms: c.issued_at_ms,
        authority: c.authority.to_hex(),
        members: c.members,
        timezone: c.timezone,
        witnesses: c.witnesses,
        previous: c.previous,
        closed: c.closed,
        feed_quota: c.feed_quota,
        first_held: ctx.state.with_history(|h| h.first()),
        feed_heads,
        envelope_hex: hex::encode(env),
    }))
}

async fn submit_charter(
    State(ctx): State<Ctx>,
    Json(s): Json<api::CharterSubmit>,
) -> Res<api::CharterView> {
    let bytes = hex::decode(s.envelope_hex.trim())
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "envelope_hex is not hexadecimal"))?;
    ctx.state
        .offer_charter(&bytes)
        .map_err(|e| fail(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    ctx.net.send(Command::CharterChanged).await;
    charter(State(ctx)).await
}
