//! `calls`: key lookups on the 100,000-person table through a consumer's gateway to the
//! provider's node (grant checked, answer signed, both call logs written), against the same
//! lookups answered by the provider's own gateway for its own service in the same run (no
//! network hop, no grant: the provider's "own HTTP endpoint").
//!
//! The police node publishes an 接口 entry over the demo population table (有条件共享); the
//! civil-affairs node applies for 姓名, 公民身份号码 and 性别 and is granted them. Each target then
//! takes `users` clients (tasks on one thread) for `seconds`, each looking up random 公民身份号码 one
//! at a time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huitong_testnet::{Options, Testnet};
use serde_json::{json, Value};

/// Calls benchmark options.
#[derive(clap::Args, Debug)]
pub struct CallsArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Seconds of load per target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench-calls")]
    dir: PathBuf,
    /// First port to try (keep it below Linux's ephemeral range, 32768–60999).
    #[arg(long, default_value_t = 28900)]
    base_port: u16,
}

const CODE: &str = "101001/000099";

pub(crate) fn cli_json(t: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<Value> {
    let out = t.cli(i, args)?;
    if !out.status.success() {
        bail!(
            "huitong {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Waits until `check` holds, polling every 200 ms, for at most `secs`.
pub(crate) fn wait(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn state_of(t: &Testnet, i: usize, side: &str, id: &str) -> anyhow::Result<String> {
    let v = cli_json(t, i, &["applications", side, "--json"])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .find(|a| a["id"] == id)
        .and_then(|a| a["state"].as_str())
        .unwrap_or_default()
        .to_string())
}

/// The 信息项 of the demo population table (`population.csv`).
pub(crate) fn population_items() -> Value {
    json!([
        {"name": "姓名", "data_type": "C", "length": 50},
        {"name": "公民身份号码", "data_type": "C", "length": 18},
        {"name": "性别", "data_type": "C", "length": 2},
        {"name": "民族", "data_type": "C", "length": 20},
        {"name": "出生日期", "data_type": "D", "length": 8},
        {"name": "户籍地址", "data_type": "C", "length": 200},
        {"name": "现住址", "data_type": "C", "length": 200},
        {"name": "人员状态", "data_type": "C", "length": 10}
    ])
}

pub fn calls(a: CallsArgs) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("huitong");
    let _ = std::fs::remove_dir_all(&a.dir);
    let mut t = Testnet::create(&Options {
        dir: a.dir.clone(),
        departments: 6,
        base_port: a.base_port,
        sync_interval_secs: 5,
        bin,
        hidden: Vec::new(),
        feed_quota: None,
    })?;
    let provider = t.index("police").context("no police node")?;
    let consumer = t.index("civil").context("no civil-affairs node")?;
    // The load is the point here: no quota in the way.
    {
        use std::io::Write as _;
        let config = t.nodes[provider].dir.join("huitong.toml");
        let mut f = std::fs::OpenOptions::new().append(true).open(config)?;
        writeln!(f, "\n[services]\ncalls_per_second = 1000000")?;
    }
    t.start_all()?;
    t.wait_healthy(Duration::from_secs(120))?;
    let uscc = t.nodes[provider].uscc.clone();
    let entry = json!({
        "classification": "101001",
        "title": "人口基本信息查询服务",
        "code": CODE,
        "provider_name": t.nodes[provider].name,
        "provider_code": uscc,
        "abstract": "按公民身份号码查询人口基本信息（姓名、性别等），或核验。",
        "format": {"category": "数据库", "type": "mysql"},
        "items": population_items(),
        "share_type": "有条件共享",
        "share_condition": "用于政务服务事项办理核验",
        "share_mode": "接口",
        "open_type": "不予开放",
        "update_cycle": "每日",
        "publish_date": "2026-12-01"
    });
    let entry_file = a.dir.join("entry.json");
    std::fs::write(&entry_file, serde_json::to_vec(&entry)?)?;
    cli_json(
        &t,
        provider,
        &[
            "catalogue",
            "publish",
            &entry_file.to_string_lossy(),
            "--json",
        ],
    )?;
    let people = huitong_testnet::datasets::DATASETS
        .iter()
        .find(|d| d.file == "population.csv")
        .context("no population dataset")?;
    let csv = huitong_testnet::datasets::write(people, &a.dir)?;
    cli_json(
        &t,
        provider,
        &[
            "dataset",
            "publish",
            CODE,
            "--from",
            &csv.to_string_lossy(),
            "--json",
        ],
    )?;
    let ids: Vec<String> = std::fs::read_to_string(&csv)?
        .lines()
        .skip(1)
        .step_by(10)
        .filter_map(|l| l.split(',').nth(1).map(str::to_string))
        .collect();
    eprintln!("{} ids to look up", ids.len());

    // The consumer applies and is granted 姓名, 公民身份号码, 性别.
    wait(120, "the entry on the consumer", || {
        let out = t.cli(consumer, &["catalogue", "show", CODE, "--json"])?;
        Ok(out.status.success())
    })?;
    let applied = cli_json(
        &t,
        consumer,
        &[
            "apply",
            CODE,
            "--provider",
            &uscc,
            "--fields",
            "姓名,公民身份号码,性别",
            "--purpose",
            "政务服务核验",
            "--basis",
            "《政务服务条例》",
            "--until",
            "2099-12-31",
            "--json",
        ],
    )?;
    let id = applied[0]["id"]
        .as_str()
        .context("no application id")?
        .to_string();
    wait(120, "the application accepted", || {
        Ok(state_of(&t, provider, "--incoming", &id)? == "accepted")
    })?;
    cli_json(&t, provider, &["approve", &id, "--json"])?;
    wait(120, "the grant", || {
        Ok(state_of(&t, consumer, "--outgoing", &id)? == "granted")
    })?;

    let key_of = |i: usize| -> anyhow::Result<String> {
        let v = cli_json(&t, i, &["gateway", "add-client", "bench", "--json"])?;
        Ok(v["key"].as_str().context("no key")?.to_string())
    };
    let (own_key, their_key) = (key_of(provider)?, key_of(consumer)?);
    let urls = |i: usize| -> anyhow::Result<Vec<String>> {
        let api = t.api_addr(i).context("no API address")?;
        Ok(ids
            .iter()
            .map(|v| {
                format!(
                    "http://{api}/svc/{uscc}/{CODE}/lookup?key={}&value={v}&fields={}",
                    huitong_testnet::percent_encode("公民身份号码"),
                    huitong_testnet::percent_encode("姓名,性别")
                )
            })
            .collect())
    };
    let (own_urls, their_urls) = (urls(provider)?, urls(consumer)?);
    // Warm both (the version is loaded and indexed on the first call), and check the answer.
    let http = reqwest::blocking::Client::builder().no_proxy().build()?;
    for (u, k) in [(&own_urls[0], &own_key), (&their_urls[0], &their_key)] {
        let t0 = Instant::now();
        let v: Value = http
            .get(u)
            .header("authorization", format!("Bearer {k}"))
            .send()?
            .json()?;
        let rows = v["rows"].as_array().map_or(0, Vec::len);
        if rows != 1 {
            bail!("the first lookup answered {v}");
        }
        eprintln!("first call {:.1} ms", t0.elapsed().as_secs_f64() * 1000.0);
    }
    // Only the two nodes (and the hub, which relays nothing here) stay up.
    let hub = t.index("hub").context("no hub")?;
    for i in 0..t.nodes.len() {
        if i != provider && i != consumer && i != hub && t.is_running(i) {
            t.stop(i, false)?;
        }
    }
    let auth = |k: &str| format!("Bearer {k}");
    let own_auth = auth(&own_key);
    let their_auth = auth(&their_key);
    let (own, own_rate) =
        super::search::load(&own_urls, ("authorization", &own_auth), a.users, a.seconds)?;
    let (their, their_rate) = super::search::load(
        &their_urls,
        ("authorization", &their_auth),
        a.users,
        a.seconds,
    )?;
    let p = |v: &[f64], q: f64| super::percentile(v, q);
    println!("users={} seconds={} ids={}", a.users, a.seconds, ids.len());
    println!(
        "baseline, the provider's own gateway: {own_rate:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms ({} calls)",
        p(&own, 50.0),
        p(&own, 99.0),
        own.len()
    );
    println!(
        "consumer gateway → provider node:     {their_rate:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms ({} calls)",
        p(&their, 50.0),
        p(&their, 99.0),
        their.len()
    );
    println!(
        "throughput ratio (through the federation ÷ own): {:.2}",
        their_rate / own_rate
    );
    // The provider's own time per call, from its call log: a member's call is decided (quota,
    // grant, every 信息项) and an own call is not, so the difference of the medians is what
    // deciding a call costs.
    let stats = cli_json(&t, provider, &["audit", "call-stats", "--json"])?;
    let median = |peer: &str| {
        stats["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["side"] == "provider" && r["code"] == CODE && r["peer"] == peer)
            .map(|r| {
                (
                    r["p50_us"].as_u64().unwrap_or_default(),
                    r["p99_us"].as_u64().unwrap_or_default(),
                    r["calls"].as_u64().unwrap_or_default(),
                )
            })
    };
    let (me, them) = (
        t.nodes[provider].name.clone(),
        t.nodes[consumer].name.clone(),
    );
    if let (Some(own), Some(member)) = (median(&me), median(&them)) {
        println!(
            "provider's time per call (its call log): own p50 {} µs p99 {} µs ({} calls); member's p50 {} µs p99 {} µs ({} calls)",
            own.0, own.1, own.2, member.0, member.1, member.2
        );
        println!(
            "deciding a member's call (difference of the medians): {:.3} ms",
            (member.0 as f64 - own.0 as f64) / 1000.0
        );
    } else {
        eprintln!("no per-peer call statistics: {stats}");
    }
    t.stop_all()?;
    Ok(())
}
