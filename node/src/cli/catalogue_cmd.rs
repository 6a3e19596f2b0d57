//! `huitong catalogue …`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use huitong_protocol::catalogue::RawEntry;
use huitong_protocol::{FieldError, ValidationErrors};

use super::output;
use crate::api;
use crate::client::ApiClient;

/// Largest entry file accepted.
const MAX_ENTRY_FILE: u64 = 1024 * 1024;
/// Largest JSONL file accepted (about 150k entries).
const MAX_JSONL_FILE: u64 = 256 * 1024 * 1024;
/// Bad lines of a JSONL file whose problems are listed (all of each); the rest are counted.
const MAX_LISTED: usize = 20;

/// Catalogue commands.
#[derive(Subcommand, Debug)]
pub enum CatalogueCmd {
    /// Publish (or update) an entry from a TOML or JSON file, or many from a JSONL file
    /// (one entry per line).
    Publish {
        /// The entry file (.toml, .json, or .jsonl for many).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List entries.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one entry.
    Show {
        /// Resource code, e.g. 101001/000001.
        code: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Full-text search (Chinese word segmentation).
    Search {
        /// Words to look for.
        text: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw (下架) one of this node's entries.
    Withdraw {
        /// Resource code.
        code: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Filters shared by list and search.
#[derive(clap::Args, Debug, Default)]
pub struct FilterArgs {
    /// Provider USCC or part of its name.
    #[arg(long)]
    provider: Option<String>,
    /// Share type: unconditional|conditional|none (or 无条件共享 …).
    #[arg(long)]
    share_type: Option<String>,
    /// Open type: open|conditional|closed.
    #[arg(long)]
    open_type: Option<String>,
    /// Classification prefix, e.g. 1 or 101.
    #[arg(long)]
    classification: Option<String>,
}

impl FilterArgs {
    fn query(self, q: Option<String>) -> api::Query {
        api::Query {
            q,
            provider: self.provider,
            classification: self.classification,
            share_type: self.share_type,
            open_type: self.open_type,
            code: None,
        }
    }
}

/// Reads a UTF-8 file of at most `max` bytes.
fn read_text(file: &Path, max: u64) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > max {
        bail!(
            "{} is {} bytes; at most {max} bytes are accepted (split a JSONL file)",
            file.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))
}

/// Reads and validates an entry file; every problem is reported at once, each with its field
/// path (unknown keys and wrong types too: decoding an entry stops only on a syntax error).
pub(super) fn read_entry(file: &Path) -> anyhow::Result<RawEntry> {
    let text = read_text(file, MAX_ENTRY_FILE)?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: RawEntry = match ext.as_str() {
        "json" => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a JSON entry: {e}", file.display()))?,
        "toml" => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a TOML entry: {e}", file.display()))?,
        _ => bail!(
            "{}: unknown file type; name it .toml or .json",
            file.display()
        ),
    };
    if let Err(errors) = raw.validate() {
        bail!(
            "{}: {}; nothing was published:\n{}",
            file.display(),
            errors.summary(),
            indented(&errors)
        );
    }
    Ok(raw)
}

/// Problems one per line, indented.
fn indented(errors: &ValidationErrors) -> String {
    let lines: Vec<String> = errors.0.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

/// Reads and validates every line of a JSONL file; reports every problem of each bad line (of
/// the first [`MAX_LISTED`] bad lines) as `line N: path: message`.
fn read_jsonl(file: &Path) -> anyhow::Result<Vec<RawEntry>> {
    let text = read_text(file, MAX_JSONL_FILE)?;
    let mut entries = Vec::new();
    let mut listed = ValidationErrors::default();
    let (mut lines, mut bad, mut problems) = (0u64, 0usize, 0usize);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let errors = match serde_json::from_str::<RawEntry>(line) {
            Err(e) => ValidationErrors(vec![FieldError {
                path: String::new(),
                message: format!("not a JSON entry: {e}"),
            }]),
            Ok(raw) => match raw.validate() {
                Ok(_) => {
                    entries.push(raw);
                    continue;
                }
                Err(errors) => errors,
            },
        };
        bad += 1;
        problems += errors.0.len();
        if bad <= MAX_LISTED {
            listed.0.extend(errors.0.into_iter().map(|e| FieldError {
                path: match e.path.as_str() {
                    "" => format!("line {}", n + 1),
                    p => format!("line {}: {p}", n + 1),
                },
                ..e
            }));
        }
    }
    if bad > 0 {
        let more = if bad > MAX_LISTED {
            format!(
                "\n  … and the problems of {} more",
                output::count((bad - MAX_LISTED) as u64, "entry", "entries")
            )
        } else {
            String::new()
        };
        bail!(
            "{}: {} in {} of {}; nothing was published:\n{}{more}",
            file.display(),
            output::count(problems as u64, "problem", "problems"),
            bad,
            output::count(lines, "entry", "entries"),
            indented(&listed)
        );
    }
    if entries.is_empty() {
        bail!("{} holds no entries", file.display());
    }
    Ok(entries)
}

/// Publishes many entries in batches, with progress on stderr.
async fn publish_many(dir: &Path, entries: Vec<RawEntry>, json: bool) -> anyhow::Result<()> {
    let client = ApiClient::new(dir)?;
    let total = entries.len();
    let started = std::time::Instant::now();
    let (mut published, mut updated, mut last_seq) = (0, 0, 0);
    for chunk in entries.chunks(api::MAX_BATCH) {
        let b = api::Batch {
            entries: chunk.to_vec(),
        };
        let r: api::BatchPublished = client.post("/catalogue/batch", &b).await.map_err(|e| {
            e.context(format!(
                "{} of {total} were published before this error",
                output::count((published + updated) as u64, "entry", "entries")
            ))
        })?;
        published += r.published;
        updated += r.updated;
        last_seq = r.last_seq;
        let done = published + updated;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        eprintln!("published {done}/{total} ({rate:.0} entries/s)");
    }
    if json {
        return output::json(&api::BatchPublished {
            published,
            updated,
            last_seq,
        });
    }
    println!("{published} published, {updated} updated (feed seq {last_seq})");
    Ok(())
}

/// Runs a catalogue command.
pub(super) async fn run(dir: &Path, cmd: CatalogueCmd) -> anyhow::Result<()> {
    match cmd {
        CatalogueCmd::Publish { file, json }
            if file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jsonl")) =>
        {
            let entries = read_jsonl(&file)?;
            publish_many(dir, entries, json).await
        }
        CatalogueCmd::Publish { file, json } => {
            let raw = read_entry(&file)?;
            let p: api::Published = ApiClient::new(dir)?.post("/catalogue", &raw).await?;
            if json {
                return output::json(&p);
            }
            println!("{} {} (feed seq {})", p.event, p.code, p.seq);
            Ok(())
        }
        CatalogueCmd::List { filter, json } => {
            let r: api::Records = ApiClient::new(dir)?
                .get("/catalogue", &filter.query(None))
                .await?;
            output::records(&r.records, json)
        }
        CatalogueCmd::Search { text, filter, json } => {
            let r: api::Records = ApiClient::new(dir)?
                .get("/catalogue", &filter.query(Some(text)))
                .await?;
            output::records(&r.records, json)
        }
        CatalogueCmd::Show { code, json } => {
            let q = api::Query {
                code: Some(code.clone()),
                ..Default::default()
            };
            let r: api::Records = ApiClient::new(dir)?.get("/catalogue", &q).await?;
            if r.records.is_empty() {
                bail!("no catalogue entry {code}; see `huitong catalogue list`");
            }
            if json {
                return output::json(&r.records);
            }
            for rec in &r.records {
                output::record(rec, false)?;
            }
            Ok(())
        }
        CatalogueCmd::Withdraw { code, reason, json } => {
            let p: api::Published = ApiClient::new(dir)?
                .post("/catalogue/withdraw", &api::Withdraw { code, reason })
                .await?;
            if json {
                return output::json(&p);
            }
            println!("withdrawn {} (feed seq {})", p.code, p.seq);
            Ok(())
        }
    }
}
