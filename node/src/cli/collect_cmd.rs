//! `huitong collect run|runs|sources`: collection from the department's databases (采集).

use std::io::Write as _;
use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, bytes, time_ms, Table};
use crate::client::ApiClient;
use crate::collect::runs::{Outcome, Run};
use crate::collect::views::{RunRequest, RunsView, SourceView};

/// Collection commands.
#[derive(Subcommand, Debug)]
pub enum CollectCmd {
    /// Collect a resource from its source now: a new version when the data changed, none when
    /// it did not. Exits non-zero when the run fails (the latest version stays as it was).
    Run {
        /// Resource code of a source in `[[collect.sources]]`.
        code: String,
        /// Read the whole source even when it has a watermark, so deleted rows are seen.
        #[arg(long)]
        full: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The run history, newest first, and the runs under way.
    Runs {
        /// Only this resource's runs.
        code: Option<String>,
        /// How many runs (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The sources: database, schedule, next start, last run, alarms.
    Sources {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn outcome(r: &Run) -> String {
    match r.outcome {
        Outcome::Published if r.incremental => format!(
            "version {} (rows past the watermark)",
            r.version.unwrap_or_default()
        ),
        Outcome::Published => format!("version {}", r.version.unwrap_or_default()),
        Outcome::Unchanged => format!("unchanged (v{})", r.version.unwrap_or_default()),
        Outcome::Failed => "FAILED".into(),
    }
}

fn seconds(r: &Run) -> String {
    format!(
        "{:.1}",
        r.finished_at_ms.saturating_sub(r.started_at_ms) as f64 / 1000.0
    )
}

/// Runs a collection command.
pub(super) async fn run(dir: &Path, cmd: CollectCmd) -> anyhow::Result<()> {
    let client = ApiClient::new(dir)?;
    let mut o = std::io::stdout().lock();
    match cmd {
        CollectCmd::Run { code, full, json } => {
            let r: Run = client
                .post("/collect/run", &RunRequest { code, full })
                .await?;
            if json {
                output::json(&r)?;
            } else {
                match r.outcome {
                    Outcome::Published => writeln!(
                        o,
                        "collected {}: published version {} ({} rows, {} read, {} new) in {} s",
                        r.code,
                        r.version.unwrap_or_default(),
                        r.rows.unwrap_or_default(),
                        bytes(r.source_bytes),
                        bytes(r.new_bytes),
                        seconds(&r)
                    )?,
                    Outcome::Unchanged => writeln!(
                        o,
                        "collected {}: nothing changed; version {} stays the latest ({} s)",
                        r.code,
                        r.version.unwrap_or_default(),
                        seconds(&r)
                    )?,
                    Outcome::Failed => {}
                }
            }
            if r.outcome == Outcome::Failed {
                bail!(
                    "collecting {} failed: {}; the latest version stays as it was",
                    r.code,
                    r.error.as_deref().unwrap_or("no reason given")
                );
            }
        }
        CollectCmd::Runs { code, limit, json } => {
            #[derive(Serialize)]
            struct Q {
                #[serde(skip_serializing_if = "Option::is_none")]
                code: Option<String>,
                limit: usize,
            }
            let v: RunsView = client.get("/collect/runs", &Q { code, limit }).await?;
            if json {
                return output::json(&v);
            }
            for r in &v.running {
                writeln!(
                    o,
                    "running: {} since {} ({} read so far)",
                    r.code,
                    time_ms(r.started_at_ms),
                    bytes(r.source_bytes)
                )?;
            }
            if v.runs.is_empty() {
                writeln!(
                    o,
                    "no finished runs; start one with `huitong collect run CODE`"
                )?;
                return Ok(());
            }
            let mut t = Table::new().right_align(&[4, 5, 6]);
            t.row([
                "started", "resource", "trigger", "outcome", "rows", "read", "s", "error",
            ]);
            for r in &v.runs {
                t.row([
                    time_ms(r.started_at_ms),
                    r.code.clone(),
                    format!("{:?}", r.trigger).to_lowercase(),
                    outcome(r),
                    r.rows.map(|n| n.to_string()).unwrap_or_default(),
                    bytes(r.source_bytes),
                    seconds(r),
                    r.error.clone().unwrap_or_default(),
                ]);
            }
            t.write(&mut o)?;
        }
        CollectCmd::Sources { json } => {
            let v: Vec<SourceView> = client.get("/collect/sources", &()).await?;
            if json {
                return output::json(&v);
            }
            if v.is_empty() {
                writeln!(
                    o,
                    "no sources; add [[collect.sources]] to huitong.toml (see the operator guide)"
                )?;
                return Ok(());
            }
            let mut t = Table::new();
            t.row([
                "resource",
                "source",
                "reads",
                "schedule",
                "next start",
                "last run",
            ]);
            for s in &v {
                let last = match &s.last {
                    Some(r) if s.alarm => format!(
                        "{} — ALARM: {} failed in a row",
                        outcome(r),
                        s.failures_in_a_row
                    ),
                    Some(r) => format!("{} at {}", outcome(r), time_ms(r.started_at_ms)),
                    None => "never".into(),
                };
                t.row([
                    s.code.clone(),
                    s.url.clone(),
                    match (s.kind, &s.table) {
                        (huitong_config::SourceKind::Folder, _) => "(files)".into(),
                        (huitong_config::SourceKind::Http, _) => "(pages)".into(),
                        (_, Some(t)) => t.clone(),
                        (_, None) => "(query)".into(),
                    },
                    match &s.cron {
                        Some(c) if c != &s.schedule => format!("{} ({c})", s.schedule),
                        Some(c) => c.clone(),
                        None => format!("{} (by hand)", s.schedule),
                    },
                    s.next_at_ms.map(time_ms).unwrap_or_else(|| "-".into()),
                    last,
                ]);
            }
            t.write(&mut o)?;
        }
    }
    Ok(())
}
