//! `huitong-bench audit`: durable batched appends to the hub's audit log (C2SP tlog-tiles on
//! disk: entry bundles, hash tiles and a signed checkpoint written, fsynced and renamed per
//! batch), against the floor for any durable batched log measured in the same run: the same
//! entry bytes appended to one file with one `fdatasync` per batch.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use huitong_node::audit_log::tiles::TileLog;
use huitong_protocol::audit::{Record, RecordKind};
use huitong_protocol::SecretKey;

/// Audit benchmark options.
#[derive(clap::Args, Debug)]
pub(crate) struct AuditArgs {
    /// Entries to append per batch size.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    batches: Vec<u64>,
    /// Working directory on the disk under test (removed first).
    #[arg(long, default_value = "/var/tmp/huitong-bench-audit")]
    dir: PathBuf,
}

fn record(i: u64, signer: &huitong_protocol::NodeId) -> Vec<u8> {
    Record {
        kind: RecordKind::Receipt,
        id: format!("{i:016x}"),
        signer: *signer,
        seq: i,
        hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
        at_ms: 1_800_000_000_000 + i,
    }
    .encode()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

pub(crate) fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let key = SecretKey::from_bytes(rand::random());
    let signer = SecretKey::from_bytes(rand::random()).public();
    let origin = "huitong.audit/bench";
    let entries: Vec<Vec<u8>> = (0..a.entries).map(|i| record(i, &signer)).collect();
    let avg = entries.iter().map(Vec::len).sum::<usize>() as f64 / entries.len().max(1) as f64;
    println!(
        "{} entries of {avg:.0} bytes per batch size, in {}",
        a.entries,
        a.dir.display()
    );
    for &batch in &a.batches {
        let _ = std::fs::remove_dir_all(&a.dir);
        std::fs::create_dir_all(&a.dir)?;

        // Baseline: one file, one write and one fdatasync per batch.
        let mut f = std::fs::File::create(a.dir.join("raw.log"))?;
        let t = Instant::now();
        for chunk in entries.chunks(batch as usize) {
            let mut buf = Vec::new();
            for e in chunk {
                buf.extend_from_slice(&(e.len() as u16).to_be_bytes());
                buf.extend_from_slice(e);
            }
            f.write_all(&buf)?;
            f.sync_data()?;
        }
        let raw = a.entries as f64 / t.elapsed().as_secs_f64();

        let log_dir = a.dir.join("log");
        let mut log = TileLog::open(&log_dir, origin, &key.public())?;
        let mut lat = Vec::new();
        let t = Instant::now();
        for chunk in entries.chunks(batch as usize) {
            let b = Instant::now();
            log.append(&key, chunk.to_vec())?;
            lat.push(b.elapsed().as_secs_f64() * 1e3);
        }
        let rate = a.entries as f64 / t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        // Reopen: rebuilds the hashes from the bundles and checks them against the checkpoint.
        let t = Instant::now();
        let reopened = TileLog::open(&log_dir, origin, &key.public())?;
        let reopen = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            reopened.size() == a.entries,
            "reopened log has the wrong size"
        );
        println!(
            "batch {batch:>6}: audit log {rate:>9.0} entries/s (batch ack p50 {:.1} ms, p99 {:.1} ms) | raw append+fdatasync {raw:>9.0} entries/s | ratio {:.2} | reopen {reopen:.2} s",
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            rate / raw
        );
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(())
}
