//! The run history of collections: one record per run (what started it, how it ended, the
//! version it made, rows, bytes, time, the error), in the store's `collect_runs` column family,
//! `code ‖ 0x00 ‖ started ms(8, big-endian)` → CBOR [`Run`]. At most [`KEPT`] runs are kept per
//! resource (the oldest go first). Not a view of the feeds: a rebuild of the views leaves it.
//!
//! Layering: a leaf over the store.

use huitong_protocol::codec;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, CF_COLLECT_RUNS};

/// Runs kept per resource.
pub const KEPT: usize = 1000;

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `huitong collect run` or the portal.
    Manual,
    /// The source's schedule.
    Schedule,
    /// A retry after a failed scheduled run.
    Retry,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new version was published.
    Published,
    /// The data is the latest version's: nothing was published.
    Unchanged,
    /// The run failed; the latest version stays as it was.
    Failed,
}

/// One run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The resource code.
    pub code: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: u64,
    /// When it ended (ms since the epoch).
    pub finished_at_ms: u64,
    /// What started it.
    pub trigger: Trigger,
    /// 0 for the first try, then the retry's number.
    #[serde(default)]
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The version it published (`published`), or the latest one (`unchanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Rows of the new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes read from the source (as CSV text).
    pub source_bytes: u64,
    /// Bytes of chunks the new version added to the store.
    pub new_bytes: u64,
    /// Why it failed, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The file it took (a folder source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The source's watermark the run reached (a source read by a watermark column): the next
    /// run reads the rows past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Whether it read only the rows past the last run's watermark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// The fingerprint of the source's settings the watermark was reached with: another
    /// table, column or query reads the whole source again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_print: Option<String>,
    /// A folder's file could not be put away (it would be taken again); not stored.
    #[serde(skip)]
    pub stuck: bool,
}

impl Run {
    /// A run that failed (until its outcome is set) and has read nothing yet; ends now.
    pub fn failed(code: &str, started_at_ms: u64, trigger: Trigger, attempt: u32) -> Self {
        Self {
            code: code.to_owned(),
            started_at_ms,
            finished_at_ms: crate::clock::now_ms(),
            trigger,
            attempt,
            outcome: Outcome::Failed,
            version: None,
            rows: None,
            source_bytes: 0,
            new_bytes: 0,
            error: None,
            file: None,
            watermark: None,
            incremental: false,
            source_print: None,
            stuck: false,
        }
    }
}

/// How a run is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// What started it.
    pub trigger: Trigger,
    /// 0 for the first try, then the retry's number.
    pub attempt: u32,
    /// Read the whole source even when it has a watermark (deletions are seen).
    pub full: bool,
}

impl Start {
    /// A first try by `trigger`, incremental where the source allows.
    pub fn by(trigger: Trigger) -> Self {
        Self {
            trigger,
            attempt: 0,
            full: false,
        }
    }
}

/// The longest error text a run record keeps.
pub const MAX_ERROR: usize = 4096;

/// Cuts `text` to at most `max` bytes (at a character boundary), marking the cut.
fn cap(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
}

/// The largest run record read back.
const MAX_RECORD: usize = 64 * 1024;

fn prefix(code: &str) -> Vec<u8> {
    let mut k = code.as_bytes().to_vec();
    k.push(0);
    k
}

fn key(code: &str, started_at_ms: u64) -> Vec<u8> {
    let mut k = prefix(code);
    k.extend_from_slice(&started_at_ms.to_be_bytes());
    k
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf: CF_COLLECT_RUNS,
        detail: detail.to_string(),
    }
}

/// Records `run` (durably) and drops the oldest runs of its resource beyond [`KEPT`].
pub fn record(store: &Store, run: &Run) -> Result<(), StoreError> {
    // An error's text can come from the source (a value, a header): kept short, so every
    // record reads back (and the history and the alarm keep working).
    let mut run = run.clone();
    if let Some(e) = &mut run.error {
        cap(e, MAX_ERROR);
    }
    let run = &run;
    let cf = store.cf(CF_COLLECT_RUNS);
    let w = store.writer();
    let mut batch = WriteBatch::default();
    batch.put_cf(cf, key(&run.code, run.started_at_ms), codec::encode(run));
    let p = prefix(&run.code);
    let old: Vec<Box<[u8]>> = store
        .db()
        .iterator_cf(
            cf,
            IteratorMode::From(&key(&run.code, u64::MAX), Direction::Reverse),
        )
        .map_while(|kv| kv.ok().filter(|(k, _)| k.starts_with(&p)).map(|(k, _)| k))
        .skip(KEPT.saturating_sub(1))
        .collect();
    for k in old {
        batch.delete_cf(cf, k);
    }
    store.commit(&w, batch, true)
}

/// The runs of `code` (every resource when `None`), newest first, at most `limit`.
pub fn list(store: &Store, code: Option<&str>, limit: usize) -> Result<Vec<Run>, StoreError> {
    let cf = store.cf(CF_COLLECT_RUNS);
    let mut out = Vec::new();
    let iter = match code {
        Some(c) => store.db().iterator_cf(
            cf,
            IteratorMode::From(&key(c, u64::MAX), Direction::Reverse),
        ),
        None => store.db().iterator_cf(cf, IteratorMode::End),
    };
    let p = code.map(prefix);
    for kv in iter {
        let (k, v) = kv?;
        if p.as_ref().is_some_and(|p| !k.starts_with(p)) {
            break;
        }
        out.push(codec::decode::<Run>(&v, MAX_RECORD).map_err(corrupt)?);
    }
    if code.is_none() {
        // Keys sort by code first: order all of them by time.
        out.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
    }
    out.truncate(limit);
    Ok(out)
}

/// Failed runs of `code` in a row, counted from the newest (at most `up_to`).
pub fn failures_in_a_row(store: &Store, code: &str, up_to: usize) -> Result<usize, StoreError> {
    Ok(list(store, Some(code), up_to)?
        .iter()
        .take_while(|r| r.outcome == Outcome::Failed)
        .count())
}
