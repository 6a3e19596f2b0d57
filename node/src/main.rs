//! The `huitong` binary.

use clap::Parser;
use huitong_node::cli::{self, Cli, Command};
use tracing_subscriber::EnvFilter;

fn init_logging(cli: &Cli) {
    let (level, json) = match &cli.command {
        Command::Run => match huitong_config::Config::load(&cli.dir) {
            Ok(c) => (
                c.log.level.clone(),
                c.log.format == huitong_config::LogFormat::Json,
            ),
            Err(_) => ("info".to_owned(), false),
        },
        _ => ("warn".to_owned(), false),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(&cli);
    if !matches!(cli.command, Command::Run) {
        cli::die_quietly_on_closed_pipe();
    }
    if let Err(e) = cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
