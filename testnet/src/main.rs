//! `huitong-testnet` (also run as `huitong testnet`): start, inspect and stop a local federation
//! of real `huitong` processes on loopback with demo data.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use huitong_node::cli::{count, Table};
use huitong_testnet::{Options, Testnet};

/// Launch a local Huitong testnet.
#[derive(Parser, Debug)]
#[command(name = "huitong testnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Debug)]
struct DirArg {
    /// Testnet directory.
    #[arg(long, env = "HUITONG_TESTNET_DIR", default_value = ".huitong-testnet")]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create (or restart) the testnet: hub, N departments and the city node, with demo data.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// Number of department nodes.
        #[arg(long, default_value_t = 6)]
        departments: usize,
        /// First port to try for node listeners. Keep it below Linux's ephemeral range
        /// (32768–60999): there an earlier node's outgoing connection can take a later node's
        /// port before it starts.
        #[arg(long, default_value_t = 27400)]
        base_port: u16,
        /// Nodes (by key: police, market, …) that publish no address, as if behind NAT: they
        /// reach each other only through the hub's relay.
        #[arg(long, value_delimiter = ',')]
        hidden: Vec<String>,
    },
    /// Show the nodes.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop every node the testnet started.
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
}

fn huitong_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HUITONG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("huitong");
    if !bin.exists() {
        bail!(
            "cannot find the huitong binary next to {}; set HUITONG_BIN",
            me.display()
        );
    }
    Ok(bin)
}

fn say(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

fn up(dir: PathBuf, departments: usize, base_port: u16, hidden: Vec<String>) -> anyhow::Result<()> {
    if departments == 0 || departments > 200 {
        bail!("--departments must be between 1 and 200");
    }
    let dir = std::path::absolute(&dir)?;
    let fresh = !dir.join(huitong_testnet::STATE_FILE).exists();
    let mut t = if fresh {
        say(&format!(
            "creating a testnet in {}: hub, {}, city …",
            dir.display(),
            count(departments as u64, "department", "departments")
        ));
        Testnet::create(&Options {
            dir: dir.clone(),
            departments,
            base_port,
            sync_interval_secs: 5,
            bin: huitong_bin()?,
            hidden: hidden.clone(),
            feed_quota: None,
        })?
    } else {
        let t = Testnet::load(&dir)?;
        let running = (0..t.nodes.len()).filter(|&i| t.is_running(i)).count();
        if running > 0 {
            bail!("a testnet is already running in {} ({running} of {} nodes up); see `huitong testnet status`, or stop it with `huitong testnet down`", dir.display(), t.nodes.len());
        }
        say(&format!(
            "restarting the stopped testnet in {}",
            dir.display()
        ));
        t
    };
    t.bin = huitong_bin()?;
    say(&format!("starting {} nodes …", t.nodes.len()));
    t.start_all()?;
    say("waiting until every node is connected to every other …");
    if let Err(e) = t.wait_healthy(Duration::from_secs(180)) {
        let _ = t.stop_all();
        return Err(e.context("the testnet did not become healthy; it was stopped. Node logs are in each node directory (node.log, and node.out for a panic)"));
    }
    // Marked done last, so an `up` interrupted while publishing publishes again on the next
    // `up` (re-publishing a code is an update: nothing is duplicated).
    let demo_done = dir.join("demo.done");
    if !demo_done.exists() {
        let n =
            t.publish_demo(|i, total, title| say(&format!("published {i}/{total}: {title}")))?;
        say("waiting until every node holds the whole catalogue …");
        let all: Vec<usize> = (0..t.nodes.len()).collect();
        t.wait_status(
            &all,
            Duration::from_secs(120),
            "the demo catalogue",
            |_, s| s["catalogue_entries"].as_u64() >= Some(n as u64),
        )?;
        std::fs::write(&demo_done, n.to_string())?;
    }
    let data_done = dir.join("datasets.done");
    if !data_done.exists() {
        say("generating and publishing the demo datasets …");
        let n = t.publish_datasets(say)?;
        std::fs::write(&data_done, n.to_string())?;
    }
    let logins = t.demo_logins()?;
    t.save()?;
    // Not `?`: an error here must not drop `t`, which would stop the nodes just started.
    if let Err(e) = print_table(&t).and_then(|()| print_logins(&t, &logins)) {
        say(&format!("cannot print the node table: {e}"));
    }
    println!(
        "\ntry:  huitong --dir {} catalogue search 人口",
        t.nodes[t.nodes.len() / 2].dir.display()
    );
    if let Some(civil) = t.index("civil") {
        println!(
            "pull: huitong --dir {} pull 102001/000001 --out legal-entities.csv",
            t.nodes[civil].dir.display()
        );
    }
    println!("stop: huitong testnet down --dir {}", dir.display());
    // Leave the processes running: they belong to the testnet now, not to this command.
    std::mem::forget(t);
    Ok(())
}

fn print_table(t: &Testnet) -> std::io::Result<()> {
    let mut table = Table::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let api = t
            .api_addr(i)
            .map(|a| format!("http://{a}/api/v1"))
            .unwrap_or_else(|| "-".into());
        let portal = t
            .portal_addr(i)
            .map(|a| format!("http://{a}/"))
            .unwrap_or_else(|| "-".into());
        table.row([
            n.role.clone(),
            n.name.clone(),
            n.dir.display().to_string(),
            portal,
            api,
        ]);
    }
    table.write(&mut std::io::stdout().lock())
}

fn print_logins(t: &Testnet, logins: &[huitong_testnet::logins::Login]) -> std::io::Result<()> {
    println!(
        "\ndemo sign-ins, the same on every node (the portal URLs above, or POST /api/v1/login; also in {}):",
        t.dir.join(huitong_testnet::logins::LOGINS_FILE).display()
    );
    let mut table = Table::new().indent("  ");
    for l in logins {
        table.row([
            l.label.clone(),
            l.role.clone(),
            l.account.clone(),
            l.password.clone(),
        ]);
    }
    table.write(&mut std::io::stdout().lock())
}

fn main() {
    // Every command here is a client: `huitong testnet status | head` ends quietly. The nodes
    // it starts are separate `huitong run` processes, which keep ignoring SIGPIPE.
    huitong_node::cli::die_quietly_on_closed_pipe();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up {
            dir,
            departments,
            base_port,
            hidden,
        } => up(dir.dir, departments, base_port, hidden),
        Cmd::Status { dir, json } => {
            let t = Testnet::load(&dir.dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t.describe())?);
            } else {
                print_table(&t)?;
            }
            std::mem::forget(t);
            Ok(())
        }
        Cmd::Down { dir } => {
            let mut t = Testnet::load(&dir.dir)?;
            let running = (0..t.nodes.len()).filter(|&i| t.is_running(i)).count();
            t.stop_all().context("stopping nodes")?;
            say(&format!(
                "stopped {}; data kept in {}",
                count(running as u64, "node", "nodes"),
                dir.dir.display()
            ));
            Ok(())
        }
    }
}
