//! The pull jobs of this node ([`Pulls`]): one job per output file, each with its progress for
//! `huitong pull`'s bar and `huitong pulls`, a cancellation token, and its result once finished.
//!
//! A job belongs to the node, not to the CLI that started it: a `huitong pull` that is killed
//! leaves its job running, and the same pull started again attaches to it ([`Pulls::start`]). A
//! different pull into the same output while one runs is refused, naming the running job.
//!
//! Invariants: at most one unfinished job per canonical output path (checked and inserted under
//! one lock); at most [`MAX_RUNNING`] unfinished jobs; at most [`MAX_FINISHED`] finished jobs
//! kept (the oldest forgotten first); jobs are forgotten at restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{PullError, PullRequest, PullSummary};

/// Unfinished pulls a node runs at once (each uses up to 8 streams).
pub const MAX_RUNNING: usize = 16;
/// Finished pulls kept for `huitong pulls` (and a late `huitong pull` to read its summary).
pub const MAX_FINISHED: usize = 32;

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
    /// Cancelled (`huitong pulls cancel`).
    Cancelled,
}

impl Phase {
    /// Whether the pull has ended.
    pub fn finished(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Cancelled)
    }

    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Verifying => "verifying",
            Phase::Fetching => "fetching",
            Phase::Writing => "writing",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// One pull: what it was asked, its progress, and its result once finished.
#[derive(Debug)]
pub struct Job {
    pub(super) id: u64,
    pub(super) req: PullRequest,
    /// The canonical output path (the key of [`Pulls`]).
    pub(super) out: PathBuf,
    pub(super) started: Instant,
    started_at_ms: u64,
    /// Cancelled by `huitong pulls cancel` (or a CLI's `--cancel-on-interrupt`).
    pub(super) cancel: CancellationToken,
    phase: Mutex<Phase>,
    /// The version being pulled, once the manifest is known (0 before).
    pub(super) version: AtomicU64,
    /// The partial output of a file pull, while it may exist.
    pub(super) partial: Mutex<Option<PathBuf>>,
    pub(super) bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    pub(super) bytes_fetched: Arc<AtomicU64>,
    pub(super) chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    attached: AtomicU64,
    ended: Mutex<Option<Instant>>,
    result: Mutex<Option<Result<PullSummary, PullError>>>,
}

/// A snapshot of a [`Job`] for the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Pull id.
    pub id: u64,
    /// Resource code.
    #[serde(default)]
    pub code: String,
    /// The version being pulled, once known (else the one asked for, if any).
    #[serde(default)]
    pub version: Option<u64>,
    /// The output file.
    #[serde(default)]
    pub out: PathBuf,
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
    /// How many later starts of the same pull attached to it.
    #[serde(default)]
    pub attached: u64,
    /// When it started (ms since the epoch).
    #[serde(default)]
    pub started_at_ms: u64,
    /// Time from the start to now, or to the end once finished.
    pub elapsed_ms: u64,
    /// The summary once done.
    pub summary: Option<PullSummary>,
    /// The error once failed.
    pub error: Option<String>,
    /// The partial output kept for a later pull to resume from, once failed.
    #[serde(default)]
    pub partial: Option<PathBuf>,
    /// The account of the person who started it (`None`: the node's admin token).
    #[serde(default)]
    pub started_by: Option<String>,
}

