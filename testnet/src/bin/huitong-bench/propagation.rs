//! `propagation --nodes N`: publish on one node → stored by every other node.
//!
//! Every node runs with `huitong_node::feeds` at debug level, so its log says when it stored
//! each feed entry (`stored feed entry feed=… seq=…`, written after the commit). The bench
//! notes the wall-clock time just before each publish request and reads the nodes' logs (only
//! the bytes appended since the last read) until every node has stored the entry: the latency
//! per node is the log line's time minus the publish time, both from this machine's clock.
//! Reading logs costs the nodes nothing, unlike polling 200 HTTP APIs, which on a 2-core
//! machine was both the measurement's resolution and a load of its own.
//!
//! Before publishing, it measures what the idle testnet costs: the CPU all node processes use
//! over `--idle-secs` once every node is connected to every other.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use huitong_testnet::{Options, Testnet};
use serde_json::json;

use crate::percentile;
use crate::pull::cpu_secs;

/// Propagation benchmark options.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Total node processes (hub + departments + city).
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Number of publications to time.
    #[arg(long, default_value_t = 20)]
    publications: usize,
    /// Seconds of idle CPU to measure once the testnet is connected (0: skip).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench")]
    dir: PathBuf,
    /// First port to try (below Linux's ephemeral range, 32768–60999, so that no outgoing
    /// connection takes a node's port before it starts).
    #[arg(long, default_value_t = 28000)]
    base_port: u16,
}

/// The log filter of every node: the default level, and each stored feed entry.
const LOG_FILTER: &str = "info,huitong_node::feeds=debug";

/// How long one publication may take to reach every node.
const DEADLINE: Duration = Duration::from_secs(120);

pub(crate) fn propagation(a: Args) -> anyhow::Result<()> {
    if a.nodes < 3 {
        bail!("--nodes must be at least 3");
    }
    let bin = std::env::current_exe()?.with_file_name("huitong");
    let _ = std::fs::remove_dir_all(&a.dir);
    let mut t = Testnet::create(&Options {
        dir: a.dir.clone(),
        departments: a.nodes - 2,
        base_port: a.base_port,
        sync_interval_secs: 10,
        bin,
        hidden: Vec::new(),
        feed_quota: None,
    })?;
    let n = t.nodes.len();
    for i in 0..n {
        t.set_env(i, "RUST_LOG", LOG_FILTER);
    }
    let started = Instant::now();
    t.start_all()?;
    t.wait_healthy(Duration::from_secs(1800))
        .context("testnet not healthy")?;
    eprintln!(
        "{n} nodes connected (full mesh) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pids: Vec<u32> = t.nodes.iter().filter_map(|n| n.pid).collect();
    if a.idle_secs > 0 {
        idle_cpu(&pids, a.idle_secs);
    }
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut logs: Vec<LogTail> = t
        .nodes
        .iter()
        .map(|n| LogTail::new(n.dir.join("node.log")))
        .collect();
    let mut per_node = Vec::new();
    let mut all_nodes = Vec::new();
    let mut publish_ms = Vec::new();
    for k in 0..a.publications {
        let p = k % n;
        let node = &t.nodes[p];
        let addr = t.api_addr(p).context("no API address")?;
        let token = std::fs::read_to_string(node.dir.join("api.token"))?;
        let code = format!("301001/{:06}", 100 + k);
        let entry = json!({
            "classification": "301001", "title": format!("基准测试条目{k}"), "code": code,
            "provider_name": node.name, "provider_code": node.uscc, "abstract": "传播时延基准测试。",
            "format": {"category": "数据库", "type": "mysql"},
            "items": [{"name": "编号", "data_type": "C", "length": 20}],
            "share_type": "无条件共享", "share_mode": "库表", "open_type": "不予开放",
            "update_cycle": "每日", "publish_date": "2026-11-27",
        });
        let t0 = wall_ms();
        let sent = Instant::now();
        let r = http
            .post(format!("http://{addr}/api/v1/catalogue"))
            .bearer_auth(token.trim())
            .json(&entry)
            .send()?;
        if !r.status().is_success() {
            bail!("publish failed: {}", r.text()?);
        }
        publish_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        let seq = r.json::<serde_json::Value>()?["seq"]
            .as_u64()
            .context("the publish answer has no seq")?;
        let needle = format!("stored feed entry feed={} seq={seq}", node.node_key);
        let mut seen: Vec<Option<f64>> = vec![None; n];
        seen[p] = Some(0.0);
        let deadline = Instant::now() + DEADLINE;
        while seen.iter().any(Option::is_none) {
            if Instant::now() > deadline {
                let missing = seen.iter().filter(|s| s.is_none()).count();
                bail!("publication {k} not stored by {missing} nodes after {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
            for (i, log) in logs.iter_mut().enumerate() {
                if seen[i].is_some() {
                    continue;
                }
                if let Some(at) = log.find(&needle)? {
                    seen[i] = Some(at.saturating_sub(t0) as f64);
                }
            }
        }
        let lat: Vec<f64> = seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != p)
            .filter_map(|(_, s)| *s)
            .collect();
        all_nodes.push(lat.iter().cloned().fold(0.0, f64::max));
        per_node.extend(lat);
    }
    for v in [&mut per_node, &mut all_nodes, &mut publish_ms] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "nodes={n} publications={} samples={}",
        a.publications,
        per_node.len()
    );
    println!(
        "per-node visibility ms: p50={:.0} p99={:.0} max={:.0}",
        percentile(&per_node, 50.0),
        percentile(&per_node, 99.0),
        percentile(&per_node, 100.0)
    );
    println!(
        "all-nodes visibility ms: p50={:.0} p99={:.0}",
        percentile(&all_nodes, 50.0),
        percentile(&all_nodes, 99.0)
    );
    println!(
        "publish request (included above) ms: p50={:.0} p99={:.0}",
        percentile(&publish_ms, 50.0),
        percentile(&publish_ms, 99.0)
    );
    t.stop_all()?;
    Ok(())
}

/// Prints the CPU all node processes used over `secs` seconds, in cores and per node.
fn idle_cpu(pids: &[u32], secs: u64) {
    let total = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|&p| cpu_secs(p))
            .map(|[u, s]| u + s)
            .sum()
    };
    let before = total(pids);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let used = total(pids) - before;
    let cores = used / t0.elapsed().as_secs_f64();
    println!(
        "idle testnet: {cores:.2} cores busy over {secs} s ({:.1} % of one core per node)",
        cores * 100.0 / pids.len().max(1) as f64
    );
}

