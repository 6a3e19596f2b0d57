//! `huitong-bench pull`: one department pulls a file version from another over loopback, timed
//! end to end (`huitong pull` from start until the output is fsynced and renamed), against
//! baselines measured in the same run on the same bytes. With `--table`, the 100,000-person
//! table (the demo 人口基本信息) instead, pulled as CSV and as Parquet, each pull by a department
//! that holds none of it; the baselines copy the file that pull wrote. Baselines:
//! - `tcp`: a raw TCP copy written to a file and fsynced (no crypto, no verification);
//! - `rsync`: rsync over ssh (Debian's openssh-server on loopback), with `--fsync`;
//! - `sendme`: iroh's verified transfer (`sendme send` / `sendme receive`, relay disabled).
//!
//! It also reports the peak RSS (VmHWM) of both node processes.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use huitong_testnet::{Options, Testnet};
use serde_json::json;

/// Pull benchmark options.
#[derive(clap::Args, Debug)]
pub(crate) struct PullArgs {
    /// Size of the file in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Baselines to measure: tcp, rsync, sendme (or none).
    #[arg(long, value_delimiter = ',', default_value = "tcp,rsync,sendme")]
    baselines: Vec<String>,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench-pull")]
    dir: PathBuf,
    /// First port to try (keep it below Linux's ephemeral range, 32768–60999).
    #[arg(long, default_value_t = 29000)]
    base_port: u16,
    /// Data planes to pull over, in this order, in the same run: `tls-tcp` (the provider's
    /// bulk data port) and `libp2p` (its port off: chunks on the libp2p connection).
    #[arg(long, value_delimiter = ',', default_value = "tls-tcp,libp2p")]
    planes: Vec<String>,
    /// Pull the 100,000-person table as CSV and Parquet instead of a file of `--size-mib`.
    #[arg(long)]
    table: bool,
    /// Times each pull and each baseline is measured; ratios compare the best of each (every
    /// time is printed).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// What the consumers pull, and into which output formats.
struct Published {
    code: &'static str,
    /// The bytes published, for the baselines of a file pull (a table's baselines copy what
    /// its pull wrote).
    source: Option<PathBuf>,
    /// Output formats: the file's extension and `--format` (none for a file).
    outputs: Vec<(&'static str, Option<&'static str>)>,
    /// Bytes a pull writes at most (output, and a table's chunks): see [`settle`].
    writes: u64,
}

/// The code of the benchmark's file and table entries.
const FILE_CODE: &str = "301001/000099";
const TABLE_CODE: &str = "101001/000098";

const MIB: f64 = 1024.0 * 1024.0;

fn random_file(path: &Path, mib: u64) -> anyhow::Result<()> {
    let mut src = std::fs::File::open("/dev/urandom")?.take(mib << 20);
    let mut dst = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    std::io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    Ok(())
}

/// User and system CPU seconds a process has used so far.
pub(crate) fn cpu_secs(pid: u32) -> Option<[f64; 2]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let secs = |i: usize| Some(f.get(i)?.parse::<f64>().ok()? / hz);
    Some([secs(11)?, secs(12)?])
}

