//! `huitong catalogue …`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use huitong_protocol::catalogue::RawEntry;

use super::output;
use crate::api;
use crate::client::ApiClient;

/// Largest entry file accepted.
const MAX_ENTRY_FILE: u64 = 1024 * 1024;

/// Catalogue commands.
#[derive(Subcommand, Debug)]
pub enum CatalogueCmd {
    /// Publish (or update) an entry from a TOML or JSON file.
    Publish {
        /// The entry file (.toml or .json).
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

/// Reads and validates an entry file; every problem is reported with its field path.
pub(super) fn read_entry(file: &Path) -> anyhow::Result<RawEntry> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_ENTRY_FILE {
        bail!(
            "{} is {} bytes; an entry file is at most {MAX_ENTRY_FILE} bytes",
            file.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: RawEntry = match ext.as_str() {
        "json" => {
            let de = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", file.display(), e.path(), e.inner()))?
        }
        "toml" => {
            let de = toml::Deserializer::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                anyhow::anyhow!("{}: {}: {}", file.display(), e.path(), e.inner().message())
            })?
        }
        _ => bail!(
            "{}: unknown file type; name it .toml or .json",
            file.display()
        ),
    };
    if let Err(errors) = raw.validate() {
        let lines: Vec<String> = errors.0.iter().map(|e| format!("  {e}")).collect();
        bail!(
            "{}: {} problem(s); nothing was published:\n{}",
            file.display(),
            errors.0.len(),
            lines.join("\n")
        );
    }
    Ok(raw)
}

/// Runs a catalogue command.
pub(super) async fn run(dir: &Path, cmd: CatalogueCmd) -> anyhow::Result<()> {
    match cmd {
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
