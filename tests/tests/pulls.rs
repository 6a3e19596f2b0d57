//! Issue #10, point 10, with real nodes over real sockets: a pull belongs to the node, not to
//! the `huitong pull` process that started it. The CLI is killed (`kill -9`) while the pull
//! connects, fetches and writes: the pull goes on, and the same command run again attaches to
//! it (it used to start a second job racing on one partial file: `<out>: No such file or
//! directory`); the output ends complete and byte-exact. Another pull into the same output is
//! refused, naming the running one. Ctrl-C says the pull goes on in the node;
//! `--cancel-on-interrupt` cancels it; `huitong pulls` lists and `huitong pulls cancel` cancels,
//! removing the partial output.
//!
//! A test-only fault (`pull-hold:<phase>` in the consumer's `faults` file) holds a pull at the
//! start of a phase, so the CLI is killed in a known phase; nothing else is changed.
//!
//! Review 10, M5: a FIFO where an earlier pull's output was does not hang later pulls (the
//! earlier output is read only if it is a regular file), and a pull whose verification is stuck
//! in a read (the `pull-stall:verifying` fault, deaf to cancels like a hung mount) still ends on
//! `huitong pulls cancel` and releases the chunk-store lease (`huitong gc` runs).

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use anyhow::{bail, Context};
use huitong_testnet::Testnet;
use huitong_tests::data::{self, spawn_pull};
use huitong_tests::{cli_ok, start, wait_until};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const CODE: &str = "301001/000011";
const WAIT: Duration = Duration::from_secs(120);

/// Switches the `pull-hold` fault of node `i` on for these phases (none: off).
fn hold(net: &Testnet, i: usize, phases: &[&str]) -> anyhow::Result<()> {
    let lines: String = phases.iter().map(|p| format!("pull-hold:{p}\n")).collect();
    std::fs::write(net.nodes[i].dir.join("faults"), lines)?;
    Ok(())
}

/// The pull into `out` on node `i` that the node lists last (the newest).
fn job_into(net: &mut Testnet, i: usize, out: &Path) -> anyhow::Result<Option<Value>> {
    let jobs = net.get(i, "/pulls")?;
    Ok(jobs
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|j| j["out"].as_str() == Some(&*out.to_string_lossy()))
        .cloned())
}

/// Waits until node `i` lists a pull into `out` in `phase`; returns it.
fn wait_phase(net: &mut Testnet, i: usize, out: &Path, phase: &str) -> anyhow::Result<Value> {
    let mut found = None;
    wait_until(
        WAIT,
        &format!("a pull into {} in phase {phase}", out.display()),
        || {
            found = job_into(net, i, out)?.filter(|j| j["phase"] == phase);
            Ok(found.is_some())
        },
    )?;
    found.context("no pull")
}

/// Waits until `n` later starts have attached to pull `id` on node `i`.
fn wait_attached(net: &mut Testnet, i: usize, id: u64, n: u64) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("{n} CLIs attached to pull {id}"), || {
        Ok(net.get(i, &format!("/pulls/{id}"))?["attached"].as_u64() >= Some(n))
    })
}

/// `kill -9` of a `huitong pull` process (not of the node).
fn kill9(mut child: Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Sends `signal` to a `huitong pull` process and returns how it ended.
fn signal(child: Child, signal: i32) -> anyhow::Result<Output> {
    // SAFETY: kill(2) on the pid of a child process this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    Ok(child.wait_with_output()?)
}

/// Waits for a pull process; fails with its stderr unless it succeeded. Returns its summary and
/// its stderr.
fn finished(child: Child) -> anyhow::Result<(Value, String)> {
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("pull failed: {err}");
    }
    Ok((serde_json::from_slice(&out.stdout)?, err))
}

fn id_of(job: &Value) -> anyhow::Result<u64> {
    job["id"].as_u64().context("pull id")
}

fn no_partial_left(out: &Path) {
    let left = huitong_node::partial::existing(out);
    assert!(left.is_empty(), "partial files left: {left:?}");
}