/// Peak resident set size of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn pull(a: PullArgs) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("huitong");
    let _ = std::fs::remove_dir_all(&a.dir);
    let mut t = Testnet::create(&Options {
        dir: a.dir.clone(),
        // A table pull's consumer keeps the chunks: each table pull is another department's.
        departments: if a.table {
            1 + a.planes.len() * 2 * a.repeat.max(1)
        } else {
            2
        },
        base_port: a.base_port,
        sync_interval_secs: 5,
        bin,
        hidden: Vec::new(),
        feed_quota: None,
    })?;
    t.start_all()?;
    t.wait_healthy(Duration::from_secs(120))?;
    let provider = t.index("police").context("no police node")?;
    // A file's chunks are kept only in the output, so one consumer pulls it afresh each time;
    // a table's column chunks stay in the consumer's store, so each table pull is another's.
    let consumers: Vec<usize> = if a.table {
        (0..t.nodes.len())
            .filter(|&i| i != provider && t.nodes[i].key != "hub" && t.nodes[i].key != "city")
            .collect()
    } else {
        vec![t.index("market").context("no market node")?]
    };
    let published = if a.table {
        publish_table(&t, provider, &a.dir)?
    } else {
        publish_file(&t, provider, &a)?
    };
    let code = published.code;
    let expected_bytes = published.writes;
    let mut turn = 0usize;
    // (label, output, best seconds), and each output's size.
    let mut rates: Vec<(String, &str, f64)> = Vec::new();
    let mut sizes: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for plane in &a.planes {
        let data_listen = match plane.as_str() {
            "tls-tcp" => None,
            "libp2p" => Some("off".to_string()),
            other => bail!("unknown plane {other:?}; use tls-tcp or libp2p"),
        };
        // The provider restarts with its bulk data port on or off.
        let dir = t.nodes[provider].dir.clone();
        let mut config = huitong_config::Config::load(&dir)?;
        if config.network.data_listen != data_listen {
            config.network.data_listen = data_listen;
            std::fs::write(dir.join(huitong_config::CONFIG_FILE), config.to_toml())?;
            t.stop(provider, false)?;
            t.start(provider)?;
            t.wait_healthy(Duration::from_secs(120))?;
        }
        for (ext, format) in &published.outputs {
            let label = match format {
                Some(f) => format!("{plane}, {f}"),
                None => plane.clone(),
            };
            let mut best = f64::INFINITY;
            for run in 1..=a.repeat.max(1) {
                let consumer = *consumers
                    .get(turn % consumers.len())
                    .context("no consumer node")?;
                turn += 1;
                wait_for_version(&mut t, consumer, code)?;
                let pulled = pull_once(
                    &t,
                    (provider, consumer),
                    code,
                    (ext, *format),
                    (&a.dir, expected_bytes),
                )?;
                let s = &pulled.summary;
                match &published.source {
                    Some(_) if pulled.size != a.size_mib << 20 => {
                        bail!("the pulled file has the wrong size")
                    }
                    None if s["rows"] != TABLE_ROWS => {
                        bail!("the pulled table has {} rows, not {TABLE_ROWS}", s["rows"])
                    }
                    _ => {}
                }
                if s["data_plane"] != plane.as_str() {
                    bail!("asked for {plane}, the pull went over {}", s["data_plane"]);
                }
                if s["bytes_reused"] != 0 {
                    bail!("the consumer reused data it held: {s}");
                }
                best = best.min(pulled.secs);
                println!(
                    "[{label}] run {run}: {:.2} s ({:.0} MiB/s), fetch {} ms, write {} ms; CPU (user + system) provider {:.2} + {:.2} s, consumer {:.2} + {:.2} s; peak RSS provider {:.0} MiB, consumer {:.0} MiB",
                    pulled.secs,
                    pulled.size as f64 / MIB / pulled.secs,
                    s["fetch_ms"],
                    s["write_ms"],
                    pulled.cpu[0][0],
                    pulled.cpu[0][1],
                    pulled.cpu[1][0],
                    pulled.cpu[1][1],
                    pulled.rss[0],
                    pulled.rss[1],
                );
                if published.source.is_some() {
                    // A file's baselines copy the source: the next pull needs the room.
                    std::fs::remove_file(a.dir.join(format!("pulled.{ext}")))?;
                }
                sizes.insert(*ext, pulled.size);
            }
            let size = sizes.get(ext).copied().unwrap_or_default();
            println!(
                "[{label}] huitong pull (verify + write + fsync), best of {}: {best:.2} s ({:.0} MiB/s)",
                a.repeat.max(1),
                size as f64 / MIB / best
            );
            rates.push((label, ext, best));
        }
    }
    t.stop_all()?;

    let baselines: Vec<&String> = a
        .baselines
        .iter()
        .filter(|b| b.as_str() != "none")
        .collect();
    for (ext, _) in published.outputs.iter().filter(|_| !baselines.is_empty()) {
        let src = published
            .source
            .clone()
            .unwrap_or_else(|| a.dir.join(format!("pulled.{ext}")));
        let bytes = std::fs::metadata(&src)?.len() as f64;
        for b in &baselines {
            let dest = a.dir.join(format!("baseline-{b}.{ext}"));
            let mut times = Vec::new();
            for _ in 0..a.repeat.max(1) {
                settle(&a.dir, expected_bytes)?;
                let secs = match b.as_str() {
                    "tcp" => Some(tcp_copy(&src, &dest)?),
                    "rsync" => rsync(&a.dir, &src, &dest)?,
                    "sendme" => sendme(&a.dir, &src)?,
                    other => bail!("unknown baseline {other:?}; use tcp, rsync or sendme"),
                };
                let _ = std::fs::remove_file(&dest);
                match secs {
                    Some(s) => times.push(s),
                    None => break,
                }
            }
            let Some(best) = times.iter().copied().reduce(f64::min) else {
                println!("baseline {b}: not available on this machine (see stderr)");
                continue;
            };
            let all: Vec<String> = times.iter().map(|s| format!("{s:.3}")).collect();
            let r = bytes / MIB / best;
            println!(
                "baseline {b} ({ext}, {:.1} MiB), runs {} s; best {best:.3} s ({r:.0} MiB/s)",
                bytes / MIB,
                all.join(" / ")
            );
            for (label, _, secs) in rates.iter().filter(|(_, e, _)| e == ext) {
                println!("  huitong [{label}] / {b} = {:.2}x", best / secs);
            }
        }
    }
    Ok(())
}

