//! A pull's progress, for `huitong pull`'s bar and the API: its phase, bytes and chunks, and
//! its result once finished; [`Pulls`] keeps every pull of this node by id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{PullError, PullSummary};

/// Phases of a pull, for progress display.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Finding and dialling the provider, fetching the manifest.
    Connecting,
    /// Re-verifying chunks already held.
    Verifying,
    /// Fetching chunks.
    Fetching,
    /// Writing the output.
    Writing,
    /// Finished.
    Done,
    /// Failed.
    Failed,
}

/// Progress of one pull.
#[derive(Debug)]
pub struct Job {
    pub(super) started: Instant,
    phase: Mutex<Phase>,
    pub(super) bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    pub(super) bytes_fetched: AtomicU64,
    pub(super) chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    pub(super) result: Mutex<Option<Result<PullSummary, PullError>>>,
}

/// A snapshot of a [`Job`] for the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Pull id.
    pub id: u64,
    /// Phase.
    pub phase: Phase,
    /// Bytes the output needs.
    pub bytes_total: u64,
    /// Bytes held and verified so far.
    pub bytes_done: u64,
    /// Bytes fetched so far.
    pub bytes_fetched: u64,
    /// Chunks the output needs.
    pub chunks_total: u64,
    /// Chunks held so far.
    pub chunks_done: u64,
    /// Time since the start.
    pub elapsed_ms: u64,
    /// The summary once done.
    pub summary: Option<PullSummary>,
    /// The error once failed.
    pub error: Option<String>,
}

impl Job {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: Mutex::new(Phase::Connecting),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            chunks_total: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            result: Mutex::new(None),
        }
    }

    pub(super) fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    fn view(&self, id: u64) -> JobView {
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        JobView {
            id,
            phase: *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            chunks_total: self.chunks_total.load(Ordering::Relaxed),
            chunks_done: self.chunks_done.load(Ordering::Relaxed),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            summary: result.as_ref().and_then(|r| r.as_ref().ok().cloned()),
            error: result.and_then(|r| r.err()).map(|e| e.to_string()),
        }
    }

    pub(super) fn add_done(&self, bytes: u64, fetched: bool) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
        if fetched {
            self.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// The pulls of this node (finished ones are kept for `huitong pull` to read their summary).
#[derive(Default)]
pub struct Pulls {
    next: AtomicU64,
    jobs: Mutex<std::collections::HashMap<u64, Arc<Job>>>,
}

impl Pulls {
    pub(super) fn add(&self) -> (u64, Arc<Job>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job::new());
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job.clone());
        (id, job)
    }

    /// Progress of a pull.
    pub fn view(&self, id: u64) -> Option<JobView> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(&id).map(|j| j.view(id))
    }
}
