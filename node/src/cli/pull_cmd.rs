//! `huitong pull` (start a pull in the node, or attach to the same one already running, and
//! follow it) and `huitong pulls` (list and cancel the node's pulls).
//!
//! A pull runs in the node, not in this process. On Ctrl-C, SIGTERM or SIGHUP (a closed
//! terminal) `huitong pull` stops watching and says the pull goes on in the node, or cancels it
//! with `--cancel-on-interrupt`; it exits with 128 + the signal number. A `kill -9` leaves the
//! pull running too; running the same command again attaches to it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::dataset_cmd::absolute;
use super::output::{self, bytes, count, Table};
use crate::api;
use crate::client::ApiClient;
use crate::dataset::export::OutFormat;
use crate::transfer::pull::{JobView, Phase, PullRequest, PullSummary};

/// How long `pulls cancel` (and `--cancel-on-interrupt`) waits for the pull to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// How often progress is read.
const POLL: Duration = Duration::from_millis(200);
/// How often progress is read during the first [`FAST_FOR`]: a short pull (a table of 100,000
/// rows takes about 0.3 s in the node) is reported done at most this much after it ends, not
/// up to a whole [`POLL`] later (each read is one local HTTP request).
const FAST_POLL: Duration = Duration::from_millis(20);
/// How long progress is read every [`FAST_POLL`].
const FAST_FOR: Duration = Duration::from_secs(5);

/// `huitong pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Resource code.
    code: String,
    /// Where to write the data.
    #[arg(long)]
    out: PathBuf,
    /// Version (default: the latest).
    #[arg(long)]
    version: Option<u64>,
    /// Only these columns (信息项), comma-separated; only their chunks are transferred.
    #[arg(long, value_delimiter = ',')]
    fields: Option<Vec<String>>,
    /// Output format for tables (default: from the --out extension, else csv).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Provider USCC, when several providers use the code.
    #[arg(long)]
    provider: Option<String>,
    /// Present the grant of this application id (default: this node's own grant, if any).
    #[arg(long)]
    grant: Option<String>,
    /// Present a grant token from this file (received out of band, e.g. from the upper-level
    /// platform) instead of this node's own grants; --fields names the granted columns.
    #[arg(long, conflicts_with = "grant", requires = "fields")]
    token: Option<PathBuf>,
    /// Print a JSON summary at the end (and no progress).
    #[arg(long)]
    json: bool,
    /// On Ctrl-C (or SIGTERM, SIGHUP) cancel the pull in the node instead of leaving it
    /// running there in the background.
    #[arg(long)]
    cancel_on_interrupt: bool,
}

/// Output formats on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum FormatArg {
    /// CSV.
    Csv,
    /// JSON lines.
    Jsonl,
    /// Parquet.
    Parquet,
}