#[test]
fn killed_or_interrupted_cli_leaves_one_pull_per_output() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = std::fs::canonicalize(f.tmp.path())?;
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let size = 160 * MIB;
    let src =
        data::publish_file_resource(net, &dir, provider, 11, "拉取任务测试文件", size, consumer)?;
    let out: PathBuf = dir.join("pulled.bin");
    let out_s = out.to_string_lossy().to_string();
    let args = [CODE, "--out", out_s.as_str()];

    // 1. The CLI is killed while its pull connects: the pull waits in the node; the same pull
    //    attaches to it; another pull into the same output is refused, naming it.
    hold(net, consumer, &["connecting"])?;
    let first = spawn_pull(net, consumer, &args)?;
    let job = wait_phase(net, consumer, &out, "connecting")?;
    let id = id_of(&job)?;
    kill9(first)?;
    assert_eq!(
        job_into(net, consumer, &out)?.map(|j| j["id"].clone()),
        Some(id.into())
    );
    let again = spawn_pull(net, consumer, &args)?;
    wait_attached(net, consumer, id, 1)?;
    let other = data::pull_refused(net, consumer, &[CODE, "--out", &out_s, "--format", "jsonl"])?;
    assert!(
        other.contains(&format!("pull {id} ("))
            && other.contains(&format!("huitong pulls cancel {id}")),
        "{other}"
    );
    hold(net, consumer, &[])?;
    let (s, err) = finished(again)?;
    assert!(
        err.contains(&format!("attached to pull {id} already running")),
        "{err}"
    );
    assert_eq!(s["bytes"].as_u64(), Some(size), "{s}");
    assert!(
        data::same_bytes(&src, &out)?,
        "byte-exact after the killed CLI"
    );
    no_partial_left(&out);
    std::fs::remove_file(&out)?;

    // 2. Killed mid-fetch, twice: the same pull attaches (or, if the first ended meanwhile,
    //    completes again), never racing on one partial file.
    for round in 0..2 {
        let before = job_into(net, consumer, &out)?.map_or(Ok(0), |j| id_of(&j))?;
        let first = spawn_pull(net, consumer, &args)?;
        let mut id = 0;
        wait_until(
            WAIT,
            "the pull to fetch a third of the file (or end)",
            || {
                let Some(j) =
                    job_into(net, consumer, &out)?.filter(|j| j["id"].as_u64() > Some(before))
                else {
                    return Ok(false);
                };
                id = id_of(&j)?;
                Ok(j["bytes_done"].as_u64() >= Some(size / 3)
                    || ["done", "failed", "cancelled"].contains(&j["phase"].as_str().unwrap_or("")))
            },
        )?;
        kill9(first)?;
        let (s, err) = finished(spawn_pull(net, consumer, &args)?)?;
        assert!(!err.contains("No such file"), "round {round}: {err}");
        // Either it attached, or the first pull had ended before it asked: never two at once.
        let attached = err.contains(&format!("attached to pull {id}"));
        let first_phase = net.get(consumer, &format!("/pulls/{id}"))?["phase"].clone();
        assert!(
            attached || first_phase == "done",
            "round {round}: {first_phase} {err}"
        );
        eprintln!("round {round}: the second pull attached: {attached}");
        assert_eq!(s["bytes"].as_u64(), Some(size));
        assert!(data::same_bytes(&src, &out)?, "round {round}: byte-exact");
        no_partial_left(&out);
        std::fs::remove_file(&out)?;
    }

    // 3. Killed while the output is written: the pull finishes it; the same pull attaches.
    hold(net, consumer, &["writing"])?;
    let first = spawn_pull(net, consumer, &args)?;
    let id = id_of(&wait_phase(net, consumer, &out, "writing")?)?;
    kill9(first)?;
    let again = spawn_pull(net, consumer, &args)?;
    wait_attached(net, consumer, id, 1)?;
    assert_eq!(
        net.get(consumer, &format!("/pulls/{id}"))?["phase"],
        "writing"
    );
    hold(net, consumer, &[])?;
    let (_, err) = finished(again)?;
    assert!(err.contains(&format!("attached to pull {id}")), "{err}");
    assert!(
        data::same_bytes(&src, &out)?,
        "byte-exact after a CLI killed while writing"
    );
    no_partial_left(&out);
    std::fs::remove_file(&out)?;

    // 4. Ctrl-C: the CLI says the pull goes on in the node, and `huitong pulls` shows it;
    //    `huitong pulls cancel` stops it and removes its partial output.
    hold(net, consumer, &["fetching"])?;
    let first = spawn_pull(net, consumer, &args)?;
    let id = id_of(&wait_phase(net, consumer, &out, "fetching")?)?;
    assert!(
        !huitong_node::partial::existing(&out).is_empty(),
        "the pull's partial output exists"
    );
    let ended = signal(first, libc::SIGINT)?;
    let err = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("pull {id} goes on in the node"))
            && err.contains(&format!("`huitong pulls cancel {id}` stops it")),
        "{err}"
    );
    let listed = cli_ok(net, consumer, &["pulls"])?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .with_context(|| format!("pull {id} not listed:\n{text}"))?;
    assert!(
        line.contains(CODE) && line.contains(&out_s) && line.contains("fetching"),
        "{line}"
    );
    let cancelled = cli_ok(net, consumer, &["pulls", "cancel", &id.to_string()])?;
    assert!(
        String::from_utf8_lossy(&cancelled.stdout).contains(&format!("cancelled pull {id}")),
        "{}",
        String::from_utf8_lossy(&cancelled.stdout)
    );
    assert_eq!(
        net.get(consumer, &format!("/pulls/{id}"))?["phase"],
        "cancelled"
    );
    assert!(!out.exists());
    no_partial_left(&out);
    let again = net.cli(consumer, &["pulls", "cancel", &id.to_string()])?;
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already ended (cancelled)"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // 5. With --cancel-on-interrupt, SIGTERM cancels the pull.
    let mut with_cancel = args.to_vec();
    with_cancel.push("--cancel-on-interrupt");
    let first = spawn_pull(net, consumer, &with_cancel)?;
    let id = id_of(&wait_phase(net, consumer, &out, "fetching")?)?;
    let ended = signal(first, libc::SIGTERM)?;
    let err = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(143), "{err}");
    assert!(err.contains(&format!("cancelled pull {id}")), "{err}");
    assert_eq!(
        net.get(consumer, &format!("/pulls/{id}"))?["phase"],
        "cancelled"
    );
    no_partial_left(&out);

    // The same pull afterwards completes; the list shows every pull with its end.
    hold(net, consumer, &[])?;
    let (s, _) = finished(spawn_pull(net, consumer, &args)?)?;
    assert_eq!(s["bytes"].as_u64(), Some(size));
    assert!(data::same_bytes(&src, &out)?);
    let jobs = net.get(consumer, "/pulls")?;
    let phases: Vec<&str> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["phase"].as_str())
        .collect();
    assert_eq!(
        phases.iter().filter(|p| **p == "cancelled").count(),
        2,
        "{jobs}"
    );
    assert!(
        phases.iter().all(|p| *p == "done" || *p == "cancelled") && phases.len() >= 7,
        "{jobs}"
    );
    Ok(())
}

