//! `huitong init`: creates a node directory.

use std::path::Path;

use anyhow::{bail, Context};
use huitong_config::{keyfile, Config, CONFIG_FILE, NODE_KEY_FILE};
use huitong_protocol::{Role, Uscc};

/// Arguments of `huitong init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Organisation name, e.g. 海门区公安局.
    #[arg(long)]
    name: String,
    /// The organisation's 统一社会信用代码 (18 characters, check character verified).
    #[arg(long)]
    org_code: String,
    /// department, hub or cascade.
    #[arg(long, default_value = "department")]
    role: String,
    /// Federation name.
    #[arg(long)]
    federation: Option<String>,
    /// The federation authority's public key (hex), from the platform administrator.
    #[arg(long)]
    authority_key: Option<String>,
    /// Listen multiaddress (repeatable); default QUIC and TCP on port 7400.
    #[arg(long)]
    listen: Vec<String>,
    /// Bulk data port (`IP:PORT`, or `off`); default TCP 7401 with the default listen
    /// addresses, else the first TCP listen address's host with a port the system picks.
    #[arg(long)]
    data_listen: Option<String>,
    /// Admin API address (loopback); port 0 picks a free port.
    #[arg(long)]
    api: Option<String>,
    /// Sharing portal address (loopback; port 0 picks a free port; `off` for none).
    #[arg(long)]
    portal: Option<String>,
    /// Seconds between anti-entropy rounds.
    #[arg(long)]
    sync_interval: Option<u64>,
    /// Print JSON (node key and PeerId).
    #[arg(long)]
    json: bool,
}

/// The bulk data port of a node initialised with the default listen addresses.
const DEFAULT_DATA_LISTEN: &str = "0.0.0.0:7401";

pub(super) fn init(dir: &Path, a: InitArgs) -> anyhow::Result<()> {
    let role = Role::parse(&a.role).with_context(|| {
        format!(
            "--role: {:?} is not a role; use department, hub or cascade",
            a.role
        )
    })?;
    if let Err(e) = Uscc::parse(&a.org_code) {
        bail!("--org-code: {e}");
    }
    if dir.join(CONFIG_FILE).exists() || dir.join(NODE_KEY_FILE).exists() {
        bail!("{} already holds a node (huitong.toml or node.key); refusing to overwrite. Choose another --dir.", dir.display());
    }
    let mut config = Config::new(&a.name, &a.org_code, role);
    if let Some(f) = a.federation {
        config.federation.name = f;
    }
    config.federation.authority_key = a.authority_key;
    if !a.listen.is_empty() {
        config.network.listen = a.listen;
    } else {
        // Beside the default 7400 a fixed port too, for the firewall rule.
        config.network.data_listen = Some(DEFAULT_DATA_LISTEN.into());
    }
    if let Some(d) = a.data_listen {
        config.network.data_listen = Some(d);
    }
    if let Some(api) = a.api {
        config.api.listen = api;
    }
    if let Some(p) = a.portal {
        config.portal.listen = p;
    }
    if let Some(s) = a.sync_interval {
        config.network.sync_interval_secs = s;
    }
    // Validate exactly as `run` will.
    let text = config.to_toml();
    Config::parse(&text, &dir.join(CONFIG_FILE))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = keyfile::generate().context("cannot read the OS random number generator")?;
    keyfile::write_new(&dir.join(NODE_KEY_FILE), &key)?;
    std::fs::write(dir.join(CONFIG_FILE), text)
        .with_context(|| format!("cannot write {}", dir.join(CONFIG_FILE).display()))?;
    let peer = crate::net::peer_id(&key.public())
        .map(|p| p.to_string())
        .unwrap_or_default();
    if a.json {
        super::output::json(&serde_json::json!({
            "dir": dir, "node_key": key.public().to_hex(), "peer_id": peer,
        }))?;
    } else {
        println!("created node {} in {}", a.name, dir.display());
        println!("node key  {}", key.public().to_hex());
        println!("peer id   {peer}");
        println!("give the node key to the platform administrator to be admitted to the charter");
    }
    Ok(())
}
