//! `huitong-bench pull`: one department pulls a file version from another over loopback, timed
//! end to end (`huitong pull` from start until the output is fsynced and renamed), against
//! baselines measured in the same run on the same bytes:
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
    /// First port to try.
    #[arg(long, default_value_t = 49000)]
    base_port: u16,
    /// Data planes to pull over, in this order, in the same run: `tls-tcp` (the provider's
    /// bulk data port) and `libp2p` (its port off: chunks on the libp2p connection).
    #[arg(long, value_delimiter = ',', default_value = "tls-tcp,libp2p")]
    planes: Vec<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn random_file(path: &Path, mib: u64) -> anyhow::Result<()> {
    let mut src = std::fs::File::open("/dev/urandom")?.take(mib << 20);
    let mut dst = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    std::io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    Ok(())
}

/// User + system CPU seconds a process has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
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
        departments: 2,
        base_port: a.base_port,
        sync_interval_secs: 5,
        bin,
        hidden: Vec::new(),
        feed_quota: None,
    })?;
    t.start_all()?;
    t.wait_healthy(Duration::from_secs(120))?;
    let provider = t.index("police").context("no police node")?;
    let consumer = t.index("market").context("no market node")?;
    let node = &t.nodes[provider];
    let entry = json!({
        "classification": "301001", "title": "基准测试文件", "code": "301001/000099",
        "provider_name": node.name, "provider_code": node.uscc,
        "abstract": "数据交换基准测试用的文件资源。",
        "format": {"category": "电子文件", "type": "bin"}, "items": [],
        "share_type": "无条件共享", "share_mode": "文件", "open_type": "不予开放",
        "update_cycle": "不定期", "publish_date": "2026-11-27",
    });
    let entry_file = a.dir.join("entry.json");
    std::fs::write(&entry_file, serde_json::to_vec(&entry)?)?;
    cli_ok(
        &t,
        provider,
        &["catalogue", "publish", &entry_file.to_string_lossy()],
    )?;

    let src = a.dir.join("source.bin");
    eprintln!("writing {} MiB of random bytes …", a.size_mib);
    random_file(&src, a.size_mib)?;
    let bytes = (a.size_mib << 20) as f64;
    let t0 = Instant::now();
    cli_ok(
        &t,
        provider,
        &[
            "dataset",
            "publish",
            "301001/000099",
            "--file",
            "--from",
            &src.to_string_lossy(),
        ],
    )?;
    let publish = t0.elapsed().as_secs_f64();
    let no_baselines = a.baselines.iter().all(|b| b == "none");
    if no_baselines {
        // Only the provider's chunks are needed from here on: leave room for large runs.
        std::fs::remove_file(&src)?;
    }
    eprintln!("published in {publish:.2} s; waiting for the consumer to see the version …");
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.get(consumer, "/datasets/versions?code=301001%2F000099")?[0]["versions"]
        .as_array()
        .is_none_or(|v| v.is_empty())
    {
        if Instant::now() > deadline {
            bail!("the consumer never saw the version");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    println!(
        "publish (chunk + hash + store + fsync): {publish:.2} s ({:.0} MiB/s)",
        bytes / MIB / publish
    );
    let mut rates = Vec::new();
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
        let out = a.dir.join("pulled.bin");
        settle();
        let cpu0 = [provider, consumer].map(|i| t.nodes[i].pid.and_then(cpu_secs));
        let t0 = Instant::now();
        let o = cli_ok(
            &t,
            consumer,
            &[
                "pull",
                "301001/000099",
                "--out",
                &out.to_string_lossy(),
                "--json",
            ],
        )?;
        let pull = t0.elapsed().as_secs_f64();
        let cpu1 = [provider, consumer].map(|i| t.nodes[i].pid.and_then(cpu_secs));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        if std::fs::metadata(&out)?.len() != a.size_mib << 20 {
            bail!("the pulled file has the wrong size");
        }
        if summary["data_plane"] != plane.as_str() {
            bail!(
                "asked for {plane}, the pull went over {}",
                summary["data_plane"]
            );
        }
        let rss_provider = t.nodes[provider].pid.and_then(peak_rss_mib);
        let rss_consumer = t.nodes[consumer].pid.and_then(peak_rss_mib);
        std::fs::remove_file(&out)?;
        // The consumer keeps chunks of a file only in its output: the next plane fetches
        // everything again.
        let this = bytes / MIB / pull;
        rates.push((plane.clone(), this));
        println!(
            "[{plane}] size={} MiB route={} fetch={} ms write={} ms",
            a.size_mib, summary["route"], summary["fetch_ms"], summary["write_ms"]
        );
        println!("[{plane}] huitong pull (verify + write + fsync): {pull:.2} s ({this:.0} MiB/s)");
        let used = |k: usize| match (cpu0[k], cpu1[k]) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        println!(
            "[{plane}] CPU during the pull: provider {:.2} s, consumer {:.2} s (of {:.2} s on 2 cores)",
            used(0),
            used(1),
            2.0 * pull
        );
        println!(
            "[{plane}] peak RSS: provider {:.0} MiB, consumer {:.0} MiB (the consumer's since its start)",
            rss_provider.unwrap_or(f64::NAN),
            rss_consumer.unwrap_or(f64::NAN)
        );
    }
    t.stop_all()?;

    for b in a.baselines.iter().filter(|b| b.as_str() != "none") {
        let dest = a.dir.join(format!("baseline-{b}.bin"));
        settle();
        let secs = match b.as_str() {
            "tcp" => Some(tcp_copy(&src, &dest)?),
            "rsync" => rsync(&a.dir, &src, &dest)?,
            "sendme" => sendme(&a.dir, &src)?,
            other => bail!("unknown baseline {other:?}; use tcp, rsync or sendme"),
        };
        let _ = std::fs::remove_file(&dest);
        match secs {
            Some(s) => {
                let r = bytes / MIB / s;
                println!("baseline {b}: {s:.2} s ({r:.0} MiB/s)");
                for (plane, rate) in &rates {
                    println!("  huitong [{plane}] / {b} = {:.2}x", rate / r);
                }
            }
            None => println!("baseline {b}: not available on this machine (see stderr)"),
        }
    }
    Ok(())
}

/// Writes every dirty page out before a measured transfer, so none of them pays for the
/// write-back of what ran before it (the publish, an earlier pull or baseline).
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
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
