//! The `huitong` binary.

use std::sync::Mutex;

use clap::Parser;
use huitong_node::cli::{self, Cli, Command};
use huitong_node::logfile::Rotating;
use tracing_subscriber::EnvFilter;

/// Sets up logging: warnings on stderr for client commands; for `huitong run`, the configured
/// level and format, on stderr (the journal under systemd) or in a size-rotated log file.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let (level, json, file) = match &cli.command {
        Command::Run(args) => match huitong_config::Config::load(&cli.dir) {
            Ok(c) => {
                let file = args.log_file(&cli.dir, &c).map(|p| {
                    let max = c.log.max_file_mib.saturating_mul(1024 * 1024);
                    Rotating::open(&p, max, c.log.keep_files).map_err(|e| {
                        anyhow::anyhow!("cannot open the log file {}: {e}", p.display())
                    })
                });
                (
                    c.log.level.clone(),
                    c.log.format == huitong_config::LogFormat::Json,
                    file.transpose()?,
                )
            }
            Err(_) => ("info".to_owned(), false, None),
        },
        _ => ("warn".to_owned(), false, None),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (file, json) {
        (Some(f), true) => builder.json().with_writer(Mutex::new(f)).init(),
        (Some(f), false) => builder.with_ansi(false).with_writer(Mutex::new(f)).init(),
        (None, true) => builder.json().with_writer(std::io::stderr).init(),
        (None, false) => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    let run = matches!(cli.command, Command::Run(_));
    if !run {
        cli::die_quietly_on_closed_pipe();
    }
    if let Err(e) = cli::run(cli).await {
        if run {
            // Also in the log file, when the node logs to one.
            tracing::error!(error = format!("{e:#}"), "the node stopped");
        }
        eprintln!("error: {e:#}");
        let config = e
            .downcast_ref::<huitong_node::daemon::ConfigError>()
            .is_some();
        std::process::exit(if run && config {
            huitong_node::daemon::EXIT_CONFIG
        } else {
            1
        });
    }
}
