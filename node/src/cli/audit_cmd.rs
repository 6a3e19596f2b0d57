//! `huitong audit verify|export-proof|receipts|import-checkpoint`: checking the hub's audit log.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::output::{self, count};
use crate::api::{ImportOutcome, ProofFile, ReceiptView, TextBody, TransferView};
use crate::auditor::verify::{LogReport, RecordReport};
use crate::client::ApiClient;

/// `?grant=&code=` of the receipt and transfer listings.
#[derive(serde::Serialize)]
struct Q {
    grant: Option<String>,
    code: Option<String>,
}

/// Largest proof or checkpoint file read.
const MAX_FILE: u64 = 64 * 1024;

/// `huitong audit …`.
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the log: with no option, every checkpoint seen (and on the hub every tile on disk);
    /// with --record, prove that record's inclusion; with --proof, check a proof file offline.
    Verify {
        /// A record id: application id, receipt id, transfer id, charter-N, or an API call's id
        /// (or call-N) of this node's call log, proved through its anchor.
        #[arg(long, conflicts_with = "proof")]
        record: Option<String>,
        /// A c2sp.org/tlog-proof file (from `audit export-proof`).
        #[arg(long)]
        proof: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a c2sp.org/tlog-proof file proving a record's inclusion, checkable offline.
    ExportProof {
        /// Record id.
        id: String,
        /// Output file (conventionally NAME.tlog-proof).
        file: PathBuf,
        /// Which entry, when the id has several (an application has one per step).
        #[arg(long)]
        index: Option<u64>,
    },
    /// List the API service calls this node made (through its gateway) or answered, oldest
    /// first, and check the call log's hash chain.
    Calls {
        /// Only those under this grant (application id).
        #[arg(long)]
        grant: Option<String>,
        /// Only those of this resource code.
        #[arg(long)]
        code: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// API call statistics: calls, refusals, failures and latency per service and per peer.
    CallStats {
        /// The window: the last this many hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List transfer receipts (who pulled what, under which grant), oldest first.
    Receipts {
        /// Only those under this grant (application id).
        #[arg(long)]
        grant: Option<String>,
        /// Only those of this resource code.
        #[arg(long)]
        code: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the providers' own transfer records (what each provider sent whom, completed or
    /// abandoned, with or without a receipt), oldest first.
    Transfers {
        /// Only those under this grant (application id).
        #[arg(long)]
        grant: Option<String>,
        /// Only those of this resource code.
        #[arg(long)]
        code: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a checkpoint note received out of band (e.g. from another auditor) against
    /// everything this node has seen; a contradiction is recorded as a split view.
    ImportCheckpoint {
        /// The checkpoint note file.
        file: PathBuf,
    },
}

fn read_small(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE {
        bail!(
            "{} is larger than {MAX_FILE} bytes: not a proof or checkpoint file",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("{} is not a text file", path.display()))
}

fn print_record(o: &mut impl Write, r: &RecordReport) -> std::io::Result<()> {
    if let Some(c) = &r.call {
        writeln!(
            o,
            "call {} (record {} of this node's call log: {} {} {} of {} with {}, {}): the chain from record {} through it leads to the head anchored at record {} ({}){}",
            c.id.as_deref().unwrap_or("-"),
            c.seq,
            c.side,
            c.kind,
            c.code,
            output::time_ms(c.at_ms),
            c.peer,
            c.status,
            c.from,
            c.anchor,
            &c.anchor_head[..16.min(c.anchor_head.len())],
            match (c.answer_signed, c.status.as_str()) {
                (Some(true), "refused") => "; the provider's signed refusal verifies",
                (Some(true), _) => "; the provider's signed answer verifies",
                _ => "",
            }
        )?;
    }
    let local = match r.matches_local {
        Some(true) => "; matches the event held here",
        Some(false) => "; DIFFERS from the event held here",
        None => "",
    };
    let how = if r.offline {
        " [proved from this node's copy]"
    } else {
        " [proof from the hub, checked here]"
    };
    writeln!(
        o,
        "ok: entry {} ({} {}) by {} seq {} is in the log of size {} (root {}){}{}{}",
        r.index,
        r.kind,
        r.id,
        r.signer,
        r.seq,
        r.checkpoint.size,
        r.checkpoint.root,
        if r.checkpoint.cosigned_by.is_empty() {
            String::new()
        } else {
            format!(", cosigned by {}", r.checkpoint.cosigned_by.join(", "))
        },
        local,
        how
    )
}

fn print_log(o: &mut impl Write, r: &LogReport) -> std::io::Result<()> {
    match &r.latest {
        Some(c) => writeln!(
            o,
            "log {}: latest checkpoint size {} root {}{}; {} seen, all consistent{}",
            r.origin,
            c.size,
            c.root,
            if c.cosigned_by.is_empty() {
                ", not yet cosigned".to_string()
            } else {
                format!(", cosigned by {}", c.cosigned_by.join(", "))
            },
            count(r.checkpoints_seen, "checkpoint", "checkpoints"),
            if r.split_views.is_empty() {
                ""
            } else {
                " with each other"
            }
        )?,
        None => writeln!(o, "log {}: no checkpoint seen yet", r.origin)?,
    }
    if let Some(d) = &r.disk {
        if r.hub {
            writeln!(
                o,
                "hub files: {} and {} match the signed checkpoint; {} queued",
                count(d.size, "entry", "entries"),
                count(d.tiles, "hash tile", "hash tiles"),
                count(r.pending, "record", "records")
            )?;
        } else {
            writeln!(
                o,
                "mirror: {} and {} held here match the hub's signed checkpoint",
                count(d.size, "entry", "entries"),
                count(d.tiles, "hash tile", "hash tiles")
            )?;
        }
    }
    if let Some(p) = &r.pending_witness {
        writeln!(
            o,
            "PENDING WITNESS: checkpoint size {} root {} is not final until the witness cosigns it",
            p.size, p.root
        )?;
    }
    for s in &r.split_views {
        writeln!(o, "SPLIT VIEW: {}", s.reason)?;
    }
    for s in &r.omissions {
        writeln!(o, "OMISSION: {}", s.reason)?;
    }
    Ok(())
}

/// Runs an audit command.
pub(super) async fn run(dir: &Path, cmd: AuditCmd) -> anyhow::Result<()> {
    let api = ApiClient::new(dir)?;
    let mut o = std::io::stdout().lock();
    match cmd {
        AuditCmd::Verify {
            record: None,
            proof: None,
            json,
        } => {
            let r: LogReport = api.get("/audit", &()).await?;
            if json {
                output::json(&r)?;
            } else {
                print_log(&mut o, &r)?;
            }
            if !r.split_views.is_empty() {
                bail!(
                    "split view: the hub signed {} that contradict others; keep this node's evidence (`huitong audit verify --json`) and alert the platform administrator",
                    count(r.split_views.len() as u64, "checkpoint", "checkpoints")
                );
            }
            if !r.omissions.is_empty() {
                bail!(
                    "omission: {} missing from the hub's audit log; keep this node's evidence (`huitong audit verify --json`) and alert the platform administrator",
                    count(r.omissions.len() as u64, "event is", "events are")
                );
            }
        }
        AuditCmd::Verify {
            record: Some(id),
            json,
            ..
        } => {
            let v: Vec<RecordReport> = api.get(&format!("/audit/records/{id}"), &()).await?;
            if json {
                output::json(&v)?;
            } else {
                for r in &v {
                    print_record(&mut o, r)?;
                }
            }
        }
        AuditCmd::Verify {
            proof: Some(path),
            json,
            ..
        } => {
            let text = read_small(&path)?;
            let r: RecordReport = api.post("/audit/proofs", &TextBody { text }).await?;
            if json {
                output::json(&r)?;
            } else {
                print_record(&mut o, &r)?;
            }
        }
        AuditCmd::ExportProof { id, file, index } => {
            #[derive(serde::Serialize)]
            struct Q {
                index: Option<u64>,
            }
            let p: ProofFile = api
                .get(&format!("/audit/records/{id}/proof"), &Q { index })
                .await?;
            crate::durable::replace(&file, p.proof.as_bytes())
                .and_then(|()| crate::durable::sync_parent(&file))
                .with_context(|| format!("cannot write {}", file.display()))?;
            print_record(&mut o, &p.report)?;
            writeln!(o, "wrote {}", file.display())?;
        }
        AuditCmd::Transfers { grant, code, json } => {
            let v: Vec<TransferView> = api.get("/audit/transfers", &Q { grant, code }).await?;
            output::list(&v, json, "transfers", |t| {
                vec![
                    t.id.clone(),
                    output::time_ms(t.ended_ms),
                    t.outcome.clone(),
                    format!("{} v{}", t.code, t.version),
                    format!("{} → {}", t.provider, t.consumer),
                    format!(
                        "[{}] {} in {}{}{}",
                        t.fields.join(","),
                        count(t.bytes, "byte", "bytes"),
                        count(t.chunks, "chunk", "chunks"),
                        output::labelled("grant", t.grant.as_deref()),
                        output::labelled("receipt", t.receipt.as_deref()),
                    ),
                ]
            })?;
        }
        AuditCmd::CallStats { hours, json } => {
            #[derive(serde::Serialize)]
            struct H {
                hours: u64,
            }
            let v: crate::api::CallStatsView = api.get("/audit/calls/stats", &H { hours }).await?;
            if json {
                output::json(&v)?;
            } else {
                let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
                let mut t = output::Table::new().right_align(&[3, 4, 5, 6, 7, 8, 9]);
                t.row([
                    "side", "service", "peer", "calls", "ok", "refused", "failed", "p50 ms",
                    "p99 ms", "max ms",
                ]);
                for r in v.services.iter().chain(v.peers.iter()) {
                    t.row([
                        r.side.clone(),
                        r.code.clone(),
                        r.peer.clone().unwrap_or_else(|| "(all)".into()),
                        r.calls.to_string(),
                        r.ok.to_string(),
                        r.refused.to_string(),
                        r.failed.to_string(),
                        ms(r.p50_us),
                        ms(r.p99_us),
                        ms(r.max_us),
                    ]);
                }
                t.write(&mut o)?;
                writeln!(
                    o,
                    "{} in the last {hours} h{}",
                    count(v.scanned, "call", "calls"),
                    if v.cut {
                        " (only the newest: the count stops at its bound)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        AuditCmd::Calls { grant, code, json } => {
            let v: crate::api::CallLogView = api.get("/audit/calls", &Q { grant, code }).await?;
            if json {
                output::json(&v)?;
            } else {
                output::list(&v.calls, false, "calls", |c| {
                    vec![
                        c.seq.to_string(),
                        output::time_ms(c.at_ms),
                        format!("{} {} {}", c.side, c.kind, c.status),
                        c.code.clone(),
                        c.peer.clone(),
                        format!(
                            "{} µs{}{}{}{}",
                            c.duration_us,
                            output::labelled("client", c.client.as_deref()),
                            output::labelled("grant", c.grant.as_deref()),
                            output::labelled("id", c.id.as_deref()),
                            output::labelled("why", c.detail.as_deref()),
                        ),
                    ]
                })?;
                match &v.broken {
                    None => writeln!(
                        o,
                        "call log: {} records, chain holds (head {})",
                        v.size, v.head
                    )?,
                    Some(why) => writeln!(o, "call log BROKEN: {why}")?,
                }
            }
            if v.broken.is_some() {
                anyhow::bail!("the call log's hash chain does not hold");
            }
        }
        AuditCmd::Receipts { grant, code, json } => {
            let v: Vec<ReceiptView> = api.get("/audit/receipts", &Q { grant, code }).await?;
            output::list(&v, json, "receipts", |r| {
                vec![
                    r.id.clone(),
                    output::time_ms(r.at_ms),
                    format!("{} v{}", r.code, r.version),
                    format!("{} → {}", r.provider, r.consumer),
                    format!(
                        "[{}] {}{}",
                        r.fields.join(","),
                        count(r.bytes, "byte", "bytes"),
                        output::labelled("grant", r.grant.as_deref()),
                    ),
                ]
            })?;
        }
        AuditCmd::ImportCheckpoint { file } => {
            let text = read_small(&file)?;
            let r: ImportOutcome = api.post("/audit/checkpoints", &TextBody { text }).await?;
            writeln!(o, "{}", r.outcome)?;
            if r.outcome.starts_with("split view") {
                bail!("the imported checkpoint contradicts what this node has seen");
            }
        }
    }
    Ok(())
}
