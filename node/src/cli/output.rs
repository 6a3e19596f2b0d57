//! Human and JSON output of the CLI.

use std::io::Write;

use crate::api::Status;
use crate::catalogue::Record;
use crate::net::PeerInfo;

/// Prints JSON to stdout.
pub(super) fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Prints a listing: JSON, or one line per item (`(no {what})` when there is none).
pub(super) fn list<T: serde::Serialize>(
    items: &[T],
    as_json: bool,
    what: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if as_json {
        return json(&items);
    }
    let mut o = std::io::stdout().lock();
    for item in items {
        writeln!(o, "{}", line(item))?;
    }
    if items.is_empty() {
        writeln!(o, "(no {what})")?;
    }
    Ok(())
}

/// `"  {label} {value}"` when there is a value, else nothing (optional columns of a line).
pub(super) fn labelled(label: &str, value: Option<&str>) -> String {
    value.map(|v| format!("  {label} {v}")).unwrap_or_default()
}

pub(super) fn status(s: &Status, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(s);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "{} ({}), role {}", s.name, s.org_code, s.role)?;
    writeln!(
        o,
        "federation   {} (charter v{}, {} members{})",
        s.federation,
        s.charter_version,
        s.members,
        if s.active_member {
            ""
        } else {
            ", this node NOT active"
        }
    )?;
    writeln!(o, "peer id      {}", s.peer_id)?;
    writeln!(o, "peers        {} connected", s.connected_peers)?;
    writeln!(o, "listening    {}", s.listen.join(" "))?;
    writeln!(
        o,
        "feeds        {} (own feed at seq {})",
        s.feeds, s.own_seq
    )?;
    writeln!(o, "catalogue    {} entries", s.catalogue_entries)?;
    writeln!(
        o,
        "accepted     {} entries from peers since start",
        s.accepted
    )?;
    let t = &s.transfer;
    if t.served_chunks + t.fetched_chunks + t.refused_requests + t.failed_chunks > 0 {
        writeln!(
            o,
            "data         served {} in {} chunks, fetched {} in {} chunks, {} requests refused, {} chunks failed verification",
            bytes(t.served_bytes),
            t.served_chunks,
            bytes(t.fetched_bytes),
            t.fetched_chunks,
            t.refused_requests,
            t.failed_chunks
        )?;
    }
    let a = &s.audit;
    if a.checkpoint_size > 0 {
        writeln!(
            o,
            "audit        hub log checkpoint size {}{}",
            a.checkpoint_size,
            if a.cosigned_by.is_empty() {
                String::new()
            } else {
                format!(", cosigned by {}", a.cosigned_by.join(", "))
            }
        )?;
    }
    if let Some(size) = a.pending_witness {
        writeln!(
            o,
            "PENDING      checkpoint size {size} awaits witness cosignature ({} needed); the latest final one has size {}",
            a.witness_quorum, a.final_size
        )?;
    }
    if a.omissions > 0 {
        writeln!(
            o,
            "OMISSION     {} event(s) missing from the hub's audit log: run `huitong audit verify`",
            a.omissions
        )?;
    }
    if a.split_views > 0 {
        writeln!(
            o,
            "SPLIT VIEW   {} contradicting hub checkpoint(s) seen: run `huitong audit verify`",
            a.split_views
        )?;
    }
    if !s.rejected.is_empty() {
        let r: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(o, "rejected     {}", r.join(" "))?;
    }
    if !s.refused_peers.is_empty() {
        writeln!(o, "refused      {}", s.refused_peers.join(" "))?;
    }
    for f in &s.forks {
        writeln!(
            o,
            "FORK         feed {} ({}) at seq {}",
            f.feed,
            f.member.as_deref().unwrap_or("unknown"),
            f.seq
        )?;
    }
    Ok(())
}

pub(super) fn peers(p: &[PeerInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&p);
    }
    let mut o = std::io::stdout().lock();
    for x in p {
        writeln!(
            o,
            "{}  {}  {}",
            x.peer_id,
            x.role.as_deref().unwrap_or("-"),
            x.name.as_deref().unwrap_or("(not in charter)")
        )?;
    }
    Ok(())
}

pub(super) fn records(r: &[Record], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&r);
    }
    let mut o = std::io::stdout().lock();
    for x in r {
        let e = &x.entry;
        let w = if x.withdrawn.is_some() {
            " [已下架]"
        } else {
            ""
        };
        writeln!(
            o,
            "{:<16} {}  {}  {}/{}{}",
            e.code.as_str(),
            e.title,
            e.provider_name,
            e.share_type.label(),
            e.open_type.label(),
            w
        )?;
    }
    writeln!(o, "({} entries)", r.len())?;
    Ok(())
}

pub(super) fn record(r: &Record, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(r);
    }
    let e = &r.entry;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}  {}", e.code.as_str(), e.title)?;
    writeln!(o, "分类 classification   {}", e.classification)?;
    writeln!(
        o,
        "提供方 provider        {} ({})",
        e.provider_name, e.provider_code
    )?;
    writeln!(o, "摘要 abstract         {}", e.summary)?;
    writeln!(
        o,
        "格式 format           {} / {}",
        e.format.category.label(),
        e.format.kind
    )?;
    writeln!(
        o,
        "共享 share            {} {}",
        e.share_type.label(),
        e.share_condition.as_deref().unwrap_or("")
    )?;
    writeln!(o, "共享方式 share mode    {}", e.share_mode.label())?;
    writeln!(
        o,
        "开放 open             {} {}",
        e.open_type.label(),
        e.open_condition.as_deref().unwrap_or("")
    )?;
    writeln!(o, "更新周期 update cycle  {}", e.update_cycle.label())?;
    writeln!(o, "发布日期 published     {}", e.publish_date)?;
    if let Some(reason) = &r.withdrawn {
        writeln!(o, "已下架 withdrawn       {reason}")?;
    }
    match &r.dataset {
        Some(d) => writeln!(
            o,
            "数据 dataset           version {}, {}{}, {} chunks, updated {}",
            d.version,
            d.rows.map(|n| format!("{n} rows, ")).unwrap_or_default(),
            bytes(d.bytes),
            d.chunks,
            time_ms(d.created_at_ms)
        )?,
        None => writeln!(o, "数据 dataset           no version published yet")?,
    }
    if !e.related_codes.is_empty() {
        let c: Vec<&str> = e.related_codes.iter().map(|c| c.as_str()).collect();
        writeln!(o, "关联资源 related       {}", c.join(", "))?;
    }
    writeln!(o, "信息项 items ({}):", e.items.len())?;
    for i in &e.items {
        let share = i
            .share_type
            .map(|s| format!(" {}", s.label()))
            .unwrap_or_default();
        writeln!(
            o,
            "  {:<20} {} {}{}",
            i.name,
            i.data_type.key(),
            i.length.map(|l| l.to_string()).unwrap_or_default(),
            share
        )?;
    }
    Ok(())
}

/// Bytes in binary units (`12.3 MiB`).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A millisecond timestamp as UTC date and time.
pub(super) fn time_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}
