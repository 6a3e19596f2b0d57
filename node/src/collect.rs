//! Collection (采集): this node, as its department's front-end processor (前置机), reads its own
//! resources' data from the department's databases (`[[collect.sources]]` in `huitong.toml`,
//! passwords in `secrets.toml`) and publishes each run's data as a dataset version — nothing
//! when the data is exactly the latest version's.
//!
//! A run streams the source's rows as CSV text ([`postgres`], [`mysql`], [`http`]) straight
//! into the publisher ([`stream`]; never the whole table in memory, no staging file), or hands
//! it the oldest complete file of a folder ([`folder`]), and the publisher checks every
//! cell against its 信息项 as `dataset publish` does while it cuts the chunks: a run that finds a refused cell, a
//! wrong password or a missing table fails, is recorded with its reason, and the previous version
//! stays the latest. Runs start by hand (`huitong collect run`) or on the source's schedule
//! ([`schedule`], [`task`]); each is kept in the run history ([`runs`]).
//!
//! Layering: above the dataset publisher and the secrets file; the API and the daemon's task
//! call it. Names no network module but the client it gossips a new version with.

pub mod folder;
pub mod http;
pub mod mysql;
pub mod postgres;
pub mod runs;
pub mod schedule;
pub mod stream;
pub mod task;
pub mod views;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use huitong_config::{SourceConfig, SourceKind};
use huitong_protocol::Actor;
use tracing::{info, warn};

use crate::dataset::publish::{self, KeyOrder, PublishError, Published};
use crate::feeds::Feeds;
use crate::net::Client;
use crate::secrets::SecretsError;
use crate::state::{now_ms, NodeState};
use runs::{Outcome, Run, Start, Trigger};

/// Chunks of CSV text in flight between the extractor and the publisher, at most.
const STREAM_CHUNKS: usize = 16;
/// An extractor sends CSV text in pieces of about this many bytes.
const SEND_AT: usize = 64 * 1024;

/// Why a run could not be done. No variant carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// No source is configured for the resource.
    #[error("no source for {0}: add a [[collect.sources]] with code = \"{0}\" to huitong.toml and restart the node")]
    NoSource(String),
    /// The resource is not a live entry of this node.
    #[error("no published catalogue entry {0} of this organisation; publish the entry first (`huitong catalogue publish`)")]
    UnknownCode(String),
    /// A run of the resource is under way.
    #[error("a run of {0} is under way; wait for it (`huitong collect runs {0}`)")]
    Busy(String),
    /// The secrets file cannot be used.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The source (a database or an API) could not be reached, or refused the connection or the login.
    #[error("cannot reach the source of {code} ({at}): {why}")]
    Connect {
        /// The resource.
        code: String,
        /// user@host:port/database.
        at: String,
        /// The driver's reason.
        why: String,
    },
    /// The source's table, query or columns do not fit the entry.
    #[error("source of {code}: {why}")]
    Source {
        /// The resource.
        code: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// The publisher stopped reading the source's rows.
    #[error("{0}")]
    Stream(String),
    /// The run history could not be written.
    #[error("cannot record the run: {0}")]
    Record(String),
    /// The data could not be published (refused cells, no room …).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The node is stopping.
    #[error("the node is stopping; the run was abandoned")]
    Stopping,
    /// A folder source holds no complete file.
    #[error("no complete file in {path} for {code}: drop a .csv, .jsonl or .xlsx file there (taken once unchanged for {settle_secs} s, or at once beside a NAME.done file)")]
    NoFile {
        /// The resource.
        code: String,
        /// The folder.
        path: String,
        /// The source's settle time.
        settle_secs: u64,
    },
}

/// Checks that every 信息项 `columns` maps is one of the entry's.
fn check_mapping(
    src: &SourceConfig,
    items: &[huitong_protocol::catalogue::Item],
) -> Result<(), String> {
    match src
        .columns
        .keys()
        .find(|m| !items.iter().any(|i| &i.name == *m))
    {
        Some(m) => Err(format!(
            "columns maps {m:?}, which is not a 信息项 of the entry"
        )),
        None => Ok(()),
    }
}