/// `huitong pulls`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PullsArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    cmd: Option<PullsCmd>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `huitong pulls` subcommands.
#[derive(Subcommand, Debug)]
enum PullsCmd {
    /// List the node's pulls: running ones and the last finished ones (the default).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running pull: it stops fetching, its partial output is removed (a table's
    /// verified chunks are kept for a later pull).
    Cancel {
        /// The pull id (`huitong pulls`).
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The signals that end watching a pull: SIGINT (Ctrl-C), SIGTERM, SIGHUP (closed terminal).
struct Interrupts {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Self> {
        let s = |k| signal(k).context("cannot watch for Ctrl-C");
        Ok(Self {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    /// The next signal, as `(name, number)`.
    async fn next(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("Ctrl-C", libc::SIGINT),
            _ = self.term.recv() => ("SIGTERM", libc::SIGTERM),
            _ = self.hup.recv() => ("SIGHUP", libc::SIGHUP),
        }
    }
}

/// A line on stderr that may have no reader any more (a closed terminal): never fails.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Runs `huitong pull`: starts the pull on the node (or attaches to the same pull running
/// there) and follows it until it ends or a signal comes.
pub(super) async fn pull(dir: &Path, args: PullArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(dir)?;
    let out = absolute(&args.out)?;
    if let Some(parent) = out.parent() {
        if !parent.is_dir() {
            bail!(
                "--out {}: the directory {} does not exist",
                args.out.display(),
                parent.display()
            );
        }
    }
    let req = PullRequest {
        code: args.code.clone(),
        provider: args.provider.clone(),
        version: args.version,
        fields: args.fields.clone(),
        out: out.clone(),
        format: format_of(&args),
        grant: args.grant.clone(),
        token: match &args.token {
            Some(p) => Some(read_token(p)?),
            None => None,
        },
        part: Default::default(),
        changes_from: None,
        out_dir_seen: out.parent().and_then(|d| crate::seen::FileId::of(d).ok()),
        started_by: None,
        own_grant_only: false,
    };
    let mut interrupts = Interrupts::new()?;
    let started: api::PullStarted = tokio::select! {
        r = client.post("/pulls", &req) => r?,
        (name, signo) = interrupts.next() => {
            say(&format!("{name}: stopped before the node answered; if it started the pull, `huitong pulls` shows it"));
            std::process::exit(128 + signo);
        }
    };
    let id = started.id;
    if started.attached {
        say(&format!(
            "attached to pull {id} already running into {} (started by an earlier `huitong pull`)",
            out.display()
        ));
        if args.cancel_on_interrupt {
            say(&format!(
                "--cancel-on-interrupt applies to a pull this command starts: Ctrl-C here leaves pull {id} running (`huitong pulls cancel {id}` stops it)"
            ));
        }
    }
    // Only the command that started a pull cancels it on Ctrl-C: another operator's pull goes on.
    let cancel_on_interrupt = args.cancel_on_interrupt && !started.attached;
    let show = !args.json && std::io::stderr().is_terminal();
    let bar = output::progress_bar(show, "{msg:10}", None);
    let path = format!("/pulls/{id}");
    let watching = Instant::now();
    let view = loop {
        let v: JobView = tokio::select! {
            r = client.get(&path, &()) => r?,
            (name, signo) = interrupts.next() => {
                bar.finish_and_clear();
                interrupted(&client, id, name, cancel_on_interrupt).await;
                std::process::exit(128 + signo);
            }
        };
        bar.set_length(v.bytes_total);
        bar.set_position(v.bytes_done);
        bar.set_message(v.phase.as_str());
        if v.phase.finished() {
            break v;
        }
        tokio::select! {
            _ = tokio::time::sleep(if watching.elapsed() < FAST_FOR { FAST_POLL } else { POLL }) => {}
            (name, signo) = interrupts.next() => {
                bar.finish_and_clear();
                interrupted(&client, id, name, cancel_on_interrupt).await;
                std::process::exit(128 + signo);
            }
        }
    };
    bar.finish_and_clear();
    if let Some(e) = view.error {
        if let Some(partial) = view.partial {
            bail!(
                "pull {id} of {} failed: {e}\n(the part already received is kept in {}: run the same pull again to resume, or delete it)",
                args.code,
                partial.display()
            );
        }
        bail!("pull {id} of {} failed: {e}", args.code);
    }
    let Some(s) = view.summary else {
        bail!("the node reported pull {id} as done without a summary");
    };
    if args.json {
        return output::json(&s);
    }
    print_summary(&s)
}

/// A signal came while watching pull `id`: say that it goes on in the node, or cancel it.
async fn interrupted(client: &ApiClient, id: u64, signal: &str, cancel: bool) {
    if !cancel {
        say(&format!(
            "{signal}: stopped watching; pull {id} goes on in the node — `huitong pulls` shows it, `huitong pulls cancel {id}` stops it (run the same pull again to watch it)"
        ));
        return;
    }
    let ended = client
        .get::<JobView, _>(&format!("/pulls/{id}"), &())
        .await
        .ok()
        .filter(|v| v.phase.finished());
    if let Some(v) = ended {
        say(&format!(
            "{signal}: pull {id} had already ended ({})",
            v.phase.as_str()
        ));
        return;
    }
    match cancel_and_wait(client, id).await {
        Ok(v) if v.phase == Phase::Cancelled => say(&format!(
            "{signal}: cancelled pull {id}; {}",
            cancelled_note()
        )),
        Ok(v) => say(&format!(
            "{signal}: pull {id} ended ({}) before it could be cancelled",
            v.phase.as_str()
        )),
        Err(e) => say(&format!(
            "{signal}: could not cancel pull {id} ({e:#}); it may go on in the node — `huitong pulls` shows it"
        )),
    }
}

fn cancelled_note() -> &'static str {
    "its partial output was removed; a table's verified chunks are kept, so pulling it again fetches only the rest"
}

/// Cancels pull `id` and waits (up to [`CANCEL_WAIT`]) until it has stopped.
async fn cancel_and_wait(client: &ApiClient, id: u64) -> anyhow::Result<JobView> {
    let mut v: JobView = client.post(&format!("/pulls/{id}/cancel"), &()).await?;
    let deadline = Instant::now() + CANCEL_WAIT;
    while !v.phase.finished() {
        if Instant::now() > deadline {
            bail!(
                "pull {id} was asked to stop but is still {} after {} s",
                v.phase.as_str(),
                CANCEL_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
        v = client.get(&format!("/pulls/{id}"), &()).await?;
    }
    Ok(v)
}

/// Runs `huitong pulls [list|cancel ID]`.
pub(super) async fn pulls(dir: &Path, args: PullsArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(dir)?;
    match args.cmd {
        None => list(&client, args.json).await,
        Some(PullsCmd::List { json }) => list(&client, json || args.json).await,
        Some(PullsCmd::Cancel { id, json }) => {
            let v = cancel_and_wait(&client, id).await?;
            if json || args.json {
                return output::json(&v);
            }
            match v.phase {
                Phase::Cancelled => {
                    println!(
                        "cancelled pull {id} ({} → {}): {}",
                        v.code,
                        v.out.display(),
                        cancelled_note()
                    );
                    Ok(())
                }
                other => bail!(
                    "pull {id} ended ({}) before it could be cancelled",
                    other.as_str()
                ),
            }
        }
    }
}

async fn list(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let jobs: Vec<JobView> = client.get("/pulls", &()).await?;
    if json {
        return output::json(&jobs);
    }
    let mut o = std::io::stdout().lock();
    if jobs.is_empty() {
        writeln!(o, "(no pulls since the node started)")?;
        return Ok(());
    }
    let mut t = Table::new().right_align(&[0, 6]);
    t.row(
        [
            "ID", "CODE", "VERSION", "OUTPUT", "PHASE", "PROGRESS", "ELAPSED",
        ]
        .map(String::from),
    );
    for j in &jobs {
        t.row([
            j.id.to_string(),
            j.code.clone(),
            j.version
                .map_or_else(|| "latest".into(), |v| format!("v{v}")),
            j.out.display().to_string(),
            j.phase.as_str().to_owned(),
            progress(j),
            format!("{:.1} s", j.elapsed_ms as f64 / 1000.0),
        ]);
    }
    t.write(&mut o)?;
    Ok(())
}

/// `45% of 1.0 GiB` (or what is known so far).
fn progress(j: &JobView) -> String {
    if j.bytes_total == 0 {
        return "-".into();
    }
    format!(
        "{}% of {}",
        j.bytes_done.saturating_mul(100) / j.bytes_total,
        bytes(j.bytes_total)
    )
}

/// Reads a grant token file (raw bytes or base64 text, at most 64 KiB) as base64.
fn read_token(path: &Path) -> anyhow::Result<String> {
    use base64::Engine as _;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 64 * 1024 {
        bail!(
            "{} is larger than 64 KiB: not a grant token",
            path.display()
        );
    }
    let bytes = std::fs::read(path)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(match std::str::from_utf8(&bytes).ok().map(str::trim) {
        Some(t) if b64.decode(t).is_ok() => t.to_owned(),
        _ => b64.encode(&bytes),
    })
}

fn format_of(args: &PullArgs) -> OutFormat {
    match args.format {
        Some(FormatArg::Csv) => OutFormat::Csv,
        Some(FormatArg::Jsonl) => OutFormat::Jsonl,
        Some(FormatArg::Parquet) => OutFormat::Parquet,
        None => match args.out.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("ndjson") => OutFormat::Jsonl,
            Some("parquet") => OutFormat::Parquet,
            _ => OutFormat::Csv,
        },
    }
}

fn print_summary(s: &PullSummary) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    let secs = (s.elapsed_ms as f64 / 1000.0).max(0.001);
    let route = match s.data_plane.as_str() {
        "" => s.route.clone(),
        plane => format!("{}, {plane}", s.route),
    };
    writeln!(
        o,
        "pulled {} v{} from {} ({route}) → {}",
        s.code,
        s.version,
        s.provider,
        s.out.display()
    )?;
    if let Some(rows) = s.rows {
        writeln!(
            o,
            "  {}, columns: {}",
            count(rows, "row", "rows"),
            s.fields.join(", ")
        )?;
    }
    if !s.withheld.is_empty() {
        writeln!(
            o,
            "  left out (neither 无条件共享 nor granted to this node): {}",
            s.withheld.join(", ")
        )?;
    }
    writeln!(
        o,
        "  {} fetched in {}, {} reused, {} written, {:.1} s ({}/s)",
        bytes(s.bytes_fetched),
        count(s.chunks_fetched, "chunk", "chunks"),
        bytes(s.bytes_reused),
        bytes(s.bytes_written),
        secs,
        bytes((s.bytes_fetched as f64 / secs) as u64)
    )?;
    match (&s.receipt, &s.receipt_error) {
        (Some(id), _) => writeln!(
            o,
            "  receipt {id}: signed by the provider, countersigned here, sent to the hub's audit log"
        )?,
        (None, Some(e)) => writeln!(o, "  no receipt: {e}")?,
        (None, None) => {}
    }
    Ok(())
}
