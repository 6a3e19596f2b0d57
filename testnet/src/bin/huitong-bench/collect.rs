//! `collect --rows N`: collection from PostgreSQL and delivery into PostgreSQL on a real server,
//! each against PostgreSQL's own bulk path in the same run:
//! - collect: `huitong collect run` (read with COPY in a snapshot, streamed into the publisher,
//!   which checks every cell, cuts and stores the chunks, signs and announces the version)
//!   against psql's `\copy (SELECT …) TO file` of the same columns in the same order (`--perf
//!   FILE` records a system-wide profile of that run);
//! - deliver: a subscription into an empty PostgreSQL table (pull over the federation, then one
//!   transaction: COPY into a temporary table, delete and upsert by key) against psql's
//!   `\copy table FROM file` into an empty table of the same shape and key;
//! - peak RSS (`VmHWM`) of the provider's and the subscriber's node processes.
//!
//! Baselines are the best of three; Huitong's times are single runs (a second collect of the
//! unchanged table is reported too: it does all the work and publishes nothing).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use huitong_testnet::pg::Postgres;
use huitong_testnet::{Options, Testnet};
use serde_json::json;

use crate::calls::{cli_json, wait};

/// Collect benchmark options.
#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// Rows in the source table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench-collect")]
    dir: PathBuf,
    /// First port to try (keep it below Linux's ephemeral range, 32768–60999).
    #[arg(long, default_value_t = 29100)]
    base_port: u16,
    /// Record a system-wide `perf` profile (call graphs) of the first collect run into this
    /// file (needs `perf`; read it with `perf report -i FILE`).
    #[arg(long)]
    perf: Option<PathBuf>,
}