impl Job {
    fn new(id: u64, req: PullRequest, out: PathBuf) -> Self {
        Self {
            id,
            req,
            out,
            started: Instant::now(),
            started_at_ms: crate::state::now_ms(),
            cancel: CancellationToken::new(),
            phase: Mutex::new(Phase::Connecting),
            version: AtomicU64::new(0),
            partial: Mutex::new(None),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_fetched: Arc::new(AtomicU64::new(0)),
            chunks_total: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            attached: AtomicU64::new(0),
            ended: Mutex::new(None),
            result: Mutex::new(None),
        }
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    pub(super) fn set_partial(&self, p: Option<PathBuf>) {
        *self.partial.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Records the result and the final phase.
    pub(super) fn end(&self, result: Result<PullSummary, PullError>) {
        let phase = match &result {
            Ok(_) => Phase::Done,
            Err(PullError::Cancelled) => Phase::Cancelled,
            Err(_) => Phase::Failed,
        };
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.set_phase(phase);
    }

    fn view(&self) -> JobView {
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let phase = self.phase();
        let ended = *self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.version.load(Ordering::Relaxed);
        let partial = self
            .partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|p| phase == Phase::Failed && p.exists());
        JobView {
            id: self.id,
            code: self.req.code.clone(),
            version: (version > 0).then_some(version).or(self.req.version),
            out: self.out.clone(),
            phase,
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            chunks_total: self.chunks_total.load(Ordering::Relaxed),
            chunks_done: self.chunks_done.load(Ordering::Relaxed),
            attached: self.attached.load(Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
            elapsed_ms: ended
                .map_or_else(|| self.started.elapsed(), |e| e - self.started)
                .as_millis() as u64,
            summary: result.as_ref().and_then(|r| r.as_ref().ok().cloned()),
            error: result.and_then(|r| r.err()).map(|e| e.to_string()),
            partial,
            started_by: self.req.started_by.as_ref().map(|a| a.account.clone()),
        }
    }

    /// Counts the job's progress from nothing again (a pull that runs once more); what was
    /// fetched from the provider stays counted.
    pub(super) fn restart_progress(&self) {
        self.bytes_done.store(0, Ordering::Relaxed);
        self.chunks_done.store(0, Ordering::Relaxed);
    }

    pub(super) fn add_done(&self, bytes: u64, fetched: bool) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.chunks_done.fetch_add(1, Ordering::Relaxed);
        if fetched {
            self.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Whether `req` asks for what this job pulls (then a second start attaches to it).
    fn same_as(&self, req: &PullRequest) -> bool {
        let a = &self.req;
        let version = self.version.load(Ordering::Relaxed);
        a.code == req.code
            && a.provider == req.provider
            && (a.version == req.version || (version > 0 && req.version == Some(version)))
            && a.fields == req.fields
            && a.format == req.format
            && a.grant == req.grant
            && a.token == req.token
    }
}

/// A pull as a person reads it: `CODE vN` (or `latest`), its columns, format and grant.
fn describe(req: &PullRequest, version: Option<u64>) -> String {
    let mut s = format!(
        "{} {}",
        req.code,
        version.map_or_else(|| "latest".to_owned(), |v| format!("v{v}"))
    );
    if let Some(p) = &req.provider {
        s += &format!(" of {p}");
    }
    if let Some(f) = &req.fields {
        s += &format!(", fields {}", f.join(","));
    }
    s += &format!(", {}", req.format.as_str());
    if let Some(g) = &req.grant {
        s += &format!(", grant {g}");
    }
    if req.token.is_some() {
        s += ", a grant token";
    }
    s
}

/// Why a pull was not started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Another pull is writing the same output.
    #[error("pull {id} ({running}) is already writing {out}; this pull asks for {asked}. Wait for pull {id} to end (`huitong pulls`), cancel it (`huitong pulls cancel {id}`), or write to another --out")]
    Busy {
        /// The running pull.
        id: u64,
        /// What it pulls.
        running: String,
        /// What this one asked for.
        asked: String,
        /// The output.
        out: String,
    },
    /// Too many pulls at once.
    #[error("{MAX_RUNNING} pulls are running on this node; wait for one to end or cancel one (`huitong pulls`, `huitong pulls cancel ID`)")]
    TooMany,
    /// The output path is not usable.
    #[error("--out {out}: {reason}")]
    Output {
        /// The path given.
        out: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where `out` really is: its directory resolved (symlinks, `..`), its file name kept.
pub fn canonical_out(out: &Path) -> Result<PathBuf, StartError> {
    let bad = |reason: &str| StartError::Output {
        out: out.display().to_string(),
        reason: reason.to_owned(),
    };
    if !out.is_absolute() {
        return Err(bad("must be an absolute path (the CLI makes it one)"));
    }
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else {
        return Err(bad("names no file"));
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| StartError::Output {
        out: out.display().to_string(),
        reason: format!("the directory {} cannot be used: {e}", dir.display()),
    })?;
    Ok(dir.join(name))
}

/// What asking a pull to stop did.
#[derive(Debug)]
pub enum Cancel {
    /// It is stopping.
    Stopping(JobView),
    /// It had ended already.
    Ended(JobView),
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<u64, Arc<Job>>,
    /// Unfinished jobs by canonical output path.
    running: HashMap<PathBuf, u64>,
}

/// The pulls of this node.
pub struct Pulls {
    /// The last id handed out.
    next: AtomicU64,
    inner: Mutex<Inner>,
}

/// Unix time of 2026-01-01T00:00:00Z, in seconds: pull ids count from then.
const IDS_FROM_SECS: u64 = 1_767_225_600;

/// Ids per second of a process's start time: a process starting later hands out ids above
/// every id of one that started at least a second before it, unless that one started this
/// many pulls.
const IDS_PER_SECOND: u64 = 1_000;

impl Default for Pulls {
    /// Ids start from the process's start time (seconds since 2026 × [`IDS_PER_SECOND`]), so
    /// an id held from before a restart (`huitong pulls cancel N` from an old listing, a
    /// script following a pull) does not name a pull of the new process.
    fn default() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::started_at(secs)
    }
}

impl Pulls {
    /// The pulls of a process started at `secs` (Unix time).
    fn started_at(secs: u64) -> Self {
        Self {
            next: AtomicU64::new(secs.saturating_sub(IDS_FROM_SECS) * IDS_PER_SECOND),
            inner: Mutex::default(),
        }
    }
}

impl Pulls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new job for `req`, or the unfinished one already writing the same output with the
    /// same request (`(job, true)`: attached).
    pub(super) fn start(&self, req: PullRequest) -> Result<(Arc<Job>, bool), StartError> {
        let out = canonical_out(&req.out)?;
        if let Some(dir) = req.out.parent() {
            crate::seen::same_as_cli(dir, req.out_dir_seen).map_err(|reason| {
                StartError::Output {
                    out: req.out.display().to_string(),
                    reason,
                }
            })?;
        }
        let mut inner = self.lock();
        let current = inner
            .running
            .get(&out)
            .and_then(|id| inner.jobs.get(id))
            .filter(|j| !j.phase().finished())
            .cloned();
        if let Some(job) = current {
            if job.same_as(&req) {
                job.attached.fetch_add(1, Ordering::Relaxed);
                return Ok((job, true));
            }
            let version = job.version.load(Ordering::Relaxed);
            return Err(StartError::Busy {
                id: job.id,
                running: describe(
                    &job.req,
                    (version > 0).then_some(version).or(job.req.version),
                ),
                asked: describe(&req, req.version),
                out: out.display().to_string(),
            });
        }
        let running = inner
            .running
            .values()
            .filter(|id| inner.jobs.get(id).is_some_and(|j| !j.phase().finished()))
            .count();
        if running >= MAX_RUNNING {
            return Err(StartError::TooMany);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job::new(id, req, out.clone()));
        inner.jobs.insert(id, job.clone());
        inner.running.insert(out, id);
        Ok((job, false))
    }

    /// A job has ended: its output is free again; the oldest finished jobs beyond
    /// [`MAX_FINISHED`] are forgotten.
    pub(super) fn ended(&self, job: &Job) {
        let mut inner = self.lock();
        if inner.running.get(&job.out) == Some(&job.id) {
            inner.running.remove(&job.out);
        }
        let finished: Vec<u64> = inner
            .jobs
            .iter()
            .filter(|(_, j)| j.phase().finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(MAX_FINISHED))
        {
            inner.jobs.remove(id);
        }
    }

    /// Progress of a pull.
    pub fn view(&self, id: u64) -> Option<JobView> {
        self.lock().jobs.get(&id).map(|j| j.view())
    }

    /// Every pull kept, oldest first.
    pub fn list(&self) -> Vec<JobView> {
        self.lock().jobs.values().map(|j| j.view()).collect()
    }

    /// Asks a pull to stop (it ends shortly after, as `cancelled`). `None`: no such pull.
    pub fn cancel(&self, id: u64) -> Option<Cancel> {
        let job = self.lock().jobs.get(&id).cloned()?;
        if job.phase().finished() {
            return Some(Cancel::Ended(job.view()));
        }
        job.cancel.cancel();
        Some(Cancel::Stopping(job.view()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::export::OutFormat;

    fn req(dir: &Path, code: &str, name: &str) -> PullRequest {
        PullRequest {
            code: code.into(),
            provider: None,
            version: None,
            fields: None,
            out: dir.join(name),
            format: OutFormat::Csv,
            grant: None,
            token: None,
            part: Default::default(),
            changes_from: None,
            out_dir_seen: None,
            started_by: None,
            own_grant_only: false,
        }
    }

    #[test]
    fn one_job_per_output() {
        let dir = tempfile::tempdir().unwrap();
        let pulls = Pulls::default();
        let (a, attached) = pulls
            .start(req(dir.path(), "301001/000001", "o.csv"))
            .unwrap();
        assert!(!attached);
        // The same pull attaches, also through another spelling of the directory.
        let again = req(
            &dir.path().join(".").join("x").join(".."),
            "301001/000001",
            "o.csv",
        );
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let (b, attached) = pulls.start(again).unwrap();
        assert!(attached && b.id == a.id);
        // Another pull into the same output is refused, naming the running one.
        let e = pulls
            .start(req(dir.path(), "301001/000002", "o.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("pull {}", a.id)) && e.contains("huitong pulls cancel"),
            "{e}"
        );
        // Another output is another job.
        let (c, attached) = pulls
            .start(req(dir.path(), "301001/000002", "p.csv"))
            .unwrap();
        assert!(!attached && c.id != a.id);
        // Once ended, the output is free: a new job starts.
        a.end(Err(PullError::Cancelled));
        pulls.ended(&a);
        let (d, attached) = pulls
            .start(req(dir.path(), "301001/000002", "o.csv"))
            .unwrap();
        assert!(!attached && d.id != a.id);
        assert_eq!(pulls.view(a.id).map(|v| v.phase), Some(Phase::Cancelled));
        assert_eq!(pulls.list().len(), 3);
    }

    /// Review 10, L1: ids do not repeat across a restart (they used to start at 1 each time).
    #[test]
    fn ids_of_a_restarted_node_are_new() {
        let dir = tempfile::tempdir().unwrap();
        let t = IDS_FROM_SECS + 29_000_000;
        let before = Pulls::started_at(t);
        let ids: Vec<u64> = (0..IDS_PER_SECOND - 1)
            .map(|i| {
                let (job, _) = before
                    .start(req(dir.path(), "301001/000001", &format!("{i}")))
                    .unwrap();
                job.end(Err(PullError::Cancelled));
                before.ended(&job);
                job.id
            })
            .collect();
        let after = Pulls::started_at(t + 1);
        let (job, _) = after
            .start(req(dir.path(), "301001/000001", "o.csv"))
            .unwrap();
        assert!(
            ids.iter().all(|&id| id > 0 && id < job.id),
            "{} vs {ids:?}",
            job.id
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
    }

    #[test]
    fn bounded() {
        let dir = tempfile::tempdir().unwrap();
        let pulls = Pulls::default();
        let jobs: Vec<_> = (0..MAX_RUNNING)
            .map(|i| {
                pulls
                    .start(req(dir.path(), "301001/000001", &format!("{i}")))
                    .unwrap()
                    .0
            })
            .collect();
        assert!(matches!(
            pulls.start(req(dir.path(), "301001/000001", "more")),
            Err(StartError::TooMany)
        ));
        for j in &jobs {
            j.end(Err(PullError::Local("x".into())));
            pulls.ended(j);
        }
        for i in 0..MAX_FINISHED {
            let (j, _) = pulls
                .start(req(dir.path(), "301001/000001", &format!("f{i}")))
                .unwrap();
            j.end(Err(PullError::Local("x".into())));
            pulls.ended(&j);
        }
        assert_eq!(
            pulls.list().len(),
            MAX_FINISHED,
            "the oldest finished are forgotten"
        );
        assert!(pulls.view(jobs[0].id).is_none());
    }
}