/// One measured pull.
struct Pulled {
    secs: f64,
    size: u64,
    summary: serde_json::Value,
    /// User and system CPU seconds of the provider and the consumer during the pull.
    cpu: [[f64; 2]; 2],
    /// Peak RSS of the provider and the consumer (MiB).
    rss: [f64; 2],
}

/// Pulls `code` on `consumer` into `pulled.EXT` (as `format`), timed from the command's start
/// until it exits (the output fsynced and in place).
fn pull_once(
    t: &Testnet,
    (provider, consumer): (usize, usize),
    code: &str,
    (ext, format): (&str, Option<&str>),
    (dir, writes): (&Path, u64),
) -> anyhow::Result<Pulled> {
    let out = dir.join(format!("pulled.{ext}"));
    let out_s = out.to_string_lossy();
    let mut args = vec!["pull", code, "--out", &out_s, "--json"];
    if let Some(f) = format {
        args.extend(["--format", f]);
    }
    settle(dir, writes)?;
    let cpu0 = [provider, consumer].map(|i| t.nodes[i].pid.and_then(cpu_secs));
    let t0 = Instant::now();
    let o = cli_ok(t, consumer, &args)?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = [provider, consumer].map(|i| t.nodes[i].pid.and_then(cpu_secs));
    let used = |k: usize| match (cpu0[k], cpu1[k]) {
        (Some(a), Some(b)) => [b[0] - a[0], b[1] - a[1]],
        _ => [f64::NAN; 2],
    };
    let rss =
        [provider, consumer].map(|i| t.nodes[i].pid.and_then(peak_rss_mib).unwrap_or(f64::NAN));
    Ok(Pulled {
        secs,
        size: std::fs::metadata(&out)?.len(),
        summary: serde_json::from_slice(&o.stdout)?,
        cpu: [used(0), used(1)],
        rss,
    })
}

/// Rows of the benchmark's table.
const TABLE_ROWS: u64 = 100_000;

