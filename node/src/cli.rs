//! The `huitong` command line (clap). Client commands talk to the node running in `--dir`
//! through its admin API; `init` and `run` work on the directory itself. Output goes through
//! `output`: JSON for `--json`, tables padded by display width for people.
//!
//! Layering: the top; nothing in the node names it (`main.rs` runs it).

mod apply_cmd;
mod audit_cmd;
mod backup_cmd;
mod catalogue_cmd;
mod charter_amend;
mod charter_cmd;
mod collect_cmd;
mod dataset_cmd;
mod gateway_cmd;
mod init;
mod output;
mod pull_cmd;
mod subscribe_cmd;
mod user_cmd;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::ApiClient;

pub use output::{count, Table};

/// Huitong (汇通): a node of a federated government data-sharing platform.
#[derive(Parser, Debug)]
#[command(name = "huitong", version, about)]
pub struct Cli {
    /// Node directory (default: $HUITONG_DIR, else ./.huitong).
    #[arg(long, global = true, env = "HUITONG_DIR", default_value = ".huitong")]
    pub dir: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a node directory: huitong.toml and node.key (0600). Refuses to overwrite.
    Init(init::InitArgs),
    /// Run the node in the foreground until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Show the running node's status.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List connected peers.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish, list, show, search and withdraw catalogue entries.
    #[command(subcommand)]
    Catalogue(catalogue_cmd::CatalogueCmd),
    /// Publish dataset versions and list them.
    #[command(subcommand)]
    Dataset(dataset_cmd::DatasetCmd),
    /// Subscribe to a resource (订阅): each new version is pulled by the node itself and
    /// delivered into a directory or a PostgreSQL/MySQL table.
    Subscribe(subscribe_cmd::SubscribeArgs),
    /// List subscriptions: version delivered, lag, last error.
    Subscriptions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a subscription (what was delivered stays in its target).
    Unsubscribe {
        /// Its name.
        name: String,
    },
    /// Collect this node's resources from the department's databases (采集): run now, the run
    /// history, the sources.
    #[command(subcommand)]
    Collect(collect_cmd::CollectCmd),
    /// Pull a dataset version from its provider into a file (CSV, JSONL or Parquet for tables).
    /// The pull runs in the node: Ctrl-C stops watching it (see `huitong pulls`).
    Pull(pull_cmd::PullArgs),
    /// List the node's pulls (running and recently finished), or cancel one.
    Pulls(pull_cmd::PullsArgs),
    /// Remove the chunks no kept dataset version needs (see the operator guide); the node also
    /// does this every hour.
    Gc {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply for 信息项 of a 有条件共享 resource (sent to the hub and the provider).
    Apply(apply_cmd::ApplyArgs),
    /// List applications (incoming to this node, or this node's own).
    Applications(apply_cmd::ListArgs),
    /// Approve an accepted application (the provider), optionally fewer 信息项 (--fields) or a
    /// shorter period (--until) than applied for.
    Approve(apply_cmd::ApproveArgs),
    /// Reject an application with --reason (the provider or the hub).
    Reject(apply_cmd::DecideArgs),
    /// Revoke a grant with --reason (the provider or the hub); serving stops at once.
    Revoke(apply_cmd::DecideArgs),
    /// Check the hub's audit log: verify records and checkpoints, export proofs.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Show and administer the federation charter.
    #[command(subcommand)]
    Charter(charter_cmd::CharterCmd),
    /// Manage the federation authority key (kept offline by the platform administrator).
    #[command(subcommand)]
    Authority(charter_cmd::AuthorityCmd),
    /// Back up the node (running or stopped) into a new directory: a consistent copy of the
    /// store, the chunk store, the audit log, huitong.toml and node.key.
    Backup(backup_cmd::BackupArgs),
    /// Restore a backup into the node directory (the node stopped); the node then catches up
    /// on its own feed from its peers before it publishes.
    Restore(backup_cmd::RestoreArgs),
    /// The department systems that call other departments' services (接口) through this
    /// node's gateway.
    #[command(subcommand)]
    Gateway(gateway_cmd::GatewayCmd),
    /// Manage the people who may sign in to this node (accounts and roles, 三员分立).
    #[command(subcommand)]
    User(user_cmd::UserCmd),
    /// Launch and drive a local testnet (runs `huitong-testnet`).
    #[command(disable_help_flag = true)]
    Testnet {
        /// Arguments for huitong-testnet.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `huitong run`.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Log to this file instead of stderr (relative paths are in the node directory), rotated
    /// by size as `log.max_file_mib` and `log.keep_files` in huitong.toml say (16 MiB, 5 old
    /// files by default). Overrides `log.file`.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

impl RunArgs {
    /// The log file, if the node logs to one: `--log-file`, else `log.file`, in `dir`.
    pub fn log_file(
        &self,
        dir: &std::path::Path,
        config: &huitong_config::Config,
    ) -> Option<PathBuf> {
        self.log_file
            .clone()
            .or_else(|| config.log.file.as_ref().map(PathBuf::from))
            .map(|f| dir.join(f))
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.dir;
    match cli.command {
        Command::Init(args) => init::init(&dir, args),
        Command::Run(_) => {
            let config = huitong_config::Config::load(&dir)
                .map_err(|e| crate::daemon::ConfigError(format!("{e:#}")))?;
            crate::daemon::run(&dir, config).await
        }
        Command::Status { json } => {
            let s: crate::api::Status = ApiClient::new(&dir)?.get("/status", &()).await?;
            output::status(&s, json)
        }
        Command::Peers { json } => {
            let p: Vec<crate::net::PeerInfo> = ApiClient::new(&dir)?.get("/peers", &()).await?;
            output::peers(&p, json)
        }
        Command::Catalogue(c) => catalogue_cmd::run(&dir, c).await,
        Command::Charter(c) => charter_cmd::run(&dir, c).await,
        Command::Dataset(c) => dataset_cmd::run(&dir, c).await,
        Command::Collect(c) => collect_cmd::run(&dir, c).await,
        Command::Subscribe(a) => subscribe_cmd::subscribe(&dir, a).await,
        Command::Subscriptions { json } => subscribe_cmd::list(&dir, json).await,
        Command::Unsubscribe { name } => subscribe_cmd::unsubscribe(&dir, &name).await,
        Command::Pull(a) => pull_cmd::pull(&dir, a).await,
        Command::Pulls(a) => pull_cmd::pulls(&dir, a).await,
        Command::Gc { json } => dataset_cmd::gc(&dir, json).await,
        Command::Apply(a) => apply_cmd::apply(&dir, a).await,
        Command::Applications(a) => apply_cmd::list(&dir, a).await,
        Command::Approve(a) => apply_cmd::approve(&dir, a).await,
        Command::Reject(a) => apply_cmd::decide(&dir, "reject", a).await,
        Command::Revoke(a) => apply_cmd::decide(&dir, "revoke", a).await,
        Command::Audit(c) => audit_cmd::run(&dir, c).await,
        Command::Authority(c) => charter_cmd::authority(c),
        Command::Backup(a) => backup_cmd::backup(&dir, a).await,
        Command::Restore(a) => backup_cmd::restore(&dir, a),
        Command::User(c) => user_cmd::run(&dir, c).await,
        Command::Gateway(c) => gateway_cmd::run(&dir, c),
        Command::Testnet { args } => exec_testnet(&dir, args),
    }
}

/// Lets a command end quietly when its reader goes away (`huitong … | head`), as `ls` and `cat`
/// do: the next write to the closed pipe kills the process with SIGPIPE, which a shell shows as
/// status 141 and nothing else. Rust programs start with SIGPIPE ignored, so without this every
/// write fails with EPIPE instead and the command ends in `error: Broken pipe` (or a panic in
/// `println!`). Called once by each binary's `main` for its client commands — never for
/// `huitong run`, which must outlive a closed socket or log pipe.
pub fn die_quietly_on_closed_pipe() {
    // SAFETY: signal(2) only resets the disposition of SIGPIPE to the default action; no handler
    // (no Rust code) runs in signal context, and the call is safe with other threads running.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn exec_testnet(dir: &std::path::Path, args: Vec<String>) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("cannot find the huitong executable")?;
    let bin = me.with_file_name("huitong-testnet");
    if !bin.exists() {
        anyhow::bail!(
            "{} not found; build it with `cargo build --release -p huitong-testnet`",
            bin.display()
        );
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(&args).env("HUITONG_BIN", &me);
    // `--dir` given to huitong applies to the testnet unless the testnet arguments name one.
    if std::env::args().any(|a| a == "--dir" || a.starts_with("--dir="))
        && !args.iter().any(|a| a == "--dir")
    {
        cmd.arg("--dir").arg(dir);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
