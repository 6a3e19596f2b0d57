//! Test harness: temporary testnets of real `huitong` processes, entry files, and a "rogue"
//! member peer that speaks the wire protocol directly to send forged or malformed messages.

pub mod browser;
pub mod data;
pub mod rogue;
pub mod tls;
pub mod workflow;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huitong_testnet::{Options, Testnet};
use serde_json::{json, Value};

/// The `huitong` binary built by cargo for this test run.
pub fn huitong_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUITONG_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps; the node binary in target/<profile>.
    let me = std::env::current_exe().unwrap_or_default();
    me.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("huitong"))
        .unwrap_or_default()
}

/// A testnet in a temporary directory, stopped and removed on drop.
pub struct Fixture {
    /// The testnet (dropped first: its processes stop before the directory goes).
    pub net: Testnet,
    /// The directory.
    pub tmp: tempfile::TempDir,
}

/// A random base port, so parallel test binaries rarely collide (ports are checked anyway),
/// below Linux's ephemeral range (32768–60999): a node started late (a restore test starts its
/// peers after a while) must not find its port taken by another test's outgoing connection or
/// port-0 listener meanwhile — the CI run of `b2cd878` lost a node to that once.
fn base_port() -> u16 {
    20000 + rand::random::<u16>() % 12000
}

/// Starts hub + `departments` + city and waits until all are connected.
pub fn start(departments: usize, sync_interval_secs: u64) -> anyhow::Result<Fixture> {
    start_with(departments, sync_interval_secs, &[])
}

/// Like [`start`], with some nodes publishing no address (see `Options::hidden`).
pub fn start_with(
    departments: usize,
    sync_interval_secs: u64,
    hidden: &[&str],
) -> anyhow::Result<Fixture> {
    start_prepared(departments, sync_interval_secs, hidden, |_| Ok(()))
}

/// Changes node `i`'s configuration file before it starts (inside a [`start_prepared`]
/// preparation).
pub fn edit_config(
    net: &Testnet,
    i: usize,
    edit: impl FnOnce(&mut huitong_config::Config),
) -> anyhow::Result<()> {
    let mut config = huitong_config::Config::load(&net.nodes[i].dir)?;
    edit(&mut config);
    std::fs::write(
        net.nodes[i].dir.join(huitong_config::CONFIG_FILE),
        config.to_toml(),
    )?;
    Ok(())
}

/// Like [`start_with`], running `prepare` on the created testnet before any node starts (e.g.
/// to set a node's environment with [`Testnet::set_env`]).
pub fn start_prepared(
    departments: usize,
    sync_interval_secs: u64,
    hidden: &[&str],
    prepare: impl FnOnce(&mut Testnet) -> anyhow::Result<()>,
) -> anyhow::Result<Fixture> {
    // HUITONG_KEEP_TESTNET=1 keeps the directory (node logs) for debugging a failure.
    let tmp = tempfile::Builder::new()
        .prefix("huitong-test")
        .disable_cleanup(std::env::var_os("HUITONG_KEEP_TESTNET").is_some())
        .tempdir()?;
    let bin = huitong_bin();
    if !bin.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace)",
            bin.display()
        );
    }
    let mut net = Testnet::create(&Options {
        dir: tmp.path().join("net"),
        departments,
        base_port: base_port(),
        sync_interval_secs,
        bin,

        hidden: hidden.iter().map(|h| h.to_string()).collect(),

        feed_quota: None,
    })?;
    prepare(&mut net)?;
    net.start_all()?;
    net.wait_healthy(Duration::from_secs(120))
        .context("testnet did not become healthy")?;
    Ok(Fixture { net, tmp })
}

/// A valid catalogue entry of node `i` with this sequence number and title.
pub fn entry(net: &Testnet, i: usize, seq: u32, title: &str) -> Value {
    let n = &net.nodes[i];
    entry_of(&n.name, &n.uscc, seq, title)
}