/// Waits until `consumer` sees a version of `code`.
fn wait_for_version(t: &mut Testnet, consumer: usize, code: &str) -> anyhow::Result<()> {
    let path = format!("/datasets/versions?code={}", code.replace('/', "%2F"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.get(consumer, &path)?[0]["versions"]
        .as_array()
        .is_none_or(|v| v.is_empty())
    {
        if Instant::now() > deadline {
            bail!("the consumer never saw the version of {code}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Publishes a file of random bytes (文件, 无条件共享).
fn publish_file(t: &Testnet, provider: usize, a: &PullArgs) -> anyhow::Result<Published> {
    let entry = json!({
        "classification": "301001", "title": "基准测试文件", "code": FILE_CODE,
        "abstract": "数据交换基准测试用的文件资源。",
        "format": {"category": "电子文件", "type": "bin"}, "items": [],
        "share_mode": "文件", "update_cycle": "不定期", "publish_date": "2026-11-27",
    });
    publish_entry(t, provider, &a.dir, entry)?;
    let src = a.dir.join("source.bin");
    eprintln!("writing {} MiB of random bytes …", a.size_mib);
    random_file(&src, a.size_mib)?;
    let bytes = (a.size_mib << 20) as f64;
    let t0 = Instant::now();
    let from = src.to_string_lossy();
    cli_ok(
        t,
        provider,
        &["dataset", "publish", FILE_CODE, "--file", "--from", &from],
    )?;
    let publish = t0.elapsed().as_secs_f64();
    println!(
        "publish (chunk + hash + store + fsync): {publish:.2} s ({:.0} MiB/s)",
        bytes / MIB / publish
    );
    if a.baselines.iter().all(|b| b == "none") {
        // Only the provider's chunks are needed from here on: leave room for large runs.
        std::fs::remove_file(&src)?;
    }
    Ok(Published {
        code: FILE_CODE,
        source: Some(src),
        outputs: vec![("bin", None)],
        writes: a.size_mib << 20,
    })
}

/// Publishes the 100,000-person table (库表, 无条件共享: no grant in the way).
fn publish_table(t: &Testnet, provider: usize, dir: &Path) -> anyhow::Result<Published> {
    let entry = json!({
        "classification": "101001", "title": "人口基本信息（基准测试）", "code": TABLE_CODE,
        "abstract": "数据交换基准测试用的人口基本信息表。",
        "format": {"category": "数据库", "type": "mysql"},
        "items": super::calls::population_items(),
        "share_mode": "库表", "update_cycle": "每日", "publish_date": "2026-12-03",
    });
    publish_entry(t, provider, dir, entry)?;
    let people = huitong_testnet::datasets::DATASETS
        .iter()
        .find(|d| d.file == "population.csv")
        .context("no population dataset")?;
    let csv = huitong_testnet::datasets::write(people, dir)?;
    let csv_bytes = std::fs::metadata(&csv)?.len();
    let t0 = Instant::now();
    let from = csv.to_string_lossy();
    cli_ok(
        t,
        provider,
        &["dataset", "publish", TABLE_CODE, "--from", &from],
    )?;
    println!(
        "publish {} rows ({:.1} MiB of CSV): {:.2} s",
        people.rows,
        csv_bytes as f64 / MIB,
        t0.elapsed().as_secs_f64()
    );
    Ok(Published {
        code: TABLE_CODE,
        source: None,
        outputs: vec![("csv", Some("csv")), ("parquet", Some("parquet"))],
        // The column chunks are a little larger than the CSV; the CSV written again.
        writes: 3 * csv_bytes,
    })
}

/// Publishes catalogue entry `entry` from `provider`, as its provider's, 无条件共享 (no grant in
/// the way) and 不予开放.
fn publish_entry(
    t: &Testnet,
    provider: usize,
    dir: &Path,
    mut entry: serde_json::Value,
) -> anyhow::Result<()> {
    let node = &t.nodes[provider];
    entry["provider_name"] = json!(node.name);
    entry["provider_code"] = json!(node.uscc);
    entry["share_type"] = json!("无条件共享");
    entry["open_type"] = json!("不予开放");
    let file = dir.join("entry.json");
    std::fs::write(&file, serde_json::to_vec(&entry)?)?;
    cli_ok(
        t,
        provider,
        &["catalogue", "publish", &file.to_string_lossy()],
    )?;
    Ok(())
}

/// Readies the machine for a measured transfer of `bytes`: every dirty page written out, so
/// none of them pays for the write-back of what ran before it (the publish, an earlier pull or
/// baseline); then `bytes` written to a scratch file in `dir` and deleted, so the transfer's
/// output lands on memory the kernel has used lately. On these VMs the first write into memory
/// not touched for a while costs several times more system time (measured with `dd` of 1 GiB:
/// 3.16 s, 2.72 s system, then 0.62 s), which fell on whatever ran first — the pulls — while
/// the baselines after them reused the pages of the pulls' deleted outputs.
fn settle(dir: &Path, bytes: u64) -> anyhow::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let scratch = dir.join("warm.scratch");
    {
        let mut f = std::fs::File::create(&scratch)?;
        let block = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
    }
    std::fs::remove_file(&scratch)?;
    // SAFETY: as above.
    unsafe { libc::sync() };
    Ok(())
}

fn cli_ok(t: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let o = t.cli(i, args)?;
    if !o.status.success() {
        bail!(
            "huitong {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(o)
}

/// Raw TCP copy on loopback into a file, fsynced.
fn tcp_copy(src: &Path, dest: &Path) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dest = dest.to_path_buf();
    let t0 = Instant::now();
    let receiver = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        let mut f = std::fs::File::create(&dest)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n])?;
        }
        f.sync_all()
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut f = std::fs::File::open(src)?;
    std::io::copy(&mut f, &mut s)?;
    drop(s);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(t0.elapsed().as_secs_f64())
}

/// rsync over ssh to a private sshd on loopback.
fn rsync(dir: &Path, src: &Path, dest: &Path) -> anyhow::Result<Option<f64>> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() || Command::new("rsync").arg("--version").output().is_err() {
        eprintln!("rsync baseline skipped: install openssh-server and rsync (apt-get install openssh-server rsync)");
        return Ok(None);
    }
    let ssh = dir.join("ssh");
    // Fresh keys each time (ssh-keygen asks before overwriting).
    let _ = std::fs::remove_dir_all(&ssh);
    std::fs::create_dir_all(&ssh)?;
    let key = ssh.join("id");
    let host = ssh.join("host");
    for (k, comment) in [(&key, "client"), (&host, "host")] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(k)
            .status()?;
        if !st.success() {
            bail!("ssh-keygen failed");
        }
    }
    std::fs::copy(ssh.join("id.pub"), ssh.join("authorized_keys"))?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let config = ssh.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nPidFile {}\nUsePAM no\n",
            host.display(),
            ssh.join("authorized_keys").display(),
            ssh.join("sshd.pid").display()
        ),
    )?;
    std::fs::create_dir_all("/run/sshd")?;
    let mut daemon = Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let ssh_cmd = format!(
        "ssh -p {port} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        key.display()
    );
    let t0 = Instant::now();
    let st = Command::new("rsync")
        .args(["--fsync", "-e", &ssh_cmd])
        .arg(src)
        .arg(format!("{user}@127.0.0.1:{}", dest.display()))
        .status()?;
    let secs = t0.elapsed().as_secs_f64();
    let _ = daemon.kill();
    let _ = daemon.wait();
    if !st.success() {
        eprintln!("rsync baseline failed ({st})");
        return Ok(None);
    }
    Ok(Some(secs))
}