/// Review of issue #10 (M8): under the shipped systemd unit the node has its own /tmp, so a
/// pull to `/tmp/x.csv` was written into the node's private /tmp and reported as done. The CLI
/// now sends the identity of the directory (and of a publish's input file) it sees, and the node
/// refuses a path where it sees something else, saying why and what to use instead. Here the
/// "other view" is a request naming another directory's identity, as such a CLI would send.
#[test]
fn paths_the_node_sees_differently_from_the_cli_are_refused() -> anyhow::Result<()> {
    let mut f = start(1, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let node = 1;
    let elsewhere = tempfile::tempdir()?;
    let id = |p: &Path| -> anyhow::Result<Value> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p)?;
        Ok(serde_json::json!({"dev": m.dev(), "ino": m.ino()}))
    };
    let pull = |out_dir_seen: Value| {
        serde_json::json!({
            "code": CODE,
            "out": dir.join("x.csv"),
            "out_dir_seen": out_dir_seen,
        })
    };
    let err = net
        .post(node, "/pulls", &pull(id(elsewhere.path())?))
        .expect_err("a directory the node sees differently")
        .to_string();
    assert!(
        err.contains("another directory") && err.contains("/srv/huitong-exchange"),
        "{err}"
    );

    data::publish_entry(
        net,
        &dir,
        node,
        &huitong_tests::entry(net, node, 11, "交换目录测试"),
    )?;
    let input = dir.join("input.bin");
    std::fs::write(&input, b"some bytes")?;
    let other = elsewhere.path().join("input.bin");
    std::fs::write(&other, b"other bytes")?;
    let publish = |path_seen: Value| serde_json::json!({"code": CODE, "path": input, "file": true, "path_seen": path_seen});
    let err = net
        .post(node, "/datasets", &publish(id(&other)?))
        .expect_err("a file the node sees differently")
        .to_string();
    assert!(err.contains("another file"), "{err}");
    // Seen alike, both go ahead (the publish is done; the pull is accepted as a job).
    net.post(node, "/datasets", &publish(id(&input)?))?;
    net.post(node, "/pulls", &pull(id(&dir)?))?;
    Ok(())
}

