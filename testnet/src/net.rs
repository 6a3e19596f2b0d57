//! A testnet on disk and its processes.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use huitong_config::keyfile;
use huitong_protocol::charter::CHARTER_LAYOUT_VERSION;
use huitong_protocol::{Charter, Member, MemberStatus, NodeId, Role, Uscc};
use serde::{Deserialize, Serialize};

/// An admin API answer of [`Testnet::call`].
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<u64>,
    /// The JSON body (a string when it is not JSON; null when empty).
    pub body: Value,
}
use serde_json::Value;

use crate::members::{members, MemberSpec};

/// The state file of a testnet.
pub const STATE_FILE: &str = "testnet.json";
/// A node's log file in its directory (rotated by size).
pub const LOG_FILE: &str = "node.log";
/// A node's stdout and stderr in its directory: what escapes the logger (a panic).
pub const OUT_FILE: &str = "node.out";
/// The federation name.
pub const FEDERATION: &str = "海门区";
/// MiB each testnet node keeps free on its file system (`storage.keep_free_mib`). The default
/// floor (the larger of 1 GiB and 5 % of the file system) suits a server; a testnet shares a
/// developer's or a CI runner's often fuller disk, where it would refuse every pull.
pub const KEEP_FREE_MIB: u64 = 256;

/// How to create a testnet.
#[derive(Clone, Debug)]
pub struct Options {
    /// Its directory.
    pub dir: PathBuf,
    /// Number of departments (besides hub and city).
    pub departments: usize,
    /// First port to try for node listeners.
    pub base_port: u16,
    /// Anti-entropy interval of every node.
    pub sync_interval_secs: u64,
    /// The `huitong` binary.
    pub bin: PathBuf,
    /// Keys of nodes that publish no address in the charter, as if behind NAT: only the hub
    /// (and nodes with addresses) can be dialled, so two hidden nodes reach each other only
    /// through the hub's circuit relay.
    pub hidden: Vec<String>,
    /// The charter's feed quota, entries an hour (default: the protocol's default).
    pub feed_quota: Option<u32>,
}

/// One node of the testnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Organisation name.
    pub name: String,
    /// Directory key.
    pub key: String,
    /// Role.
    pub role: String,
    /// USCC.
    pub uscc: String,
    /// Node directory.
    pub dir: PathBuf,
    /// PeerId.
    pub peer_id: String,
    /// Node key (hex).
    pub node_key: String,
    /// Listen port (QUIC and TCP).
    pub port: u16,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Publishes no address (see [`Options::hidden`]).
    #[serde(default)]
    pub hidden: bool,
}

/// A testnet.
#[derive(Serialize, Deserialize)]
pub struct Testnet {
    /// Its directory.
    pub dir: PathBuf,
    /// The `huitong` binary.
    pub bin: PathBuf,
    /// Its nodes.
    pub nodes: Vec<NodeInfo>,
    #[serde(skip)]
    children: Vec<Option<Child>>,
    #[serde(skip)]
    http: Option<reqwest::blocking::Client>,
    /// Extra environment variables per node index, for the processes started from now on
    /// (tests use them for audit deadlines and a hub's test-only faults).
    #[serde(skip)]
    env: std::collections::HashMap<usize, Vec<(String, String)>>,
}

fn port_free(p: u16) -> bool {
    TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
}

fn pick_port(next: &mut u16) -> anyhow::Result<u16> {
    while *next < 65000 {
        let p = *next;
        *next += 1;
        if port_free(p) {
            return Ok(p);
        }
    }
    bail!("no free port found for the testnet; pass a lower --base-port")
}

/// Whether a process with this pid is a huitong node running in `dir`.
pub fn alive(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has finished; it is only waiting to be reaped.
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            return false;
        }
    }
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("run") && cmdline.contains(&*dir.to_string_lossy())
}