/// sendme (iroh) with the relay disabled: direct loopback transfer, BLAKE3-verified.
fn sendme(dir: &Path, src: &Path) -> anyhow::Result<Option<f64>> {
    let bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/sendme"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("sendme"));
    if Command::new(&bin).arg("--version").output().is_err() {
        eprintln!("sendme baseline skipped: `cargo install sendme`");
        return Ok(None);
    }
    let send_dir = dir.join("sendme-send");
    let recv_dir = dir.join("sendme-recv");
    std::fs::create_dir_all(&send_dir)?;
    std::fs::create_dir_all(&recv_dir)?;
    let mut sender = Command::new(&bin)
        .args([
            "send",
            "--relay",
            "disabled",
            "--ticket-type",
            "addresses",
            "--no-progress",
        ])
        .arg(src)
        .current_dir(&send_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = sender.stdout.take().context("sendme stdout")?;
    let mut ticket = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
            ticket = Some(t.to_string());
            break;
        }
    }
    let Some(ticket) = ticket else {
        let _ = sender.kill();
        eprintln!("sendme baseline failed: no ticket printed");
        return Ok(None);
    };
    let t0 = Instant::now();
    let st = Command::new(&bin)
        .args(["receive", "--relay", "disabled", "--no-progress", &ticket])
        .current_dir(&recv_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let secs = t0.elapsed().as_secs_f64();
    let _ = sender.kill();
    let _ = sender.wait();
    let _ = std::fs::remove_dir_all(&recv_dir);
    let _ = std::fs::remove_dir_all(&send_dir);
    if !st.success() {
        eprintln!("sendme baseline failed ({st})");
        return Ok(None);
    }
    Ok(Some(secs))
}
