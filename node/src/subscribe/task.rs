//! The subscriber: the daemon's task that looks for a new version of each subscribed resource
//! every few seconds (at once when a subscription is added), pulls it and delivers it, one
//! delivery at a time; and the delivery itself (pull, then the target's apply).
//!
//! Layering: a task of the daemon over [`crate::transfer::pull`] and the targets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::sql::{Column, DeliverError};
use super::{dir, mysql, pg, Applied, Delivery, Meta, Subscription, Target};
use crate::dataset::export::OutFormat;
use crate::dataset::records;
use crate::feeds::Feeds;
use crate::link::Transport;
use crate::state::{now_ms, NodeState};
use crate::transfer::pull::{self, PullRequest, PullSummary, Pulls};
use huitong_protocol::dataset::Part;

/// How often the subscriptions are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// The first wait after a failed delivery; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF_MS: u64 = 5_000;
/// The longest wait after failed deliveries.
const MAX_BACKOFF_MS: u64 = 300_000;
/// Where table deliveries' pulled files are kept while applied, under the node directory.
pub const STAGING_DIR: &str = "subscriptions";
/// The longest a delivery may take (pull and apply).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Delivers the subscriptions of this node.
pub struct Subscriber {
    feeds: Arc<Feeds>,
    transport: Transport,
    pulls: Arc<Pulls>,
    wake: Notify,
}

/// The latest version known of `sub`'s resource.
pub fn latest(state: &NodeState, sub: &Subscription) -> Option<u64> {
    let record = crate::catalogue::get(&state.store, &sub.code)
        .ok()?
        .into_iter()
        .find(|r| r.entry.provider_code.as_str() == sub.provider)?;
    records::version(&state.store, &record.feed, &sub.code, None)
        .ok()?
        .map(|v| v.version)
}

/// The wait after `failures` failed deliveries.
fn backoff_ms(failures: u32) -> u64 {
    (FIRST_BACKOFF_MS << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF_MS)
}