/// The 信息项 that are the source table's primary key `pk` (its column names, in key order), or
/// none when a key column is not one of the entry's 信息项; for a query, the `key` it is
/// given (when all of them are 信息项).
fn key_items(
    src: &SourceConfig,
    items: &[huitong_protocol::catalogue::Item],
    pk: &[String],
) -> Vec<String> {
    if src.query.is_some() {
        let all = src.key.iter().all(|k| items.iter().any(|i| &i.name == k));
        return if all { src.key.clone() } else { Vec::new() };
    }
    let found: Vec<String> = pk
        .iter()
        .filter_map(|col| {
            items
                .iter()
                .find(|i| src.columns.get(&i.name).unwrap_or(&i.name) == col)
                .map(|i| i.name.clone())
        })
        .collect();
    if found.len() == pk.len() {
        found
    } else {
        Vec::new()
    }
}

/// What follows `FROM` in a source's select: the table, each part quoted by `quote`, or the
/// query as a subquery.
fn from_clause(src: &SourceConfig, quote: fn(&str) -> String) -> String {
    match (&src.table, &src.query) {
        (Some(t), _) => t.split('.').map(quote).collect::<Vec<_>>().join("."),
        // On lines of its own, so a query ending in a `--` comment does not swallow the alias.
        (None, Some(q)) => format!(
            "(\n{}\n) AS huitong_source",
            q.trim().trim_end_matches(';').trim_end()
        ),
        (None, None) => String::new(),
    }
}

/// How the rows keyed by `key` are read: by integer when every key column is an integer
/// (`is_int` says of a column name) — the database walks its primary-key index, and the rows
/// start at once — else by the key's text, which the database must sort first.
fn key_order(src: &SourceConfig, key: &[String], is_int: impl Fn(&str) -> bool) -> KeyOrder {
    let all_int = key
        .iter()
        .all(|k| is_int(src.columns.get(k).map_or(k.as_str(), String::as_str)));
    if !key.is_empty() && all_int {
        KeyOrder::Integer
    } else {
        KeyOrder::Text
    }
}

/// The `ORDER BY` clause of a source's select: by the key in `key_order` (`as_text` turns a
/// select expression into its byte-ordered text) when there is a `key`; a table without one by
/// all its columns; a query as it orders itself.
fn order_by(
    src: &SourceConfig,
    items: &[huitong_protocol::catalogue::Item],
    (key, exprs, key_order): (&[String], &[String], KeyOrder),
    as_text: impl Fn(&str) -> String,
) -> String {
    let order: Vec<String> = if !key.is_empty() {
        key.iter()
            .filter_map(|k| items.iter().position(|i| &i.name == k))
            .filter_map(|i| exprs.get(i))
            .map(|e| match key_order {
                KeyOrder::Integer => e.clone(),
                KeyOrder::Text => as_text(e),
            })
            .collect()
    } else if src.table.is_some() {
        (1..=exprs.len()).map(|n| n.to_string()).collect()
    } else {
        Vec::new()
    };
    if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    }
}

/// The error for a 信息项 whose column `name` the source lacks (it has `have`).
fn missing_column(name: &str, item: &huitong_protocol::catalogue::Item, have: &[&str]) -> String {
    format!(
        "no column {name:?} for 信息项 {:?}; the source has {}: map it in [collect.sources] columns = {{ \"{}\" = \"column\" }}",
        item.name,
        have.iter().take(40).copied().collect::<Vec<_>>().join(", "),
        item.name
    )
}

/// The error for a watermark column `name` of type `type_name`, which does not only grow in
/// a way the source can compare (text compares by its letters).
fn watermark_type(name: &str, type_name: impl std::fmt::Display) -> String {
    format!(
        "watermark column {name:?} is of type {type_name}; it must be a number, a date or a timestamp that grows whenever a row changes"
    )
}