/// Review 10, M5 (see the module doc).
#[test]
fn a_fifo_at_an_earlier_output_or_a_stuck_verification_does_not_hold_pulls() -> anyhow::Result<()> {
    const CODE: &str = "301001/000012";
    let mut f = start(2, 5)?;
    let dir = std::fs::canonicalize(f.tmp.path())?;
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let size = 8 * MIB;
    let v1 =
        data::publish_file_resource(net, &dir, provider, 12, "先前输出测试文件", size, consumer)?;
    let (out1, out2, out3) = (
        dir.join("out1.bin"),
        dir.join("out2.bin"),
        dir.join("out3.bin"),
    );
    let s = data::pull(net, consumer, &[CODE, "--out", &out1.to_string_lossy()])?;
    assert_eq!(s["bytes_fetched"].as_u64(), Some(size), "{s}");

    // The earlier output moves away; a FIFO takes its place.
    std::fs::remove_file(&out1)?;
    let status = std::process::Command::new("mkfifo").arg(&out1).status()?;
    assert!(status.success(), "mkfifo {}", out1.display());

    // Version 2 shares every chunk but one middle MiB with version 1, so the pull looks for
    // them in the recorded output, the FIFO. It used to wait in open(2) for ever.
    let v2 = dir.join("v2.bin");
    let mut bytes = std::fs::read(&v1)?;
    for b in &mut bytes[(4 * MIB) as usize..(5 * MIB) as usize] {
        *b ^= 0x5a;
    }
    std::fs::write(&v2, &bytes)?;
    data::publish(net, provider, CODE, &v2, &["--file"])?;
    data::wait_version(net, consumer, CODE, 2)?;
    let (s, _) = data::pull_within(
        net,
        consumer,
        &[CODE, "--out", &out2.to_string_lossy()],
        Duration::from_secs(60),
    )?;
    assert_eq!(
        s["bytes_fetched"].as_u64(),
        Some(size),
        "nothing reused from a FIFO: {s}"
    );
    assert!(data::same_bytes(&v2, &out2)?, "byte-exact");
    let meta = std::fs::symlink_metadata(&out1)?;
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()),
        "the FIFO is left alone"
    );

    // A verification stuck in a read: a cancel ends the pull at once, frees its output and the
    // chunk-store lease (GC runs), and leaves no partial file.
    std::fs::write(
        net.nodes[consumer].dir.join("faults"),
        "pull-stall:verifying\n",
    )?;
    let out3_s = out3.to_string_lossy().to_string();
    let stuck = spawn_pull(net, consumer, &[CODE, "--out", &out3_s])?;
    let id = id_of(&wait_phase(net, consumer, &out3, "verifying")?)?;
    cli_ok(net, consumer, &["pulls", "cancel", &id.to_string()])?;
    wait_until(
        Duration::from_secs(30),
        &format!("pull {id} to end as cancelled while its verification is stuck"),
        || Ok(net.get(consumer, &format!("/pulls/{id}"))?["phase"] == "cancelled"),
    )?;
    let ended = stuck.wait_with_output()?;
    assert!(!ended.status.success());
    cli_ok(net, consumer, &["gc", "--json"])?;
    no_partial_left(&out3);

    // Once the read returns, the same pull runs normally.
    hold(net, consumer, &[])?;
    let (s, _) = data::pull_within(
        net,
        consumer,
        &[CODE, "--out", &out3_s],
        Duration::from_secs(60),
    )?;
    assert_eq!(s["bytes"].as_u64(), Some(size), "{s}");
    assert!(data::same_bytes(&v2, &out3)?, "byte-exact");
    Ok(())
}

