//! `huitong subscribe`, `huitong subscriptions`, `huitong unsubscribe` (订阅).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use super::output::{self, bytes, time_ms, Table};
use crate::client::ApiClient;
use crate::dataset::export::OutFormat;
use crate::subscribe::request::SubscribeRequest;
use crate::subscribe::{Subscription, SubscriptionView, Target};

/// `huitong subscribe`.
#[derive(Args, Debug)]
pub struct SubscribeArgs {
    /// Resource code.
    code: String,
    /// Where each new version goes: a directory, or a database
    /// (postgres://user@host[:port]/db or mysql://user@host[:port]/db, with --table; the
    /// password goes in secrets.toml as [targets."NAME"] password = "…").
    #[arg(long, value_name = "TARGET")]
    into: String,
    /// The table of a database target (created from the 信息项 when missing).
    #[arg(long)]
    table: Option<String>,
    /// The 信息项 that identify a row, comma-separated (required for a database target).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// Only these 信息项, comma-separated (conditional data needs a grant for them).
    #[arg(long, value_delimiter = ',')]
    fields: Option<Vec<String>>,
    /// Provider USCC, when several providers use the code.
    #[arg(long)]
    provider: Option<String>,
    /// Present the grant of this application id (default: this node's own grant, if any).
    #[arg(long)]
    grant: Option<String>,
    /// The subscription's name (default: the code with '-' for '/').
    #[arg(long)]
    name: Option<String>,
    /// File format of a directory target (default csv).
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// A directory target keeps one current file, replaced by each version, instead of one
    /// file per version.
    #[arg(long)]
    current: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Directory target formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FileFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl From<FileFormat> for OutFormat {
    fn from(f: FileFormat) -> Self {
        match f {
            FileFormat::Csv => OutFormat::Csv,
            FileFormat::Jsonl => OutFormat::Jsonl,
            FileFormat::Parquet => OutFormat::Parquet,
        }
    }
}

fn target(a: &SubscribeArgs) -> anyhow::Result<Target> {
    let db = |kind: &str| -> anyhow::Result<String> {
        if a.format.is_some() || a.current {
            bail!("--format and --current are for a directory target, not {kind}");
        }
        match &a.table {
            Some(t) => Ok(t.clone()),
            None => bail!("a {kind} target needs --table"),
        }
    };
    if a.into.starts_with("postgres://") || a.into.starts_with("postgresql://") {
        return Ok(Target::Postgres {
            url: a.into.clone(),
            table: db("PostgreSQL")?,
        });
    }
    if a.into.starts_with("mysql://") {
        return Ok(Target::Mysql {
            url: a.into.clone(),
            table: db("MySQL")?,
        });
    }
    if a.into.contains("://") {
        bail!("--into: a directory, postgres://… or mysql://…");
    }
    if a.table.is_some() {
        bail!("--table is for a database target");
    }
    let path = super::dataset_cmd::absolute(&PathBuf::from(&a.into))?;
    if !path.is_dir() {
        bail!("--into {}: not a directory", path.display());
    }
    Ok(Target::Dir {
        path,
        format: a.format.map(OutFormat::from).unwrap_or_default(),
        current: a.current,
    })
}

/// `huitong subscribe`.
pub(super) async fn subscribe(dir: &Path, a: SubscribeArgs) -> anyhow::Result<()> {
    let req = SubscribeRequest {
        name: a.name.clone(),
        code: a.code.clone(),
        provider: a.provider.clone(),
        fields: a.fields.clone(),
        grant: a.grant.clone(),
        key: a.key.clone(),
        target: target(&a)?,
    };
    let s: Subscription = ApiClient::new(dir)?.post("/subscriptions", &req).await?;
    if a.json {
        return output::json(&s);
    }
    println!(
        "subscribed {} to {} of {}: each new version goes to {}; follow it with `huitong subscriptions`",
        s.name,
        s.code,
        s.provider,
        s.target.describe()
    );
    Ok(())
}

/// `huitong subscriptions`.
pub(super) async fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let v: Vec<SubscriptionView> = ApiClient::new(dir)?.get("/subscriptions", &()).await?;
    if json {
        return output::json(&v);
    }
    let mut o = std::io::stdout().lock();
    if v.is_empty() {
        writeln!(
            o,
            "no subscriptions; add one with `huitong subscribe CODE --into TARGET`"
        )?;
        return Ok(());
    }
    let mut t = Table::new().right_align(&[3, 4, 5]);
    t.row([
        "name",
        "resource",
        "target",
        "version",
        "latest",
        "lag",
        "delivered",
        "last error",
    ]);
    for s in &v {
        let d = &s.subscription.delivery;
        t.row([
            s.subscription.name.clone(),
            s.subscription.code.clone(),
            s.subscription.target.describe(),
            d.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            s.latest
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            s.lag.to_string(),
            d.at_ms
                .map(|at| format!("{} ({} fetched)", time_ms(at), bytes(d.bytes_fetched)))
                .unwrap_or_else(|| "never".into()),
            d.error
                .as_ref()
                .map(|e| format!("{e} ({} tries)", d.failures))
                .unwrap_or_default(),
        ]);
    }
    t.write(&mut o)?;
    Ok(())
}

/// `huitong unsubscribe`.
pub(super) async fn unsubscribe(dir: &Path, name: &str) -> anyhow::Result<()> {
    if !crate::subscribe::valid_name(name) {
        bail!("{name:?} is not a subscription name; `huitong subscriptions` lists them");
    }
    let _: Subscription = ApiClient::new(dir)?
        .post(&format!("/subscriptions/{name}/remove"), &())
        .await?;
    println!("unsubscribed {name}; what was delivered stays in its target");
    Ok(())
}
