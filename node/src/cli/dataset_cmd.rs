//! `huitong dataset publish|versions` and `huitong pull`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::output::{self, bytes, count, Table};
use crate::api;
use crate::client::ApiClient;
use crate::dataset::export::OutFormat;
use crate::dataset::publish::{PublishReport, PublishRequest};
use crate::transfer::pull::{JobView, Phase, PullRequest, PullSummary};

/// Dataset commands.
#[derive(Subcommand, Debug)]
pub enum DatasetCmd {
    /// Publish a new version of one of this node's resources.
    Publish {
        /// Resource code (信息资源代码) of this node's catalogue entry.
        code: String,
        /// The data: .csv, .jsonl, .xlsx or .parquet for a table; any file with --file.
        #[arg(long = "from", value_name = "PATH")]
        from: PathBuf,
        /// Publish the file as opaque bytes (文件 resources).
        #[arg(long)]
        file: bool,
        /// Publish the rows that pass and store a report of those that break the 信息项 rules.
        #[arg(long)]
        allow_rejects: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the published versions of a resource.
    Versions {
        /// Resource code.
        code: String,
        /// Provider USCC, when several providers use the code.
        #[arg(long)]
        provider: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

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

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

/// Runs a dataset command.
pub(super) async fn run(dir: &Path, cmd: DatasetCmd) -> anyhow::Result<()> {
    let client = ApiClient::new(dir)?;
    match cmd {
        DatasetCmd::Publish {
            code,
            from,
            file,
            allow_rejects,
            json,
        } => {
            if !from.is_file() {
                bail!(
                    "--from {}: not a readable file (a directory, or missing)",
                    from.display()
                );
            }
            let req = PublishRequest {
                code,
                path: absolute(&from)?,
                file,
                allow_rejects,
            };
            let r: PublishReport = client.post("/datasets", &req).await?;
            if json {
                return output::json(&r);
            }
            let mut o = std::io::stdout().lock();
            writeln!(
                o,
                "published {} version {}: {} ({} new)",
                r.code,
                r.version,
                output::contents(r.rows, r.bytes, r.chunks),
                bytes(r.new_bytes)
            )?;
            if r.rejected_rows > 0 {
                writeln!(
                    o,
                    "left out {} breaking the 信息项 rules; the report is stored with the version",
                    count(r.rejected_rows, "row", "rows")
                )?;
            }
            Ok(())
        }
        DatasetCmd::Versions {
            code,
            provider,
            json,
        } => {
            #[derive(serde::Serialize)]
            struct Q {
                code: String,
                provider: Option<String>,
            }
            let v: Vec<api::Versions> = client
                .get("/datasets/versions", &Q { code, provider })
                .await?;
            if json {
                return output::json(&v);
            }
            let mut o = std::io::stdout().lock();
            for r in &v {
                writeln!(o, "{} — {}", r.code, r.provider)?;
                if r.versions.is_empty() {
                    writeln!(o, "  no versions published yet")?;
                }
                let mut t = Table::new().indent("  ").right_align(&[2, 3, 4]);
                for d in &r.versions {
                    t.row([
                        format!("v{}", d.version),
                        output::time_ms(d.created_at_ms),
                        d.rows
                            .map(|n| count(n, "row", "rows"))
                            .unwrap_or_else(|| "file".into()),
                        bytes(d.bytes),
                        count(d.chunks, "chunk", "chunks"),
                    ]);
                }
                t.write(&mut o)?;
            }
            Ok(())
        }
    }
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

/// Runs `huitong pull`: starts the pull on the node and follows it.
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
    };
    let started: api::PullStarted = client.post("/pulls", &req).await?;
    let show = !args.json && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        if show {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let view = loop {
        let v: JobView = client.get(&format!("/pulls/{}", started.id), &()).await?;
        bar.set_length(v.bytes_total);
        bar.set_position(v.bytes_done);
        bar.set_message(format!("{:?}", v.phase).to_lowercase());
        if matches!(v.phase, Phase::Done | Phase::Failed) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    if let Some(e) = view.error {
        let partial = crate::dataset::export::temp_path(&out);
        if partial.exists() {
            bail!(
                "pull of {} failed: {e}\n(the part already received is kept in {}: run the same pull again to resume, or delete it)",
                args.code,
                partial.display()
            );
        }
        bail!("pull of {} failed: {e}", args.code);
    }
    let Some(s) = view.summary else {
        bail!("the node reported the pull as done without a summary");
    };
    if args.json {
        return output::json(&s);
    }
    print_summary(&s)
}

fn print_summary(s: &PullSummary) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    let secs = (s.elapsed_ms as f64 / 1000.0).max(0.001);
    writeln!(
        o,
        "pulled {} v{} from {} ({}) → {}",
        s.code,
        s.version,
        s.provider,
        s.route,
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