impl Testnet {
    /// Creates node directories, an authority key and the signed charter (version 1).
    pub fn create(o: &Options) -> anyhow::Result<Testnet> {
        if o.dir.join(STATE_FILE).exists() {
            bail!("{} already holds a testnet; run `huitong testnet down --dir {}` and remove the directory, or choose another --dir", o.dir.display(), o.dir.display());
        }
        std::fs::create_dir_all(o.dir.join("nodes"))?;
        let authority = keyfile::generate()?;
        keyfile::write_new(&o.dir.join("authority.key"), &authority)?;
        let mut next = o.base_port;
        let mut nodes = Vec::new();
        for m in members(o.departments) {
            let port = pick_port(&mut next)?;
            nodes.push(Self::init_node(o, &m, port, &authority.public())?);
        }
        let charter = Charter {
            layout: CHARTER_LAYOUT_VERSION,
            federation: FEDERATION.into(),
            version: 1,
            issued_at_ms: now_ms(),
            authority: authority.public(),
            members: nodes
                .iter()
                .map(|n| {
                    Ok(Member {
                        uscc: Uscc::parse(&n.uscc)?,
                        name: n.name.clone(),
                        node_key: NodeId::from_hex(&n.node_key)?,
                        role: Role::parse(&n.role).unwrap_or(Role::Department),
                        addresses: if n.hidden {
                            Vec::new()
                        } else {
                            vec![
                                format!("/ip4/127.0.0.1/udp/{}/quic-v1", n.port),
                                format!("/ip4/127.0.0.1/tcp/{}", n.port),
                            ]
                        },
                        status: MemberStatus::Active,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            timezone: huitong_protocol::charter::DEFAULT_TIMEZONE.into(),
            witnesses: Default::default(),
            previous: None,
            closed: Vec::new(),
            feed_quota: o
                .feed_quota
                .map(|entries_per_hour| huitong_protocol::charter::FeedQuota { entries_per_hour })
                .unwrap_or_default(),
        };
        charter.check()?;
        let bytes = charter.seal(&authority).to_bytes();
        std::fs::write(o.dir.join("charter.cbor"), &bytes)?;
        for n in &nodes {
            std::fs::write(n.dir.join("charter.cbor"), &bytes)?;
        }
        let children = nodes.iter().map(|_| None).collect();
        let t = Testnet {
            dir: o.dir.clone(),
            bin: o.bin.clone(),
            nodes,
            children,
            http: None,
            env: Default::default(),
        };
        t.save()?;
        Ok(t)
    }

    fn init_node(
        o: &Options,
        m: &MemberSpec,
        port: u16,
        authority: &NodeId,
    ) -> anyhow::Result<NodeInfo> {
        let dir = o.dir.join("nodes").join(&m.key);
        let out = Command::new(&o.bin)
            .arg("--dir")
            .arg(&dir)
            .args([
                "init",
                "--name",
                &m.name,
                "--org-code",
                &m.uscc,
                "--role",
                m.role.as_str(),
            ])
            .args([
                "--federation",
                FEDERATION,
                "--authority-key",
                &authority.to_hex(),
            ])
            .args(["--listen", &format!("/ip4/127.0.0.1/udp/{port}/quic-v1")])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
            .args(["--api", "127.0.0.1:0", "--portal", "127.0.0.1:0", "--json"])
            .args(["--sync-interval", &o.sync_interval_secs.to_string()])
            .output()
            .with_context(|| format!("cannot run {}", o.bin.display()))?;
        if !out.status.success() {
            bail!(
                "huitong init for {} failed: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let mut config = huitong_config::Config::load(&dir)?;
        config.storage.keep_free_mib = Some(KEEP_FREE_MIB);
        std::fs::write(dir.join(huitong_config::CONFIG_FILE), config.to_toml())?;
        Ok(NodeInfo {
            name: m.name.clone(),
            key: m.key.clone(),
            role: m.role.as_str().into(),
            uscc: m.uscc.clone(),
            dir,
            peer_id: v["peer_id"].as_str().unwrap_or_default().into(),
            node_key: v["node_key"].as_str().unwrap_or_default().into(),
            port,
            pid: None,
            hidden: o.hidden.contains(&m.key),
        })
    }

    /// Loads a testnet's state file.
    pub fn load(dir: &Path) -> anyhow::Result<Testnet> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|_| {
            anyhow!(
                "no testnet in {}; start one with `huitong testnet up`",
                dir.display()
            )
        })?;
        let mut t: Testnet = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", dir.join(STATE_FILE).display()))?;
        t.children = t.nodes.iter().map(|_| None).collect();
        Ok(t)
    }

    /// Writes the state file.
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, self.dir.join(STATE_FILE))?;
        Ok(())
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i]
            .pid
            .is_some_and(|p| alive(p, &self.nodes[i].dir))
    }

    /// Sets an environment variable for node `i`'s process, from its next start.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        let vars = self.env.entry(i).or_default();
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.to_owned()));
    }

    /// Starts node `i` in the background (its own process group). It logs to `node.log`,
    /// rotated by size (`huitong run --log-file`: 16 MiB, 5 old files); what escapes the logger
    /// (a panic) goes to `node.out`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        let _ = std::fs::remove_file(n.dir.join("api.addr"));
        let _ = std::fs::remove_file(n.dir.join("portal.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join(OUT_FILE))?;
        let child = Command::new(&self.bin)
            .arg("--dir")
            .arg(&n.dir)
            .arg("run")
            .arg("--log-file")
            .arg(LOG_FILE)
            .envs(self.env.get(&i).into_iter().flatten().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.nodes[i].pid = Some(child.id());
        self.children[i] = Some(child);
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        self.save()
    }

    /// Stops node `i`: SIGTERM (or SIGKILL when `kill`), then waits for it to exit.
    pub fn stop(&mut self, i: usize, kill: bool) -> anyhow::Result<()> {
        let Some(pid) = self.nodes[i].pid else {
            return Ok(());
        };
        if alive(pid, &self.nodes[i].dir) {
            let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: kill(2) with a pid we started and checked in /proc; no memory involved.
            unsafe { libc::kill(pid as i32, sig) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.children[i].as_mut() {
                if c.try_wait()?.is_some() {
                    break;
                }
            } else if !alive(pid, &self.nodes[i].dir) {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.children[i] = None;
        self.nodes[i].pid = None;
        Ok(())
    }

    /// Stops every node.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.stop(i, false)?;
        }
        self.save()
    }

    fn http(&mut self) -> anyhow::Result<reqwest::blocking::Client> {
        if self.http.is_none() {
            self.http = Some(
                reqwest::blocking::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()?,
            );
        }
        self.http.clone().ok_or_else(|| anyhow!("no HTTP client"))
    }

    /// The admin API address of node `i`, once it has bound it.
    pub fn api_addr(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.nodes[i].dir.join("api.addr"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The sharing portal's address of node `i`, once it has bound it.
    pub fn portal_addr(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.nodes[i].dir.join("portal.addr"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// GET an admin API path of node `i` (e.g. `/status`).
    pub fn get(&mut self, i: usize, path: &str) -> anyhow::Result<Value> {
        self.api(i, path, None)
    }

    /// POST a JSON body to an admin API path of node `i`; the answer, or an error with it.
    pub fn post(&mut self, i: usize, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.api(i, path, Some(body))
    }

    /// One admin API request to node `i` with the node's admin token: a GET, or a POST of
    /// `body`; the answer, or an error with it.
    fn api(&mut self, i: usize, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let method = if body.is_some() { "POST" } else { "GET" };
        let a = self.call(i, method, path, None, body)?;
        if !(200..300).contains(&a.status) {
            bail!("{}: {}: {}", self.nodes[i].name, a.status, a.body);
        }
        Ok(a.body)
    }

    /// One admin API request to node `i` (`method` GET or POST, `path` under `/api/v1`) with
    /// bearer `token` (the node's admin token when `None`; `Some("")` sends none), whatever
    /// its status.
    pub fn call(
        &mut self,
        i: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let addr = self
            .api_addr(i)
            .ok_or_else(|| anyhow!("{} has no API address yet", self.nodes[i].name))?;
        let token = match token {
            Some(t) => t.to_owned(),
            None => std::fs::read_to_string(self.nodes[i].dir.join("api.token"))?,
        };
        let url = format!("http://{addr}/api/v1{path}");
        let http = self.http()?;
        let mut request = match method {
            "GET" => http.get(url),
            "POST" => http.post(url),
            other => bail!("method {other}: only GET and POST are used"),
        };
        if let Some(b) = body {
            request = request.json(b);
        }
        if !token.trim().is_empty() {
            request = request.bearer_auth(token.trim());
        }
        let resp = request.send()?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text()?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Runs a `huitong` CLI command against node `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(&self.bin)
            .arg("--dir")
            .arg(&self.nodes[i].dir)
            .args(args)
            .output()?)
    }

    /// Waits until `cond(i, status)` holds for every node in `which`.
    pub fn wait_status(
        &mut self,
        which: &[usize],
        timeout: Duration,
        what: &str,
        cond: impl Fn(usize, &Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut pending = Vec::new();
            for &i in which {
                match self.get(i, "/status") {
                    Ok(s) if cond(i, &s) => {}
                    _ => pending.push(self.nodes[i].name.clone()),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} on: {}",
                    pending.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node is connected to every other running node.
    pub fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pid.is_some())
            .collect();
        let hidden = running.iter().filter(|&&i| self.nodes[i].hidden).count() as u64;
        // Hidden nodes cannot dial each other; everyone else connects to everyone.
        let want: Vec<u64> = (0..self.nodes.len())
            .map(|i| {
                running.len() as u64
                    - 1
                    - if self.nodes[i].hidden {
                        hidden.saturating_sub(1)
                    } else {
                        0
                    }
            })
            .collect();
        let deadline = Instant::now() + timeout;
        // Poll in short rounds so a node that exits is reported at once, not at the deadline.
        loop {
            for &i in &running {
                if let Some(status) = self.exited(i) {
                    bail!(
                        "{} exited ({status}); see {} and {}",
                        self.nodes[i].name,
                        self.nodes[i].dir.join(LOG_FILE).display(),
                        self.nodes[i].dir.join(OUT_FILE).display()
                    );
                }
            }
            let round =
                Duration::from_secs(2).min(deadline.saturating_duration_since(Instant::now()));
            let r = self.wait_status(&running, round, "all peers connected", |i, s| {
                s["charter_version"].as_u64() >= Some(1)
                    && s["connected_peers"].as_u64() >= Some(want[i])
            });
            if r.is_ok() || Instant::now() >= deadline {
                return r.map_err(|e| anyhow!("{e} (after {timeout:?})"));
            }
        }
    }

    /// The exit status of node `i` if this testnet started it and it has exited.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.children[i]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Index of the node with this key (e.g. `police`).
    pub fn index(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.key == key)
    }

    /// Writes the demo entries as JSON files and publishes each from its provider's node.
    /// Returns how many were published. Providers not in this testnet are skipped.
    pub fn publish_demo(&mut self, progress: impl Fn(usize, usize, &str)) -> anyhow::Result<usize> {
        let demo_dir = self.dir.join("demo");
        std::fs::create_dir_all(&demo_dir)?;
        let entries: Vec<_> = crate::demo::ENTRIES
            .iter()
            .filter_map(|e| self.index(e.provider).map(|i| (i, e)))
            .collect();
        for (n, (i, e)) in entries.iter().enumerate() {
            let node = &self.nodes[*i];
            let json = crate::demo::to_json(e, &node.name, &node.uscc);
            let file = demo_dir.join(format!(
                "{}-{}-{:06}.json",
                node.key, e.classification, e.seq
            ));
            std::fs::write(&file, serde_json::to_vec_pretty(&json)?)?;
            let out = self.cli(*i, &["catalogue", "publish", &file.to_string_lossy()])?;
            if !out.status.success() {
                bail!(
                    "publishing {} failed: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            progress(n + 1, entries.len(), e.title);
        }
        Ok(entries.len())
    }

    /// Generates the demo datasets and publishes each from its department; `progress` hears
    /// each one. Returns how many were published.
    pub fn publish_datasets(&mut self, progress: impl Fn(&str)) -> anyhow::Result<usize> {
        let data_dir = self.dir.join("demo-data");
        std::fs::create_dir_all(&data_dir)?;
        let mut n = 0;
        for d in crate::datasets::DATASETS {
            let Some(i) = self.index(d.provider) else {
                continue;
            };
            let path = crate::datasets::write(d, &data_dir)?;
            for code in std::iter::once(d.code).chain(d.also.iter().copied()) {
                let out = self.cli(
                    i,
                    &[
                        "dataset",
                        "publish",
                        code,
                        "--from",
                        &path.to_string_lossy(),
                    ],
                )?;
                if !out.status.success() {
                    bail!(
                        "publishing {} as {code} failed: {}",
                        path.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                progress(String::from_utf8_lossy(&out.stdout).trim());
                n += 1;
            }
        }
        Ok(n)
    }

    /// A JSON summary of each node for `testnet status --json`.
    pub fn describe(&self) -> Vec<Value> {
        (0..self.nodes.len())
            .map(|i| {
                let n = &self.nodes[i];
                serde_json::json!({
                    "name": n.name, "role": n.role, "uscc": n.uscc, "dir": n.dir, "peer_id": n.peer_id,
                    "api": self.api_addr(i).map(|a| format!("http://{a}/api/v1")),
                    "portal": self.portal_addr(i).map(|a| format!("http://{a}/")),
                    "port": n.port, "pid": n.pid, "running": self.is_running(i),
                })
            })
            .collect()
    }
}

impl Drop for Testnet {
    /// Processes this value started itself (tests, benchmarks) are stopped with it; those
    /// recorded by `testnet up` and reloaded later are left to `testnet down`.
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if self.children[i].is_some() {
                let _ = self.stop(i, true);
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