/// A valid catalogue entry of the organisation `name` (`uscc`), code `301001/{seq:06}`.
pub fn entry_of(name: &str, uscc: &str, seq: u32, title: &str) -> Value {
    json!({
        "classification": "301001",
        "title": title,
        "code": format!("301001/{seq:06}"),
        "provider_name": name,
        "provider_code": uscc,
        "abstract": format!("{title}：测试用目录条目。"),
        "format": {"category": "数据库", "type": "mysql"},
        "items": [{"name": "编号", "data_type": "C", "length": 20}, {"name": "日期", "data_type": "D"}],
        "share_type": "无条件共享",
        "share_mode": "库表",
        "open_type": "不予开放",
        "update_cycle": "每日",
        "publish_date": "2026-11-20",
    })
}

/// Publishes an entry from node `i` through the CLI; returns the CLI output.
pub fn publish(f: &Fixture, i: usize, entry: &Value) -> anyhow::Result<std::process::Output> {
    let file = f
        .tmp
        .path()
        .join(format!("entry-{}.json", rand::random::<u64>()));
    std::fs::write(&file, serde_json::to_vec(entry)?)?;
    f.net
        .cli(i, &["catalogue", "publish", &file.to_string_lossy()])
}

/// Publishes and asserts success.
pub fn publish_ok(f: &Fixture, i: usize, entry: &Value) -> anyhow::Result<()> {
    let out = publish(f, i, entry)?;
    if !out.status.success() {
        bail!("publish failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Titles found by a search on node `i`.
pub fn search(net: &mut Testnet, i: usize, text: &str) -> anyhow::Result<Vec<String>> {
    let q: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
    let v = net.get(i, &format!("/catalogue?q={q}"))?;
    Ok(v["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["entry"]["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits until `cond` returns true, polling every 100 ms.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a CLI command on node `i`; fails with its stderr unless it succeeded.
pub fn cli_ok(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = net.cli(i, args)?;
    if !out.status.success() {
        bail!(
            "huitong {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Waits until node `i` holds charter `version` or a later one (a later version may follow
/// within milliseconds: waiting for exactly `version` would then wait for ever).
pub fn wait_charter(net: &mut Testnet, i: usize, version: u64) -> anyhow::Result<()> {
    wait_until(
        Duration::from_secs(60),
        &format!("charter v{version}"),
        || Ok(net.get(i, "/status")?["charter_version"].as_u64() >= Some(version)),
    )
}

/// Node `i`'s count of refusals for `label` (`status.rejected`), 0 when there were none.
pub fn rejected(net: &mut Testnet, i: usize, label: &str) -> anyhow::Result<u64> {
    Ok(net.get(i, "/status")?["rejected"][label]
        .as_u64()
        .unwrap_or(0))
}

/// Milliseconds since the Unix epoch (for entries a test signs itself: an entry may not be
/// stamped before the charter version it names was issued).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Creates an account on node `i` with `roles` through the CLI; returns the generated password.
pub fn add_user(
    net: &Testnet,
    i: usize,
    account: &str,
    name: &str,
    roles: &str,
) -> anyhow::Result<String> {
    let out = cli_ok(
        net,
        i,
        &[
            "user", "add", account, "--name", name, "--role", roles, "--json",
        ],
    )?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v["generated_password"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no generated password: {v}"))
}

/// Signs in on node `i` through the API: the session's token (`hts_…`) and its CSRF token.
pub fn session(
    net: &mut Testnet,
    i: usize,
    account: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let a = net.call(
        i,
        "POST",
        "/login",
        Some(""),
        Some(&json!({"account": account, "password": password})),
    )?;
    anyhow::ensure!(
        a.status == 200,
        "sign-in of {account}: {} {}",
        a.status,
        a.body
    );
    let token = a.body["token"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(token.starts_with("hts_"), "not a session token: {}", a.body);
    Ok((
        token,
        a.body["csrf"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The `error` text of a JSON error answer (empty when there is none).
pub fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}
