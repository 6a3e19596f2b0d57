//! Probes for operators: `/healthz` (is the node serving? no token) and `/metrics` (Prometheus
//! / OpenMetrics text, no token: counts only, never names or keys beyond the node's own), both
//! under `/api/v1` on the API's address (loopback unless `api.listen` says otherwise).
//!
//! Every metric is read from the same sources as `status` at scrape time (one source of truth),
//! and encoded with `prometheus-client`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use huitong_protocol::MemberStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{internal, status_view, Ctx};
use crate::api;

/// `GET /api/v1/healthz`: 200 while the node serves (a dead task stops the whole node), with
/// whether it still catches up on its own feed after a restore.
pub(super) async fn healthz(State(ctx): State<Ctx>) -> Response {
    match ctx.feeds.catching_up() {
        Ok(c) => {
            Json(serde_json::json!({"status": "ok", "catching_up": c.is_some()})).into_response()
        }
        Err(e) => internal(e).into_response(),
    }
}

type Labels = Vec<(String, String)>;

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn labelled<'a>(
    r: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
    as_counter: bool,
) {
    if as_counter {
        let f = Family::<Labels, Counter>::default();
        for (k, v) in values {
            f.get_or_create(&vec![(label.to_string(), k.to_string())])
                .inc_by(v);
        }
        r.register(name, help, f);
    } else {
        let f = Family::<Labels, Gauge>::default();
        for (k, v) in values {
            f.get_or_create(&vec![(label.to_string(), k.to_string())])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        r.register(name, help, f);
    }
}

/// The registry of one scrape.
fn registry(s: &api::Status, pulls: &[(&'static str, u64)], suspended: u64) -> Registry {
    let mut r = Registry::with_prefix("huitong");
    gauge(
        &mut r,
        "connected_peers",
        "Peers connected now",
        s.connected_peers as u64,
    );
    gauge(
        &mut r,
        "charter_version",
        "Charter version held",
        s.charter_version,
    );
    gauge(
        &mut r,
        "members",
        "Members in the charter",
        s.members as u64,
    );
    gauge(
        &mut r,
        "members_suspended",
        "Members suspended or read-only in the charter",
        suspended,
    );
    gauge(&mut r, "feeds", "Feeds held", s.feeds as u64);
    gauge(
        &mut r,
        "own_seq",
        "Entries in this node's own feed",
        s.own_seq,
    );
    gauge(
        &mut r,
        "catalogue_entries",
        "Live catalogue entries",
        s.catalogue_entries,
    );
    counter(
        &mut r,
        "entries_accepted",
        "Feed entries accepted from other nodes",
        s.accepted,
    );
    labelled(
        &mut r,
        "rejected",
        "Messages, entries and requests refused, by reason",
        "reason",
        s.rejected.iter().map(|(k, v)| (k.as_str(), *v)),
        true,
    );
    gauge(
        &mut r,
        "forks",
        "Feed forks detected (alarm)",
        s.forks.len() as u64,
    );
    gauge(
        &mut r,
        "charter_equivocations",
        "Contradicting charters of one version held (alarm)",
        s.charter_equivocations.len() as u64,
    );
    gauge(
        &mut r,
        "catching_up",
        "1 while a restored node catches up on its own feed",
        u64::from(s.catching_up.is_some()),
    );
    let t = &s.transfer;
    counter(
        &mut r,
        "served_chunks",
        "Chunks sent to consumers",
        t.served_chunks,
    );
    counter(
        &mut r,
        "served_bytes",
        "Bytes of chunks sent to consumers",
        t.served_bytes,
    );
    counter(
        &mut r,
        "refused_data_requests",
        "Data requests refused (share type, grant, unknown chunk, …)",
        t.refused_requests,
    );
    counter(
        &mut r,
        "fetched_chunks",
        "Chunks received and verified",
        t.fetched_chunks,
    );
    counter(
        &mut r,
        "fetched_bytes",
        "Bytes of chunks received and verified",
        t.fetched_bytes,
    );
    counter(
        &mut r,
        "failed_chunks",
        "Chunks received that failed verification",
        t.failed_chunks,
    );
    labelled(
        &mut r,
        "pulls",
        "Pulls kept by the node, by phase",
        "phase",
        pulls.iter().copied(),
        false,
    );
    let a = &s.audit;
    gauge(
        &mut r,
        "audit_checkpoint_size",
        "Records in the latest audit checkpoint seen",
        a.checkpoint_size,
    );
    gauge(
        &mut r,
        "audit_final_size",
        "Records in the latest audit checkpoint cosigned by the witness quorum",
        a.final_size,
    );
    gauge(
        &mut r,
        "audit_split_views",
        "Contradicting audit checkpoints held as evidence (alarm)",
        a.split_views,
    );
    gauge(
        &mut r,
        "audit_omissions",
        "Auditable events missing from the hub's log past their deadline (alarm)",
        a.omissions,
    );
    r
}

/// How long one `/metrics` answer is reused: anyone on the API's address may scrape, so a
/// loop of scrapes computes the status at most once per this long.
pub(crate) const METRICS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /api/v1/metrics`.
pub(super) async fn metrics(State(ctx): State<Ctx>) -> Response {
    let mut cached = ctx.metrics.lock().await;
    let text = match cached.as_ref() {
        Some((at, text)) if at.elapsed() < METRICS_FRESH => text.clone(),
        _ => match render(&ctx).await {
            Ok(text) => {
                *cached = Some((std::time::Instant::now(), text.clone()));
                text
            }
            Err(f) => return f.into_response(),
        },
    };
    drop(cached);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The metrics text now.
async fn render(ctx: &Ctx) -> Result<String, super::Fail> {
    let s = status_view(ctx).await?;
    let mut phases: Vec<(&'static str, u64)> = Vec::new();
    for p in ctx.pulls.list() {
        let name = p.phase.as_str();
        match phases.iter_mut().find(|(k, _)| *k == name) {
            Some((_, n)) => *n += 1,
            None => phases.push((name, 1)),
        }
    }
    let suspended = ctx.state.with_charter(|c| {
        c.map_or(0, |c| {
            c.members
                .iter()
                .filter(|m| m.status != MemberStatus::Active)
                .count() as u64
        })
    });
    let mut out = String::new();
    encode(&mut out, &registry(&s, &phases, suspended)).map_err(internal)?;
    Ok(out)
}