/// The error for a watermark column `name` the source lacks (it has `have`).
fn missing_watermark(name: &str, have: &[&str]) -> String {
    format!(
        "no watermark column {name:?}; the source has {}: set watermark to one of them, or remove it to read the whole source every run",
        have.iter().take(40).copied().collect::<Vec<_>>().join(", ")
    )
}

/// The error for column `name` of type `type_name`, which cannot hold `item`'s values.
fn wrong_type(
    name: &str,
    type_name: impl std::fmt::Display,
    item: &huitong_protocol::catalogue::Item,
) -> String {
    format!(
        "column {name:?} is of type {type_name}, which cannot hold 信息项 {:?} ({} {}); change the entry's 数据类型 or map another column",
        item.name,
        item.data_type.label(),
        item.data_type.key()
    )
}

/// A fingerprint of what a source reads (not when): a watermark reached under other settings
/// (another table, query, column or key) does not carry over.
fn source_print(s: &SourceConfig) -> String {
    let what = (
        s.kind,
        &s.url,
        &s.table,
        &s.query,
        &s.columns,
        &s.key,
        &s.watermark,
    );
    let text = serde_json::to_vec(&what).unwrap_or_default();
    blake3::hash(&text).to_hex()[..16].to_owned()
}

/// What a database run reads.
pub struct Reading {
    /// Only the rows past this watermark (none: every row).
    pub since: Option<String>,
    /// The federation's time zone, timestamps are written in.
    pub tz: chrono_tz::Tz,
}

/// The watermark part of a database read of `src` keyed by `key`, whose watermark column `wm`
/// (quoted) reached `reached` now: the `WHERE` clause, the watermark to record, and whether
/// only the rows past `since` are read. The values are the database's own text of the column's
/// maximum; one that is not a number, date or time is refused (it is put in the statement).
fn watermark_filter(
    key: &[String],
    wm: &str,
    (since, reached): (Option<String>, Option<String>),
) -> Result<(String, Option<String>, bool), String> {
    if key.is_empty() {
        return Err("a watermark needs a key: the table's primary-key columns must all be 信息项 of the entry (or set key for a query)".into());
    }
    let plain = |v: &str| {
        !v.is_empty()
            && v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_digit() || " -:.+T".contains(c))
    };
    if let Some(v) = reached.as_ref().filter(|v| !plain(v)) {
        return Err(format!(
            "the watermark column's largest value {v:?} is not a number, date or time; choose a column such as updated_at or a change counter"
        ));
    }
    Ok(match (since.filter(|s| plain(s)), reached) {
        // From the last value itself: rows changed later with that same value (a date, a
        // timestamp of whole seconds) are read again; laying a row over itself is harmless.
        (Some(s), Some(r)) => (
            format!(" WHERE {wm} >= '{s}' AND {wm} <= '{r}'"),
            Some(r),
            true,
        ),
        // The table is empty now: nothing past the last watermark (deletions need a full run).
        (Some(s), None) => (" WHERE 1 = 0".into(), Some(s), true),
        (None, r) => (String::new(), r, false),
    })
}

/// A run under way, as `huitong collect runs` shows it.
#[derive(Clone, Debug)]
pub struct Running {
    /// When it started (ms).
    pub started_at_ms: u64,
    /// What started it.
    pub trigger: Trigger,
    /// Bytes read from the source so far.
    pub bytes: Arc<AtomicU64>,
}

/// Runs collections; one run per resource at a time.
pub struct Collector {
    feeds: Arc<Feeds>,
    net: Client,
    running: Mutex<HashMap<String, Running>>,
}

/// Takes a resource's running mark off when its run ends, however it ends.
struct Mark<'a> {
    collector: &'a Collector,
    code: String,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        self.collector.lock().remove(&self.code);
    }
}

