//! Benchmarks on real testnets of `huitong` processes on loopback (release build):
//! - `propagation --nodes N`: publish on one node → stored by every other node, and what the
//!   idle testnet costs (see [`propagation`]);
//! - `sync --entries K`: a fresh node joins and syncs a K-entry catalogue;
//! - `pull --size-mib N`: one department pulls an N MiB file from another, against raw TCP,
//!   rsync over ssh and sendme (see [`pull`]);
//! - `grant`: authorizing one chunk request with a grant token (see [`grant`]);
//! - `audit`: durable batched appends to the hub's audit log (see [`audit`]);
//! - `search --entries K --users N`: the portal's search against the JSON API (see [`search`]);
//! - `calls --users N`: API service lookups through a consumer's gateway against the
//!   provider's own gateway (see [`calls`]);
//! - `collect --rows N`: collection from and delivery into PostgreSQL against COPY (see
//!   [`collect`]).
//!
//! Method and results: `docs/benchmarks.md`.

mod audit;
mod calls;
mod collect;
mod grant;
mod propagation;
mod pull;
mod search;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use huitong_testnet::{Options, Testnet};
use serde_json::json;

/// Huitong benchmarks.
#[derive(Parser, Debug)]
enum Bench {
    /// Publish → visible on all nodes.
    Propagation(propagation::Args),
    /// A fresh node syncs a large catalogue.
    Sync(SyncArgs),
    /// A department pulls a large file from another, against baselines.
    Pull(pull::PullArgs),
    /// Grant token authorization per chunk request.
    Grant(grant::GrantArgs),
    /// Durable batched audit-log appends, against a raw append + fdatasync.
    Audit(audit::AuditArgs),
    /// Portal search at concurrent users, against the JSON API.
    Search(search::SearchArgs),
    /// API service lookups through the federation, against the provider's own gateway.
    Calls(calls::CallsArgs),
    /// Collection from and delivery into PostgreSQL, against COPY.
    Collect(collect::CollectArgs),
}

/// Sync benchmark options.
#[derive(clap::Args, Debug)]
struct SyncArgs {
    /// Entries in the catalogue.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench-sync")]
    dir: PathBuf,
    /// First port to try (keep it below Linux's ephemeral range, 32768–60999).
    #[arg(long, default_value_t = 28500)]
    base_port: u16,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Propagation(a) => propagation::propagation(a),
        Bench::Sync(a) => sync(a),
        Bench::Pull(a) => pull::pull(a),
        Bench::Grant(a) => grant::grant(a),
        Bench::Audit(a) => audit::audit(a),
        Bench::Search(a) => search::search(a),
        Bench::Calls(a) => calls::calls(a),
        Bench::Collect(a) => collect::collect(a),
    }
}

/// Writes `n` valid entries of `node` as JSONL; returns the file's size.
fn write_jsonl(
    path: &std::path::Path,
    node: &huitong_testnet::NodeInfo,
    n: usize,
) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    const WORDS: [&str; 8] = [
        "人口", "法人", "工单", "网格", "证照", "医疗", "教育", "交通",
    ];
    for k in 0..n {
        // 目 varies so that codes stay 6-digit sequences under each classification.
        let class = format!("301{:03}", 1 + k / 999_999);
        let e = json!({
            "classification": class, "code": format!("{class}/{:06}", 1 + k % 999_999),
            "title": format!("{}数据集{k}", WORDS[k % WORDS.len()]),
            "provider_name": node.name, "provider_code": node.uscc,
            "abstract": format!("同步基准测试条目{k}，包含{}相关信息项。", WORDS[(k / 8) % WORDS.len()]),
            "format": {"category": "数据库", "type": "mysql"},
            "items": [{"name": "编号", "data_type": "C", "length": 20}, {"name": "更新时间", "data_type": "T"}],
            "share_type": "无条件共享", "share_mode": "库表", "open_type": "不予开放",
            "update_cycle": "每日", "publish_date": "2026-11-27",
        });
        serde_json::to_writer(&mut f, &e)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Baseline: the same JSONL bytes through a loopback TCP socket into memory (no signatures,
/// no hash chain, no index, no durability).
fn tcp_copy(path: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let data = std::fs::read(path)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t0 = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(&data)
    });
    let (mut conn, _) = listener.accept()?;
    let mut got = Vec::new();
    conn.read_to_end(&mut got)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    Ok(t0.elapsed().as_secs_f64())
}