/// The chunk files in node `i`'s chunk store (not its temporary files).
fn chunk_files(net: &Testnet, i: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(net.nodes[i].dir.join("chunks"))? {
        let d = d?;
        if d.file_name() == "tmp" || !d.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path())? {
            out.push(f?.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Cuts a chunk file short, as a write torn by a power loss leaves it.
fn tear(chunk: &Path) -> anyhow::Result<()> {
    let len = std::fs::metadata(chunk)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(chunk)?
        .set_len(len / 2)?;
    Ok(())
}

/// Review 10, M7: a table version was marked complete once every chunk file existed, without
/// reading the chunks of the columns not pulled then; a chunk torn by a crash made every later
/// pull of its column fail for ever with "the provider's copy is damaged". Now a version is
/// complete only once every chunk verifies, and a held chunk found damaged later (at export)
/// marks the version incomplete: the pull fetches that chunk again and succeeds.
#[test]
fn a_torn_or_damaged_held_chunk_is_fetched_again() -> anyhow::Result<()> {
    const CODE: &str = "301001/000061";
    let (provider, consumer) = (1, 2);
    // The consumer keeps every chunk in a file (`storage.small_chunk_kib = 0`; by default a
    // table's column chunks are database rows, which cannot tear), as a store written before
    // rows existed, or a table with large column chunks, holds them.
    let mut f = huitong_tests::start_prepared(2, 2, &[], |net| {
        huitong_tests::edit_config(net, consumer, |c| c.storage.small_chunk_kib = Some(0))
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    // Every 信息项 unconditional, so one consumer can hold every chunk of the version.
    let mut entry = data::table_entry(net, provider, 61, "无条件共享", None);
    if let Some(item) = entry["items"][4].as_object_mut() {
        item.remove("share_type");
    }
    data::publish_entry(net, &dir, provider, &entry)?;
    let csv = data::table_csv(&dir.join("t.csv"), 20_000, 0..0)?;
    data::publish(net, provider, CODE, &csv, &[])?;
    data::wait_version(net, consumer, CODE, 1)?;
    let out = |name: &str| dir.join(name).to_string_lossy().to_string();

    // 编号 alone: its chunks are all the consumer holds. One of them is torn afterwards.
    let first = data::pull(
        net,
        consumer,
        &[CODE, "--fields", "编号", "--out", &out("a.csv")],
    )?;
    assert!(first["chunks_fetched"].as_u64() > Some(0), "{first}");
    let held = chunk_files(net, consumer)?;
    assert!(!held.is_empty());
    tear(&held[0])?;
    // The other columns: every chunk file now exists, but one does not verify.
    data::pull(
        net,
        consumer,
        &[
            CODE,
            "--fields",
            "姓名,金额,日期,备注",
            "--out",
            &out("rest.csv"),
        ],
    )?;
    // 编号 again: the torn chunk is fetched again.
    let again = data::pull(
        net,
        consumer,
        &[CODE, "--fields", "编号", "--out", &out("a2.csv")],
    )?;
    assert_eq!(again["chunks_fetched"].as_u64(), Some(1), "{again}");
    assert!(data::same_bytes(&dir.join("a.csv"), &dir.join("a2.csv"))?);

    // Now every chunk is held and verified (the version is complete). One is damaged later:
    // the pull finds it at export, marks the version incomplete and fetches it again.
    tear(&held[0])?;
    let third = data::pull(
        net,
        consumer,
        &[CODE, "--fields", "编号", "--out", &out("a3.csv")],
    )?;
    assert_eq!(third["chunks_fetched"].as_u64(), Some(1), "{third}");
    assert!(data::same_bytes(&dir.join("a.csv"), &dir.join("a3.csv"))?);
    Ok(())
}
