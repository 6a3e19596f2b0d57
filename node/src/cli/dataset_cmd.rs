//! `huitong dataset publish|versions` and `huitong gc`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::output::{self, bytes, count, Table};
use crate::api;
use crate::client::ApiClient;
use crate::dataset::gc::GcReport;
use crate::dataset::publish::{PublishReport, PublishRequest};

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

/// `p` made absolute against the current directory (the node resolves paths itself).
pub(super) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
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
            let path = absolute(&from)?;
            let req = PublishRequest {
                code,
                path_seen: crate::seen::FileId::of(&path).ok(),
                path,
                file,
                allow_rejects,
                file_name: None,
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
                    "left out {} ({}) breaking the 信息项 rules; the report is stored with the version",
                    count(r.rejected_rows, "row", "rows"),
                    count(r.rejected_cells, "cell", "cells"),
                )?;
                if let Some(path) = &r.report {
                    let shown = if r.report_cells < r.rejected_cells {
                        format!(
                            " (the first {} cells: the report reached its size limit)",
                            r.report_cells
                        )
                    } else {
                        String::new()
                    };
                    writeln!(
                        o,
                        "every refused cell is listed in {}{shown}",
                        path.display()
                    )?;
                }
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
/// Runs `huitong gc`: collects the node's chunk store now.
pub(super) async fn gc(dir: &Path, json: bool) -> anyhow::Result<()> {
    let r: GcReport = ApiClient::new(dir)?.post("/gc", &()).await?;
    if json {
        return output::json(&r);
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "removed {} ({}); kept {} ({}) of {}",
        count(r.chunks_removed, "chunk", "chunks"),
        bytes(r.bytes_freed),
        count(r.chunks_kept, "chunk", "chunks"),
        bytes(r.bytes_kept),
        count(r.versions_kept, "version", "versions"),
    )?;
    for d in &r.versions_dropped {
        writeln!(
            o,
            "  let go of {} v{} of provider {} (superseded; pulling it again fetches it)",
            d.code,
            d.version,
            d.provider.to_hex()
        )?;
    }
    Ok(())
}