/// A catalogue testnet: hub, one department (区公安局) and the city node, all but the city
/// started; the department has imported `entries` generated entries through the CLI.
pub(crate) struct Imported {
    pub(crate) net: Testnet,
    /// The department's node.
    pub(crate) provider: usize,
    /// The city node (not started).
    pub(crate) fresh: usize,
    /// The JSONL imported, and its size.
    pub(crate) file: PathBuf,
    pub(crate) bytes: u64,
    /// Seconds the import took.
    pub(crate) import: f64,
}

pub(crate) fn imported(
    dir: &std::path::Path,
    base_port: u16,
    entries: usize,
) -> anyhow::Result<Imported> {
    let bin = std::env::current_exe()?.with_file_name("huitong");
    let _ = std::fs::remove_dir_all(dir);
    let mut t = Testnet::create(&Options {
        dir: dir.to_path_buf(),
        departments: 1,
        base_port,
        sync_interval_secs: 10,
        bin,

        hidden: Vec::new(),
        // One feed takes the whole catalogue at once: above the default hourly quota.
        feed_quota: Some(u32::try_from(entries.saturating_mul(2)).unwrap_or(u32::MAX)),
    })?;
    let provider = t.index("police").context("no police node")?;
    let fresh = t.index("city").context("no city node")?;
    for i in 0..t.nodes.len() {
        if i != fresh {
            t.start(i)?;
        }
    }
    t.wait_healthy(Duration::from_secs(120))?;
    let file = dir.join("entries.jsonl");
    let bytes = write_jsonl(&file, &t.nodes[provider], entries)?;
    eprintln!(
        "importing {} entries ({:.1} MiB of JSONL) on {} …",
        entries,
        bytes as f64 / 1048576.0,
        t.nodes[provider].name
    );
    let t0 = Instant::now();
    let out = t.cli(provider, &["catalogue", "publish", &file.to_string_lossy()])?;
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Imported {
        net: t,
        provider,
        fresh,
        file,
        bytes,
        import: t0.elapsed().as_secs_f64(),
    })
}

fn sync(a: SyncArgs) -> anyhow::Result<()> {
    let Imported {
        net: mut t,
        provider: _,
        fresh,
        file,
        bytes,
        import,
    } = imported(&a.dir, a.base_port, a.entries)?;

    let want = a.entries as u64;
    let hub = t.index("hub").context("no hub")?;
    t.wait_status(
        &[hub],
        Duration::from_secs(600),
        "the hub to hold the catalogue",
        |_, s| s["catalogue_entries"].as_u64() >= Some(want),
    )?;
    // Nothing else running: the other nodes' ranked search indexes have caught up (a release
    // without `search_pending` indexes beside its ingest, so it has nothing to wait for).
    let others: Vec<usize> = (0..t.nodes.len()).filter(|&i| i != fresh).collect();
    t.wait_status(
        &others,
        Duration::from_secs(600),
        "the other nodes' ranked search to catch up",
        |_, s| s["search_pending"].as_u64().unwrap_or(0) == 0,
    )?;
    eprintln!("starting the fresh node {} …", t.nodes[fresh].name);
    let t1 = Instant::now();
    t.start(fresh)?;
    t.wait_status(
        &[fresh],
        Duration::from_secs(600),
        "the fresh node to sync",
        |_, s| s["catalogue_entries"].as_u64() >= Some(want),
    )?;
    let sync = t1.elapsed().as_secs_f64();
    // The ranked search index follows the catalogue (it waits while the catch-up keeps coming).
    t.wait_status(
        &[fresh],
        Duration::from_secs(600),
        "the fresh node's ranked search to catch up",
        |_, s| s["search_pending"].as_u64().unwrap_or(0) == 0,
    )?;
    let searchable = t1.elapsed().as_secs_f64();
    t.stop_all()?;
    let baseline = tcp_copy(&file)?;
    let (opening, decoding, bad) = opening_floor(&file)?;
    println!("entries={} jsonl_bytes={bytes}", a.entries);
    println!(
        "import on provider: {import:.2} s ({:.0} entries/s)",
        a.entries as f64 / import
    );
    println!(
        "fresh node start → full catalogue: {sync:.2} s ({:.0} entries/s)",
        a.entries as f64 / sync
    );
    println!("fresh node start → ranked search holds it all: {searchable:.2} s");
    println!(
        "baseline raw TCP copy of the JSONL: {baseline:.3} s; ratio sync/baseline = {:.0}x",
        sync / baseline
    );
    println!(
        "floor: opening the same entries (decode + ZIP-215 ed25519 in batches) on all cores, ranges of {FLOOR_RANGE}: {opening:.2} s ({:.1} µs/entry of CPU on {} cores); decoding alone, one core: {decoding:.2} s",
        opening * cores() as f64 * 1e6 / a.entries as f64,
        cores()
    );
    println!(
        "opening one range answer of {FLOOR_RANGE} (mean of {BAD_REPS}): all good {:.1} ms; first entry's signature bad {:.2} ms; the last entry of every thread's first batch bad {:.1} ms",
        bad.good_ms, bad.first_bad_ms, bad.worst_ms
    );
    Ok(())
}

