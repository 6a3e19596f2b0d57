//! What the collection API answers and the CLI prints: a run request, the runs (with those
//! under way) and the sources. Never a password.
//!
//! Layering: a leaf of [`crate::collect`].

use serde::{Deserialize, Serialize};

use super::runs::{Run, Trigger};

/// `POST /api/v1/collect/run`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRequest {
    /// The resource code.
    pub code: String,
    /// Read the whole source even when it has a watermark (deletions are seen).
    #[serde(default)]
    pub full: bool,
}

/// A run under way.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningView {
    /// The resource code.
    pub code: String,
    /// When it started (ms).
    pub started_at_ms: u64,
    /// What started it.
    pub trigger: Trigger,
    /// Bytes read from the source so far.
    pub source_bytes: u64,
}

/// `GET /api/v1/collect/runs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunsView {
    /// Runs under way.
    pub running: Vec<RunningView>,
    /// Finished runs, newest first.
    pub runs: Vec<Run>,
}

/// One source, as `huitong collect sources` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceView {
    /// The resource code.
    pub code: String,
    /// `postgres`, `mysql`, `folder` or `http`.
    pub kind: huitong_config::SourceKind,
    /// The database (`postgres://user@host:port/db`; the password is in the secrets file), the
    /// folder or the API's first page.
    pub url: String,
    /// The table read, if a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Whether a query is read instead.
    pub query: bool,
    /// The schedule as configured.
    pub schedule: String,
    /// The cron expression it comes to (none: by hand only, or the entry is not published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The next scheduled start (ms), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<u64>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Run>,
    /// Failed runs in a row, up to the alarm threshold.
    pub failures_in_a_row: usize,
    /// Whether the failures reached `[collect] alarm_after`.
    pub alarm: bool,
}