/// A system-wide `perf record` into `out` until [`stop_perf`].
fn start_perf(out: &std::path::Path) -> anyhow::Result<std::process::Child> {
    let child = std::process::Command::new("perf")
        .args(["record", "-F", "999", "-a", "-g", "-o"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start perf (apt-get install linux-perf)")?;
    // perf needs a moment to open its events before the work starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// Stops a `perf record` (SIGINT, as Ctrl-C) and waits for it to write its file.
fn stop_perf(mut child: std::process::Child) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(pid, libc::SIGINT) };
    child.wait()?;
    Ok(())
}

const CODE: &str = "301001/000091";
const PASSWORD: &str = "bench-collector";

/// The best (least) seconds of three runs of `f`.
fn best_of_3(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Peak resident memory of process `pid` (MiB), from `/proc/PID/status`.
fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn secret(dir: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("secrets.toml");
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

pub fn collect(a: CollectArgs) -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.sql(
        "postgres",
        &format!("CREATE ROLE collector LOGIN PASSWORD '{PASSWORD}'"),
    )?;
    pg.sql("postgres", "CREATE DATABASE hr OWNER collector")?;
    pg.sql("postgres", "CREATE DATABASE hr3 OWNER collector")?;
    let made = Instant::now();
    pg.sql(
        "hr",
        &format!(
            "CREATE TABLE people (id integer PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
             day date, note text); \
             INSERT INTO people SELECT n, '张三' || n, (n * 7 % 100000) + (n % 100) / 100.0, \
             DATE '2026-01-01' + (n % 300), '第' || n || '条备注，用于性能测试' \
             FROM generate_series(1, {}) AS n; \
             ALTER TABLE people OWNER TO collector",
            a.rows
        ),
    )?;
    pg.sql("hr", "VACUUM ANALYZE people")?;
    eprintln!(
        "source table: {} rows in {:.1} s",
        a.rows,
        made.elapsed().as_secs_f64()
    );
    let csv = pg.dir().join("baseline.csv");
    let copy_to = format!(
        "\\copy (SELECT id, name, amount, to_char(day, 'YYYY-MM-DD'), note FROM people ORDER BY id) TO '{}' CSV HEADER",
        csv.display()
    );
    let copy_out = best_of_3(|| pg.sql("hr", &copy_to).map(drop))?;
    let csv_bytes = std::fs::metadata(&csv)?.len();
    // Huitong stores a version durably before announcing it: the same file, fsynced.
    let copy_out_synced = best_of_3(|| {
        pg.sql("hr", &copy_to)?;
        std::fs::File::open(&csv)?.sync_all()?;
        Ok(())
    })?;
    eprintln!(
        "baseline COPY TO file: {copy_out:.2} s ({} MiB)",
        csv_bytes >> 20
    );
    let copy_in = best_of_3(|| {
        pg.sql(
            "hr3",
            "DROP TABLE IF EXISTS base; CREATE TABLE base (\"编号\" VARCHAR(20) PRIMARY KEY, \
             \"姓名\" VARCHAR(50), \"金额\" NUMERIC, \"日期\" DATE, \"备注\" VARCHAR(200))",
        )?;
        pg.sql(
            "hr3",
            &format!("\\copy base FROM '{}' CSV HEADER", csv.display()),
        )
        .map(drop)
    })?;
    eprintln!("baseline COPY FROM file: {copy_in:.2} s");

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
    let (provider, consumer) = (1, 2);
    {
        use std::io::Write as _;
        let dir = &t.nodes[provider].dir;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("huitong.toml"))?;
        writeln!(
            f,
            "\n[[collect.sources]]\ncode = \"{CODE}\"\nkind = \"postgres\"\n\
             url = \"postgres://collector@127.0.0.1:{}/hr\"\ntable = \"people\"\nschedule = \"manual\"\n\
             columns = {{ \"编号\" = \"id\", \"姓名\" = \"name\", \"金额\" = \"amount\", \"日期\" = \"day\", \"备注\" = \"note\" }}",
            pg.port
        )?;
        secret(
            dir,
            &format!("[sources.\"{CODE}\"]\npassword = \"{PASSWORD}\"\n"),
        )?;
        secret(
            &t.nodes[consumer].dir,
            &format!(
                "[targets.\"people\"]\nurl = \"postgres://collector@127.0.0.1:{}/hr3\"\npassword = \"{PASSWORD}\"\n",
                pg.port
            ),
        )?;
    }
    t.start_all()?;
    t.wait_healthy(Duration::from_secs(120))?;
    let entry = json!({
        "classification": "301001",
        "title": "采集性能测试表",
        "code": CODE,
        "provider_name": t.nodes[provider].name,
        "provider_code": t.nodes[provider].uscc,
        "abstract": "采集与订阅送达的性能测试用库表资源。",
        "format": {"category": "数据库", "type": "postgresql"},
        "items": [
            {"name": "编号", "data_type": "C", "length": 20},
            {"name": "姓名", "data_type": "C", "length": 50},
            {"name": "金额", "data_type": "N", "length": 12},
            {"name": "日期", "data_type": "D"},
            {"name": "备注", "data_type": "C", "length": 200},
        ],
        "share_type": "无条件共享",
        "share_mode": "库表",
        "open_type": "不予开放",
        "update_cycle": "每日",
        "publish_date": "2026-12-01",
    });
    let file = a.dir.join("entry.json");
    std::fs::write(&file, serde_json::to_vec(&entry)?)?;
    cli_json(
        &t,
        provider,
        &["catalogue", "publish", &file.to_string_lossy(), "--json"],
    )?;
    let run_secs = |r: &serde_json::Value| {
        (r["finished_at_ms"].as_u64().unwrap_or(0) - r["started_at_ms"].as_u64().unwrap_or(0))
            as f64
            / 1000.0
    };
    let perf = a.perf.as_deref().map(start_perf).transpose()?;
    let first = cli_json(&t, provider, &["collect", "run", CODE, "--json"])?;
    if let Some(p) = perf {
        stop_perf(p)?;
    }
    anyhow::ensure!(first["outcome"] == "published", "first run: {first}");
    let again = cli_json(&t, provider, &["collect", "run", CODE, "--json"])?;
    anyhow::ensure!(again["outcome"] == "unchanged", "second run: {again}");
    let (collect1, collect2) = (run_secs(&first), run_secs(&again));
    eprintln!("huitong collect: {collect1:.2} s (new version), {collect2:.2} s (unchanged)");

    let url = format!("postgres://collector@127.0.0.1:{}/hr3", pg.port);
    cli_json(
        &t,
        consumer,
        &[
            "subscribe",
            CODE,
            "--into",
            &url,
            "--table",
            "people",
            "--key",
            "编号",
            "--name",
            "people",
            "--json",
        ],
    )?;
    let mut delivery = serde_json::Value::Null;
    wait(600, "the delivery", || {
        let all = cli_json(&t, consumer, &["subscriptions", "--json"])?;
        delivery = all[0]["delivery"].clone();
        if let Some(e) = delivery["error"].as_str() {
            anyhow::bail!("delivery failed: {e}");
        }
        Ok(delivery["version"].as_u64() == Some(1))
    })?;
    let pull_s = delivery["pull_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let apply_s = delivery["apply_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let rows = pg.sql("hr3", "SELECT count(*) FROM people")?;
    anyhow::ensure!(
        rows.trim() == a.rows.to_string(),
        "the subscriber's table has {} rows",
        rows.trim()
    );
    // 1% of the rows changed at random: a new version, delivered by the subscription.
    pg.sql(
        "hr",
        &format!(
            "UPDATE people SET note = note || '改' WHERE id IN \
             (SELECT id FROM people ORDER BY random() LIMIT {})",
            (a.rows / 100).max(1)
        ),
    )?;
    let changed = cli_json(&t, provider, &["collect", "run", CODE, "--json"])?;
    anyhow::ensure!(changed["version"] == 2, "the changed run: {changed}");
    let ran = Instant::now();
    wait(600, "the delivery of the changed version", || {
        let all = cli_json(&t, consumer, &["subscriptions", "--json"])?;
        delivery = all[0]["delivery"].clone();
        Ok(delivery["version"].as_u64() == Some(2))
    })?;
    let landed_s = ran.elapsed().as_secs_f64();
    let full_bytes = changed["new_bytes"].as_u64().unwrap_or(0);
    let version_bytes = {
        let v = cli_json(&t, consumer, &["dataset", "versions", CODE, "--json"])?;
        v[0]["versions"][1]["bytes"].as_u64().unwrap_or(0)
    };
    let fetched = delivery["bytes_fetched"].as_u64().unwrap_or(0);
    let rss_p = peak_rss_mib(t.nodes[provider].pid);
    let rss_c = peak_rss_mib(t.nodes[consumer].pid);
    let out = json!({
        "rows": a.rows,
        "csv_bytes": csv_bytes,
        "copy_to_file_s": copy_out,
        "collect_s": collect1,
        "collect_unchanged_s": collect2,
        "collect_vs_copy": copy_out / collect1,
        "copy_to_file_fsynced_s": copy_out_synced,
        "collect_vs_copy_fsynced": copy_out_synced / collect1,
        "changed_1pct_collect_s": run_secs(&changed),
        "changed_1pct_new_bytes_at_provider": full_bytes,
        "changed_1pct_version_bytes": version_bytes,
        "changed_1pct_bytes_fetched": fetched,
        "changed_1pct_fetched_share": fetched as f64 / version_bytes.max(1) as f64,
        "changed_1pct_landed_after_run_s": landed_s,
        "copy_from_file_s": copy_in,
        "deliver_pull_s": pull_s,
        "deliver_apply_s": apply_s,
        "deliver_apply_vs_copy": copy_in / apply_s.max(0.001),
        "deliver_total_vs_copy": copy_in / (pull_s + apply_s).max(0.001),
        "peak_rss_provider_mib": rss_p,
        "peak_rss_subscriber_mib": rss_c,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    t.stop_all().context("stopping the testnet")?;
    Ok(())
}
