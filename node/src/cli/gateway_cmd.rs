//! `huitong gateway`: the department systems that may call other departments' services
//! through this node (each with its own key). Works on the node directory directly, with the
//! node running or not; a change takes effect at the next call.

use std::path::Path;

use crate::service::clients;

/// `huitong gateway …`.
#[derive(clap::Subcommand, Debug)]
pub enum GatewayCmd {
    /// Add a calling system; prints its key once (only a hash of it is kept).
    AddClient {
        /// A name for the system, e.g. minzheng-jiuzhu (letters, digits, '-', '_', '.').
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the calling systems.
    Clients {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a calling system: its key stops working at once.
    RemoveClient {
        /// Its name.
        name: String,
    },
}

/// Runs a gateway command.
pub(super) fn run(dir: &Path, cmd: GatewayCmd) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::AddClient { name, json } => {
            let key = clients::add(dir, &name)?;
            if json {
                super::output::json(&serde_json::json!({ "name": name, "key": key }))?;
            } else {
                println!("client {name} added; its key (shown only now):\n{key}");
                println!("call with: curl -H 'Authorization: Bearer {key}' http://<api address>/svc/<provider USCC>/<resource code>/lookup?key=…&value=…&fields=…");
            }
        }
        GatewayCmd::Clients { json } => {
            let names = clients::names(dir)?;
            if json {
                super::output::json(&names)?;
            } else if names.is_empty() {
                println!("no gateway clients; add one with `huitong gateway add-client NAME`");
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }
        GatewayCmd::RemoveClient { name } => {
            clients::remove(dir, &name)?;
            println!("client {name} removed");
        }
    }
    Ok(())
}