/// Milliseconds since the Unix epoch, now.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node's log read from where the last read stopped; remembers the lines it has seen.
struct LogTail {
    path: PathBuf,
    offset: u64,
    /// What was read after the last full line.
    partial: String,
    /// Time (ms since the epoch) of each "stored feed entry" line, by its message.
    stored: HashMap<String, u64>,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: String::new(),
            stored: HashMap::new(),
        }
    }

    /// When the log says the node stored what `needle` describes, if it does yet.
    fn find(&mut self, needle: &str) -> anyhow::Result<Option<u64>> {
        self.read_new()?;
        Ok(self.stored.get(needle).copied())
    }

    fn read_new(&mut self) -> anyhow::Result<()> {
        let mut f = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let len = f.metadata()?.len();
        if len < self.offset {
            // Rotated: the new file starts from the beginning.
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(end + 1);
        for line in self.partial.lines() {
            let Some(at) = line.find("stored feed entry ") else {
                continue;
            };
            if let Some(ms) = line.split(' ').next().and_then(rfc3339_ms) {
                self.stored.insert(line[at..].trim_end().to_owned(), ms);
            }
        }
        self.partial = rest;
        Ok(())
    }
}

/// A node log's time (`2026-12-03T18:10:21.843806Z`) → milliseconds since the Unix epoch.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_read_as_utc_milliseconds() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00.000000Z"), Some(0));
        // `date -u -d 2026-12-03T18:10:21.843806Z +%s%3N`
        assert_eq!(
            rfc3339_ms("2026-12-03T18:10:21.843806Z"),
            Some(1_796_321_421_843)
        );
        assert_eq!(
            rfc3339_ms("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199_500)
        );
        assert_eq!(rfc3339_ms("garbage"), None);
    }
}