/// Test-only: waits before a table delivery commits while the node's fault `deliver-hold` is
/// on (nothing without `fault-injection`).
async fn hold(node_dir: PathBuf) {
    if crate::faults::on(&node_dir, "deliver-hold") {
        info!("delivery holding before its commit (test fault deliver-hold)");
        while crate::faults::on(&node_dir, "deliver-hold") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Subscriber {
    /// A subscriber pulling through `transport`, its pulls listed in `pulls`. Pulled files a
    /// crash left in the staging directory are removed.
    pub fn new(feeds: Arc<Feeds>, transport: Transport, pulls: Arc<Pulls>) -> Self {
        sweep(&feeds.state().dir.join(STAGING_DIR));
        Self {
            feeds,
            transport,
            pulls,
            wake: Notify::new(),
        }
    }

    /// The node's state.
    pub fn state(&self) -> &Arc<NodeState> {
        self.feeds.state()
    }

    /// Looks at the subscriptions now (one was added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Pulls version `version` of `sub` into `out`; the summary, or why not.
    async fn pull(
        &self,
        sub: &Subscription,
        version: u64,
        (out, format): (PathBuf, OutFormat),
        (part, changes_from, fields): (Part, Option<u64>, Option<Vec<String>>),
    ) -> Result<PullSummary, String> {
        let req = PullRequest {
            code: sub.code.clone(),
            provider: Some(sub.provider.clone()),
            version: Some(version),
            fields,
            out,
            format,
            grant: sub.grant.clone(),
            token: None,
            part,
            changes_from,
            out_dir_seen: None,
            started_by: None,
            own_grant_only: sub.own_grant_only,
        };
        let started = pull::start(self.feeds.clone(), self.transport.clone(), &self.pulls, req)
            .map_err(|e| e.to_string())?;
        loop {
            let Some(view) = self.pulls.view(started.id) else {
                return Err("the pull was forgotten before it ended".into());
            };
            if view.phase.finished() {
                return match (view.summary, view.error) {
                    (Some(s), _) => Ok(s),
                    (None, Some(e)) => Err(e),
                    (None, None) => Err(format!("the pull ended {}", view.phase.as_str())),
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Delivers version `version` of `sub`: the rows applied (tables) and what the pull did.
    async fn deliver(
        &self,
        sub: &Subscription,
        version: u64,
    ) -> Result<(Option<u64>, PullSummary), DeliverError> {
        let state = self.state().clone();
        match &sub.target {
            Target::Dir {
                path,
                format,
                current,
            } => {
                let out = dir::pull_out(path, *format, *current, &sub.name, version);
                let summary = self
                    .pull(sub, version, (out.clone(), *format), whole(sub))
                    .await
                    .map_err(DeliverError::Io)?;
                dir::finish(path, *format, *current, &sub.name, &out)?;
                Ok((summary.rows, summary))
            }
            Target::Postgres { url, table } | Target::Mysql { url, table } => {
                let staging = state.dir.join(STAGING_DIR);
                std::fs::create_dir_all(&staging)
                    .map_err(|e| DeliverError::Io(format!("{}: {e}", staging.display())))?;
                if let Some(from) = sub.delivery.version {
                    match self.deliver_changes(sub, version, from, (url, table)).await {
                        Ok(done) => return Ok(done),
                        Err(Fallback::Whole(why)) => {
                            info!(subscription = %sub.name, version, reason = %why, "delivering the whole version")
                        }
                    }
                }
                let out = staging.join(format!("{}-v{version}.csv", sub.name));
                let staged = Staged(out.clone());
                let summary = self
                    .pull(sub, version, (out.clone(), OutFormat::Csv), whole(sub))
                    .await
                    .map_err(DeliverError::Io)?;
                let columns = columns(&state, sub, &summary.fields)?;
                let (password, entry) = credentials(&state, sub, url)?;
                let node = state.id().to_hex();
                let meta = meta(&node, sub, table, version);
                let shape = (table.as_str(), columns.as_slice(), sub.key.as_slice());
                let applied = if matches!(sub.target, Target::Postgres { .. }) {
                    let client = crate::dbconn::postgres(url, password.as_ref(), &entry).await?;
                    pg::deliver(&client, shape, &meta, &out, hold(state.dir.clone())).await?
                } else {
                    let mut conn = crate::dbconn::mysql(url, password.as_ref(), &entry).await?;
                    let r = mysql::deliver(&mut conn, shape, &meta, &out, hold(state.dir.clone()))
                        .await;
                    if let Err(e) = conn.disconnect().await {
                        warn!(error = %e, "closing the target database connection");
                    }
                    r?
                };
                drop(staged);
                Ok((
                    match applied {
                        Applied::Rows(n) => Some(n),
                        Applied::Already => summary.rows,
                    },
                    summary,
                ))
            }
        }
    }

    /// Delivers version `version` of `sub` into its table as the row changes from version
    /// `from`, which the table holds: only the changed rows are pulled and applied. Falls back to
    /// the whole version when the version carries no changes from `from` or the table does not
    /// hold `from`.
    async fn deliver_changes(
        &self,
        sub: &Subscription,
        version: u64,
        from: u64,
        (url, table): (&str, &str),
    ) -> Result<(Option<u64>, PullSummary), Fallback> {
        let state = self.state().clone();
        let staging = state.dir.join(STAGING_DIR);
        let up = staging.join(format!("{}-v{version}-upserts.csv", sub.name));
        let gone = staging.join(format!("{}-v{version}-deletes.csv", sub.name));
        let _staged = (Staged(up.clone()), Staged(gone.clone()));
        // Whatever goes wrong here, the whole version is delivered instead (always right, only
        // slower): a failure that lasts is then reported by the whole delivery.
        let part = |p: Part, fields: Option<Vec<String>>| (p, Some(from), fields);
        let mut summary = self
            .pull(
                sub,
                version,
                (up.clone(), OutFormat::Csv),
                part(Part::Upserts, sub.fields.clone()),
            )
            .await
            .map_err(Fallback::Whole)?;
        // The changes are keyed as the provider's table is; they fit only a table keyed the same.
        let keyed = changes_key(&state, sub, version);
        if keyed.as_deref() != Some(sub.key.as_slice()) {
            return Err(Fallback::Whole(format!(
                "the version's row changes are keyed by {:?}, this subscription by {:?}",
                keyed.unwrap_or_default(),
                sub.key
            )));
        }
        let deletes = self
            .pull(
                sub,
                version,
                (gone.clone(), OutFormat::Csv),
                part(Part::Deletes, Some(sub.key.clone())),
            )
            .await
            .map_err(Fallback::Whole)?;
        summary.bytes_fetched += deletes.bytes_fetched;
        summary.elapsed_ms += deletes.elapsed_ms;
        let whole = |e: DeliverError| Fallback::Whole(e.to_string());
        let columns = columns(&state, sub, &summary.fields).map_err(whole)?;
        let (password, entry) = credentials(&state, sub, url).map_err(whole)?;
        let rows = records_rows(&state, sub, version);
        let node = state.id().to_hex();
        let meta = meta(&node, sub, table, version);
        let shape = (table, columns.as_slice(), sub.key.as_slice());
        let at = (&meta, from, rows);
        let applied = if matches!(sub.target, Target::Postgres { .. }) {
            let client = crate::dbconn::postgres(url, password.as_ref(), &entry)
                .await
                .map_err(|e| whole(e.into()))?;
            pg::apply_changes(&client, shape, at, (&up, &gone), hold(state.dir.clone()))
                .await
                .map_err(whole)?
        } else {
            let mut conn = crate::dbconn::mysql(url, password.as_ref(), &entry)
                .await
                .map_err(|e| whole(e.into()))?;
            let r =
                mysql::apply_changes(&mut conn, shape, at, (&up, &gone), hold(state.dir.clone()))
                    .await;
            if let Err(e) = conn.disconnect().await {
                warn!(error = %e, "closing the target database connection");
            }
            r.map_err(whole)?
        };
        let Some(changed) = applied else {
            return Err(Fallback::Whole(format!(
                "the table does not hold version {from} as this subscription delivered it, or would not hold the version's {} rows after the changes",
                rows.map_or("(unknown)".to_string(), |r| r.to_string())
            )));
        };
        info!(subscription = %sub.name, version, from, rows_changed = changed, bytes_fetched = summary.bytes_fetched, "delivered the row changes");
        Ok((rows, summary))
    }

    /// Delivers every subscription that is behind, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.round(&shutdown).await {
                warn!(error = %e, "subscriptions: cannot read the subscriptions");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    async fn round(&self, shutdown: &CancellationToken) -> Result<(), crate::store::StoreError> {
        let state = self.state().clone();
        for sub in super::list(&state.store)? {
            let Some(latest) = latest(&state, &sub) else {
                continue;
            };
            let d = &sub.delivery;
            if d.version.is_some_and(|v| v >= latest) {
                continue;
            }
            let now = now_ms();
            if d.failures > 0
                && d.tried_at_ms
                    .is_some_and(|t| now < t.saturating_add(backoff_ms(d.failures)))
            {
                continue;
            }
            let began = std::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = tokio::time::timeout(DELIVERY_TIMEOUT, self.deliver(&sub, latest)) => {
                    r.unwrap_or_else(|_| Err(DeliverError::Io(format!(
                        "the delivery took more than {} minutes and was abandoned (nothing was committed)",
                        DELIVERY_TIMEOUT.as_secs() / 60
                    ))))
                }
            };
            let took_ms = began.elapsed().as_millis() as u64;
            // The subscription may have been removed (or made again) meanwhile.
            let Some(mut now_sub) = super::get(&state.store, &sub.name)?
                .filter(|s| s.created_at_ms == sub.created_at_ms)
            else {
                continue;
            };
            let at = now_ms();
            match result {
                Ok((rows, summary)) => {
                    info!(subscription = %sub.name, code = %sub.code, version = latest, rows = ?rows, bytes_fetched = summary.bytes_fetched, bytes_reused = summary.bytes_reused, pull_ms = summary.elapsed_ms, ms = took_ms, "delivered");
                    now_sub.delivery = Delivery {
                        version: Some(latest),
                        at_ms: Some(at),
                        rows,
                        bytes_fetched: summary.bytes_fetched,
                        pull_ms: summary.elapsed_ms,
                        apply_ms: took_ms.saturating_sub(summary.elapsed_ms),
                        error: None,
                        failures: 0,
                        tried_at_ms: Some(at),
                    };
                }
                Err(e) => {
                    let failures = now_sub.delivery.failures.saturating_add(1);
                    warn!(subscription = %sub.name, code = %sub.code, version = latest, failures, retry_in_secs = backoff_ms(failures) / 1000, error = %e, "delivery failed; it will be retried");
                    now_sub.delivery.error = Some(e.to_string());
                    now_sub.delivery.failures = failures;
                    now_sub.delivery.tried_at_ms = Some(at);
                }
            }
            super::put(&state.store, &now_sub)?;
        }
        Ok(())
    }
}

/// The password of `sub`'s target database at `url`, and where the secrets file keeps it.
fn credentials(
    state: &NodeState,
    sub: &Subscription,
    url: &str,
) -> Result<(Option<crate::secrets::Password>, String), DeliverError> {
    let password = crate::secrets::target_password(&state.dir, &sub.name, url)
        .map_err(|e| DeliverError::Io(e.to_string()))?;
    Ok((password, format!("[targets.\"{}\"]", sub.name)))
}

/// What a delivery of `version` of `sub` into `table` records, by node `node`.
fn meta<'a>(node: &'a str, sub: &'a Subscription, table: &'a str, version: u64) -> Meta<'a> {
    Meta {
        node,
        subscription: &sub.name,
        table,
        code: &sub.code,
        provider: &sub.provider,
        version,
    }
}

/// Why row changes were not delivered: deliver the whole version instead (the reason).
enum Fallback {
    Whole(String),
}

/// The key of the row changes version `version` of `sub`'s resource carries, from its manifest
/// as this node stored it when pulling.
fn changes_key(state: &NodeState, sub: &Subscription, version: u64) -> Option<Vec<String>> {
    let record = crate::catalogue::get(&state.store, &sub.code)
        .ok()?
        .into_iter()
        .find(|r| r.entry.provider_code.as_str() == sub.provider)?;
    let announced =
        records::version(&state.store, &record.feed, &sub.code, Some(version)).ok()??;
    let stored = records::manifest(&state.store, &announced.manifest).ok()??;
    let signed =
        huitong_protocol::dataset::SignedManifest::open(&stored.envelope, &record.feed, &announced)
            .ok()?;
    signed.manifest.changes.map(|c| c.key)
}

/// A whole-version pull of `sub`'s 信息项.
fn whole(sub: &Subscription) -> (Part, Option<u64>, Option<Vec<String>>) {
    (Part::Whole, None, sub.fields.clone())
}

/// The rows of version `version` of `sub`'s resource, as announced.
fn records_rows(state: &NodeState, sub: &Subscription, version: u64) -> Option<u64> {
    let record = crate::catalogue::get(&state.store, &sub.code)
        .ok()?
        .into_iter()
        .find(|r| r.entry.provider_code.as_str() == sub.provider)?;
    records::version(&state.store, &record.feed, &sub.code, Some(version))
        .ok()??
        .rows
}

/// The columns `sub` delivers — the 信息项 the pull wrote (`pulled`), typed from the entry.
fn columns(
    state: &NodeState,
    sub: &Subscription,
    pulled: &[String],
) -> Result<Vec<Column>, DeliverError> {
    let record = crate::catalogue::get(&state.store, &sub.code)
        .map_err(|e| DeliverError::Io(e.to_string()))?
        .into_iter()
        .find(|r| r.entry.provider_code.as_str() == sub.provider)
        .ok_or_else(|| {
            DeliverError::Data(format!(
                "the catalogue no longer holds {} of {}",
                sub.code, sub.provider
            ))
        })?;
    let columns = Column::of(&record.entry.items, Some(pulled));
    if let Some(k) = sub.key.iter().find(|k| !pulled.contains(k)) {
        return Err(DeliverError::Data(format!(
            "the key 信息项 {k} was not delivered (not granted, or not 无条件共享); subscribe with a key among {}",
            pulled.join(", ")
        )));
    }
    Ok(columns)
}

/// A table delivery's pulled file, removed when the delivery ends.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        remove_quietly(&self.0);
    }
}

fn remove_quietly(p: &Path) {
    if let Err(e) = std::fs::remove_file(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %p.display(), error = %e, "cannot remove a delivery's pulled file; remove it by hand");
        }
    }
}

/// Removes the `.csv` files in `dir` (pulled files a crash left behind), logging what it cannot
/// remove.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "csv") {
            remove_quietly(&p);
        }
    }
}