/// Entries per range in [`opening_floor`] (the node's range answers hold up to 2000).
const FLOOR_RANGE: usize = 2000;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a fresh node cannot go below: the entries of `file` signed by a new key as feed
/// entries, then opened in ranges as the node opens a range answer
/// (`huitong_node::feeds::open_range`: decoding and batched ZIP-215 signature checks on all cores);
/// and, for comparison, only decoded. Seconds of each.
fn opening_floor(file: &std::path::Path) -> anyhow::Result<(f64, f64, BadAnswers)> {
    use huitong_protocol::feed::{EntryHash, FeedEntry, VerifiedEntry, FEED_ENTRY_VERSION};
    use std::io::BufRead as _;
    let key = huitong_protocol::SecretKey::from_bytes(rand::random());
    let mut prev = EntryHash::ZERO;
    let mut sealed = Vec::new();
    for (n, line) in std::io::BufReader::new(std::fs::File::open(file)?)
        .lines()
        .enumerate()
    {
        let raw: huitong_protocol::catalogue::RawEntry = serde_json::from_str(&line?)?;
        let entry = raw
            .validate()
            .map_err(|e| anyhow::anyhow!("entry {}: {e:?}", n + 1))?;
        let v = FeedEntry {
            version: FEED_ENTRY_VERSION,
            feed: key.public(),
            seq: n as u64 + 1,
            prev,
            timestamp_ms: 1_764_000_000_000 + n as u64,
            charter: 1,
            event: huitong_protocol::Event::CataloguePublished(entry),
            by: None,
        }
        .seal(&key);
        prev = v.hash;
        sealed.push((v.envelope.to_bytes(), v.hash));
    }
    let bytes: Vec<Vec<u8>> = sealed.iter().map(|(b, _)| b.clone()).collect();
    let t = Instant::now();
    for range in bytes.chunks(FLOOR_RANGE) {
        let opened = huitong_node::feeds::open_range(range);
        if let Some(Err(e)) = opened.iter().find(|o| o.is_err()) {
            bail!("a signed entry did not open: {e}");
        }
    }
    let opening = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (b, hash) in &sealed {
        VerifiedEntry::from_stored(b, *hash)?;
    }
    let decoding = t.elapsed().as_secs_f64();
    let first = bytes
        .get(..FLOOR_RANGE)
        .context("fewer entries than one range")?;
    Ok((opening, decoding, bad_answers(first)))
}

/// Times [`BAD_REPS`] openings of each answer in [`bad_answers`].
const BAD_REPS: u32 = 20;

/// What opening one range answer costs, in ms (review s21, H2).
struct BadAnswers {
    good_ms: f64,
    first_bad_ms: f64,
    worst_ms: f64,
}

/// Opens `range` as it is, with its first entry's signature broken, and with the last entry of
/// every thread's first batch broken (the dearest answer a peer can send: each thread checks a
/// batch that fails, then one by one up to the bad entry).
fn bad_answers(range: &[Vec<u8>]) -> BadAnswers {
    use huitong_node::feeds::{open_range, FIRST_BATCH, OPEN_BATCH};
    let broken = |at: &[usize]| {
        let mut r = range.to_vec();
        for &i in at {
            if let Some(last) = r.get_mut(i).and_then(|e| e.last_mut()) {
                *last ^= 1;
            }
        }
        r
    };
    let threads = cores().min(8);
    let rest = range.len().saturating_sub(FIRST_BATCH);
    let per = rest.div_ceil(threads).max(1);
    let worst: Vec<usize> = (0..threads)
        .map(|t| FIRST_BATCH + t * per + OPEN_BATCH.min(per) - 1)
        .filter(|&i| i < range.len())
        .collect();
    let time = |r: &[Vec<u8>]| {
        let t = Instant::now();
        for _ in 0..BAD_REPS {
            std::hint::black_box(open_range(r));
        }
        t.elapsed().as_secs_f64() * 1e3 / f64::from(BAD_REPS)
    };
    BadAnswers {
        good_ms: time(range),
        first_bad_ms: time(&broken(&[0])),
        worst_ms: time(&broken(&worst)),
    }
}