impl Collector {
    /// A collector publishing through `feeds` and gossiping new versions with `net`.
    pub fn new(feeds: Arc<Feeds>, net: Client) -> Self {
        Self {
            feeds,
            net,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> &Arc<NodeState> {
        self.feeds.state()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runs under way.
    pub fn running(&self) -> Vec<(String, Running)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Runs the collection of `code` now and records it; a run that fails is recorded too (and
    /// returned as `Ok` with its error). `Err` is for a run that could not start. `by` is the
    /// person who started it (none for the schedule or the node's own CLI).
    pub async fn run(
        &self,
        code: &str,
        start: Start,
        by: Option<Actor>,
    ) -> Result<Run, CollectError> {
        let Start {
            trigger,
            attempt,
            full,
        } = start;
        let state = self.state().clone();
        let source = state
            .config
            .collect
            .source(code)
            .ok_or_else(|| CollectError::NoSource(code.to_owned()))?
            .clone();
        let bytes = Arc::new(AtomicU64::new(0));
        let started_at_ms = now_ms();
        {
            let mut running = self.lock();
            if running.contains_key(code) {
                return Err(CollectError::Busy(code.to_owned()));
            }
            running.insert(
                code.to_owned(),
                Running {
                    started_at_ms,
                    trigger,
                    bytes: bytes.clone(),
                },
            );
        }
        let _mark = Mark {
            collector: self,
            code: code.to_owned(),
        };
        let file = match source.kind {
            SourceKind::Folder => {
                let picked = folder::pick(&source, std::time::SystemTime::now());
                match picked {
                    Ok(Some(f)) => Some(f),
                    Ok(None) => {
                        return Err(CollectError::NoFile {
                            code: code.to_owned(),
                            path: source.location(),
                            settle_secs: source.settle_secs(),
                        })
                    }
                    Err(e) => {
                        return self.record_failure(
                            code,
                            (started_at_ms, trigger, attempt),
                            e.to_string(),
                        )
                    }
                }
            }
            _ => None,
        };
        let since = if full { None } else { self.watermark(&source) };
        let incremental = since.is_some();
        let outcome = match &file {
            Some(f) => self
                .collect_file(&source, f, &bytes, by)
                .await
                .map(|p| (p, None)),
            None => self.collect(&source, since, &bytes, by).await,
        };
        let mut run = Run {
            source_bytes: bytes.load(Ordering::Relaxed),
            file: file.as_ref().map(|f| f.name.clone()),
            incremental,
            source_print: source.watermark.as_ref().map(|_| source_print(&source)),
            ..Run::failed(code, started_at_ms, trigger, attempt)
        };
        let outcome = outcome.map(|(p, reached)| {
            run.watermark = reached;
            p
        });
        match outcome {
            Ok(Published::New(report, entry)) => {
                self.net.publish(&entry).await;
                run.outcome = Outcome::Published;
                run.version = Some(report.version);
                run.rows = report.rows;
                run.new_bytes = report.new_bytes;
                info!(code, version = report.version, rows = ?report.rows, ms = run.finished_at_ms - started_at_ms, "collected a new version");
            }
            Ok(Published::Unchanged { version }) => {
                run.outcome = Outcome::Unchanged;
                run.version = Some(version);
                info!(
                    code,
                    version, "collected: nothing changed since the latest version"
                );
            }
            Err(CollectError::Stopping) => return Err(CollectError::Stopping),
            Err(e @ (CollectError::UnknownCode(_) | CollectError::Busy(_))) => return Err(e),
            Err(e) => {
                warn!(code, error = %e, "collection run failed; the latest version stays as it was");
                run.error = Some(e.to_string());
            }
        }
        if let Some(f) = &file {
            if let Some(why) = folder::put_away(&source, f, started_at_ms, run.error.as_deref()) {
                run.stuck = true;
                run.error = Some(match run.error.take() {
                    Some(e) => format!("{e}; {why}"),
                    None => why,
                });
            }
        }
        runs::record(&state.store, &run).map_err(|e| CollectError::Record(e.to_string()))?;
        Ok(run)
    }

    /// Records a run that failed before it read anything.
    fn record_failure(
        &self,
        code: &str,
        (started_at_ms, trigger, attempt): (u64, Trigger, u32),
        error: String,
    ) -> Result<Run, CollectError> {
        warn!(code, error = %error, "collection run failed; the latest version stays as it was");
        let run = Run {
            error: Some(error),
            ..Run::failed(code, started_at_ms, trigger, attempt)
        };
        runs::record(&self.state().store, &run).map_err(|e| CollectError::Record(e.to_string()))?;
        Ok(run)
    }

    /// The watermark to read a source past: the one the last successful run reached, when that
    /// run's version is still the latest (else the source is read whole).
    fn watermark(&self, source: &SourceConfig) -> Option<String> {
        source.watermark.as_ref()?;
        let state = self.state();
        let latest =
            crate::dataset::records::version(&state.store, &state.id(), &source.code, None)
                .ok()??
                .version;
        let last = runs::list(&state.store, Some(&source.code), runs::KEPT)
            .ok()?
            .into_iter()
            .find(|r| r.outcome != Outcome::Failed)?;
        if last.version == Some(latest) && last.source_print == Some(source_print(source)) {
            last.watermark
        } else {
            None
        }
    }

    /// The published entry of `code` of this node.
    fn own_entry(&self, code: &str) -> Result<huitong_protocol::catalogue::Entry, CollectError> {
        let state = self.state();
        crate::catalogue::get_by_provider(&state.store, &state.config.node.org_code, code)
            .map_err(|e| CollectError::Source {
                code: code.to_owned(),
                why: e.to_string(),
            })?
            .filter(|r| r.withdrawn.is_none())
            .map(|r| r.entry)
            .ok_or_else(|| CollectError::UnknownCode(code.to_owned()))
    }

    /// Publishes a folder's file (any format `dataset publish` reads).
    async fn collect_file(
        &self,
        source: &SourceConfig,
        file: &folder::Picked,
        bytes: &Arc<AtomicU64>,
        by: Option<Actor>,
    ) -> Result<Published, CollectError> {
        let entry = self.own_entry(&source.code)?;
        let names: Vec<String> = entry.items.iter().map(|i| i.name.clone()).collect();
        if let Some(k) = source.key.iter().find(|k| !names.contains(k)) {
            return Err(CollectError::Source {
                code: source.code.clone(),
                why: format!("key names {k:?}, which is not a 信息项 of the entry"),
            });
        }
        bytes.store(file.bytes, Ordering::Relaxed);
        let handle = folder::open(file).map_err(|why| CollectError::Source {
            code: source.code.clone(),
            why,
        })?;
        let (feeds, code, key, picked) = (
            self.feeds.clone(),
            source.code.clone(),
            source.key.clone(),
            file.clone(),
        );
        let published = tokio::task::spawn_blocking(move || {
            let reader = handle.try_clone().map_err(|source| PublishError::File {
                path: picked.path.display().to_string(),
                source,
            })?;
            let rows = crate::dataset::input::open_file(reader, &picked.path, &names)?;
            let rows: crate::dataset::input::Rows =
                Box::new(folder::Steady::new(rows, handle, picked));
            let layout = publish::Layout {
                key,
                ..Default::default()
            };
            publish::publish_rows_if_changed(&feeds, &code, (rows, &layout), by.as_ref())
        })
        .await;
        match published {
            Ok(p) => Ok(p?),
            Err(e) if e.is_panic() => Err(CollectError::Source {
                code: source.code.clone(),
                why: "the publisher failed unexpectedly (see the node's log)".into(),
            }),
            Err(_) => Err(CollectError::Stopping),
        }
    }

    /// Reads a database or an API into a version; with `since`, only the rows past that
    /// watermark, laid over the latest version. Also the watermark reached, if any.
    async fn collect(
        &self,
        source: &SourceConfig,
        since: Option<String>,
        bytes: &Arc<AtomicU64>,
        by: Option<Actor>,
    ) -> Result<(Published, Option<String>), CollectError> {
        let state = self.state().clone();
        let code = source.code.clone();
        let items = self.own_entry(&code)?.items;
        let password = match source.kind {
            SourceKind::Postgres | SourceKind::Mysql => {
                crate::secrets::source_password(&state.dir, &code)?
            }
            _ => None,
        };
        let headers = match source.kind {
            SourceKind::Http => crate::secrets::source_headers(&state.dir, &code)?,
            _ => Default::default(),
        };
        let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
        // The source's rows go straight from the database to the publisher (one pass, no
        // staging file): the extractor sends CSV text, the publisher reads it on its thread.
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
        let (layout_tx, layout_rx) = tokio::sync::oneshot::channel();
        let sink = stream::Sink::new(tx, layout_tx);
        let feeds = self.feeds.clone();
        let label = format!("the source of {code}");
        let publish_code = code.clone();
        let publisher = tokio::task::spawn_blocking(move || {
            // No layout (an extractor that failed first): the version is published whole.
            let layout = layout_rx.blocking_recv().unwrap_or_default();
            let rows = crate::dataset::input::csv_stream(stream::Reader::new(rx), &label, &names)?;
            publish::publish_rows_if_changed(&feeds, &publish_code, (rows, &layout), by.as_ref())
        });
        let tz = state.timezone();
        let extracted = match source.kind {
            SourceKind::Postgres => {
                let read = Reading { since, tz };
                postgres::extract(source, password.as_ref(), &items, read, (&sink, bytes)).await
            }
            SourceKind::Mysql => {
                let read = Reading { since, tz };
                mysql::extract(source, password.as_ref(), &items, read, (&sink, bytes)).await
            }
            SourceKind::Http => http::extract(source, headers, &items, &sink, bytes)
                .await
                .map(|()| None),
            SourceKind::Folder => Err(CollectError::Source {
                code: code.clone(),
                why: "a folder is read file by file".into(),
            }),
        };
        // Only a complete extraction ends the stream; anything else makes the publisher fail
        // (a table cut short is never published).
        match &extracted {
            Ok(_) => sink.end().await,
            Err(e) => sink.fail(e.to_string()).await,
        }
        let published = publisher.await.map_err(|e| {
            if e.is_panic() {
                CollectError::Source {
                    code: code.clone(),
                    why: "the publisher failed unexpectedly (see the node's log)".into(),
                }
            } else {
                CollectError::Stopping
            }
        })?;
        match (extracted, published) {
            // The publisher stopped first: its error says why.
            (Err(CollectError::Stream(_)), Err(p)) => Err(p.into()),
            (Err(e), _) => Err(e),
            (Ok(reached), p) => Ok((p?, reached)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_filter_reads_past_the_last_value_and_refuses_other_text() {
        let key = ["编号".to_owned()];
        let (filter, reached, over) = watermark_filter(
            &key,
            "\"t\"",
            (
                Some("2026-01-01 08:00:00+08".into()),
                Some("2026-02-01 09:00:00+08".into()),
            ),
        )
        .unwrap();
        assert_eq!(
            filter,
            " WHERE \"t\" >= '2026-01-01 08:00:00+08' AND \"t\" <= '2026-02-01 09:00:00+08'"
        );
        assert!(over && reached.as_deref() == Some("2026-02-01 09:00:00+08"));
        // The first run: everything, and the value reached.
        let (filter, reached, over) =
            watermark_filter(&key, "t", (None, Some("42".into()))).unwrap();
        assert!(filter.is_empty() && !over && reached.as_deref() == Some("42"));
        // A text column's value is never put in the statement.
        let e = watermark_filter(&key, "t", (None, Some("x' OR '1'='1".into()))).unwrap_err();
        assert!(e.contains("not a number, date or time"), "{e}");
        assert!(watermark_filter(&[], "t", (None, None))
            .unwrap_err()
            .contains("needs a key"));
    }
}
