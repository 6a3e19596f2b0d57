//! Human and JSON output of the CLI: JSON for `--json`, and the helpers every human table and
//! message goes through — [`Table`] (columns padded by display width, so Chinese text lines
//! up), [`list`] (JSON or a table of items), [`fields`] (label/value blocks) and [`count`]
//! ("1 entry", "3 entries").
//!
//! Hashes, keys and feed ids print as hex in JSON too: their serde form is hex in
//! human-readable formats (see `huitong_protocol`'s `bytes32`).

use std::io::{self, Write};

use unicode_width::UnicodeWidthStr;

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

/// `1 entry`, `3 entries`: a count with the noun in the right number.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A human table. Each column but the last is padded to its widest cell by display width (a
/// Chinese character takes two terminal columns, unicode-width), columns are two spaces apart
/// and no line ends in spaces.
#[derive(Debug, Default)]
pub struct Table {
    indent: &'static str,
    right: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts every line with `indent`.
    pub fn indent(mut self, indent: &'static str) -> Self {
        self.indent = indent;
        self
    }

    /// Aligns these columns (from 0) to the right, as numbers are.
    pub fn right_align(mut self, columns: &[usize]) -> Self {
        self.right = columns.to_vec();
        self
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Writes the table.
    pub fn write(&self, o: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.width();
                match widths.get_mut(i) {
                    Some(m) => *m = (*m).max(w),
                    None => widths.push(w),
                }
            }
        }
        for row in &self.rows {
            let mut line = String::from(self.indent);
            for (i, cell) in row.iter().enumerate() {
                let fill = " ".repeat(widths[i].saturating_sub(cell.width()));
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.contains(&i) {
                    line.push_str(&fill);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&fill);
                    }
                }
            }
            writeln!(o, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Writes `label  value` lines, the values lined up after the widest label (display width).
pub(super) fn fields(o: &mut impl Write, rows: &[(&str, String)]) -> io::Result<()> {
    let mut t = Table::new();
    for (label, value) in rows {
        t.row([(*label).to_owned(), value.clone()]);
    }
    t.write(o)
}

/// Prints a listing: JSON, or a [`Table`] with one row of cells per item (`(no {what})` when
/// there is none).
pub(super) fn list<T: serde::Serialize>(
    items: &[T],
    as_json: bool,
    what: &str,
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if as_json {
        return json(&items);
    }
    let mut t = Table::new();
    for item in items {
        t.row(row(item));
    }
    let mut o = std::io::stdout().lock();
    t.write(&mut o)?;
    if items.is_empty() {
        writeln!(o, "(no {what})")?;
    }
    Ok(())
}

/// `"  {label} {value}"` when there is a value, else nothing (optional parts of a cell).
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
        "federation   {} (charter v{}, {}{})",
        s.federation,
        s.charter_version,
        count(s.members as u64, "member", "members"),
        if s.active_member {
            ""
        } else {
            ", this node NOT active"
        }
    )?;
    writeln!(o, "peer id      {}", s.peer_id)?;
    writeln!(o, "peers        {} connected", s.connected_peers)?;
    writeln!(o, "listening    {}", s.listen.join(" "))?;
    match &s.data_listen {
        Some(a) => writeln!(o, "data port    {a} (TCP, TLS 1.3 with the node key)")?,
        None => writeln!(
            o,
            "data port    off (chunks go over the libp2p connections)"
        )?,
    }
    writeln!(
        o,
        "feeds        {} (own feed at seq {})",
        s.feeds, s.own_seq
    )?;
    if let Some(b) = &s.catching_up {
        writeln!(
            o,
            "CATCHING UP  restored from a backup (own feed at seq {} then): {b}; publishing waits until then",
            b.backup_seq
        )?;
    }
    if let Some(problem) = &s.org_code_problem {
        writeln!(
            o,
            "ORG CODE     {problem}; publishing is refused until then"
        )?;
    }
    writeln!(
        o,
        "catalogue    {}{}",
        count(s.catalogue_entries, "entry", "entries"),
        match s.search_pending {
            0 => String::new(),
            n => format!(
                " (ranked search: {} still to index)",
                count(n, "change", "changes")
            ),
        }
    )?;
    writeln!(
        o,
        "accepted     {} from peers since start",
        count(s.accepted, "entry", "entries")
    )?;
    let t = &s.transfer;
    if t.served_chunks + t.fetched_chunks + t.refused_requests + t.failed_chunks > 0 {
        writeln!(
            o,
            "data         served {} in {}, fetched {} in {}, {} refused, {} failed verification",
            bytes(t.served_bytes),
            count(t.served_chunks, "chunk", "chunks"),
            bytes(t.fetched_bytes),
            count(t.fetched_chunks, "chunk", "chunks"),
            count(t.refused_requests, "request", "requests"),
            count(t.failed_chunks, "chunk", "chunks")
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
            "OMISSION     {} missing from the hub's audit log: run `huitong audit verify`",
            count(a.omissions, "event", "events")
        )?;
    }
    if a.split_views > 0 {
        writeln!(
            o,
            "SPLIT VIEW   {} seen: run `huitong audit verify`",
            count(
                a.split_views,
                "contradicting hub checkpoint",
                "contradicting hub checkpoints"
            )
        )?;
    }
    if !s.rejected.is_empty() {
        let r: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(o, "rejected     {}", r.join(" "))?;
    }
    if !s.refused_peers.is_empty() {
        writeln!(o, "refused      {}", s.refused_peers.join(" "))?;
    }
    for e in &s.charter_equivocations {
        writeln!(
            o,
            "EQUIVOCATION charter version {}: the authority signed two ({} held, {} also seen)",
            e.version,
            &e.held[..e.held.len().min(16)],
            &e.other[..e.other.len().min(16)]
        )?;
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
    list(p, as_json, "peers connected", |x| {
        vec![
            x.peer_id.clone(),
            x.role.clone().unwrap_or_else(|| "-".into()),
            x.name.clone().unwrap_or_else(|| "(not in charter)".into()),
        ]
    })
}

pub(super) fn records(r: &[Record], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&r);
    }
    let mut t = Table::new();
    for x in r {
        let e = &x.entry;
        let withdrawn = if x.withdrawn.is_some() {
            " [已下架]"
        } else {
            ""
        };
        t.row([
            e.code.to_string(),
            e.title.clone(),
            e.provider_name.clone(),
            format!(
                "{}/{}{withdrawn}",
                e.share_type.label(),
                e.open_type.label()
            ),
        ]);
    }
    let mut o = std::io::stdout().lock();
    t.write(&mut o)?;
    writeln!(o, "({})", count(r.len() as u64, "entry", "entries"))?;
    Ok(())
}

pub(super) fn record(r: &Record, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(r);
    }
    let e = &r.entry;
    let with = |label: &str, text: Option<&str>| match text {
        Some(t) => format!("{label} {t}"),
        None => label.to_owned(),
    };
    let mut rows = vec![
        ("分类 classification", e.classification.to_string()),
        (
            "提供方 provider",
            format!("{} ({})", e.provider_name, e.provider_code),
        ),
        ("摘要 abstract", e.summary.clone()),
        (
            "格式 format",
            format!("{} / {}", e.format.category.label(), e.format.kind),
        ),
        (
            "共享 share",
            with(e.share_type.label(), e.share_condition.as_deref()),
        ),
        ("共享方式 share mode", e.share_mode.label().to_owned()),
        (
            "开放 open",
            with(e.open_type.label(), e.open_condition.as_deref()),
        ),
        ("更新周期 update cycle", e.update_cycle.label().to_owned()),
        ("发布日期 published", e.publish_date.clone()),
    ];
    if let Some(reason) = &r.withdrawn {
        rows.push(("已下架 withdrawn", reason.clone()));
    }
    rows.push((
        "数据 dataset",
        match &r.dataset {
            Some(d) => format!(
                "version {}: {}, updated {}",
                d.version,
                contents(d.rows, d.bytes, d.chunks),
                time_ms(d.created_at_ms)
            ),
            None => "no version published yet".to_owned(),
        },
    ));
    if !e.related_codes.is_empty() {
        let c: Vec<&str> = e.related_codes.iter().map(|c| c.as_str()).collect();
        rows.push(("关联资源 related", c.join(", ")));
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}  {}", e.code.as_str(), e.title)?;
    fields(&mut o, &rows)?;
    writeln!(o, "信息项 items ({}):", e.items.len())?;
    let mut t = Table::new().indent("  ");
    for i in &e.items {
        t.row([
            i.name.clone(),
            i.data_type.key().to_owned(),
            i.length.map(|l| l.to_string()).unwrap_or_default(),
            i.share_type
                .map(|s| s.label())
                .unwrap_or_default()
                .to_owned(),
        ]);
    }
    t.write(&mut o)?;
    Ok(())
}

/// What a dataset version holds: `100000 rows, 18.0 MiB in 800 chunks` (no rows for a file).
pub(super) fn contents(rows: Option<u64>, size: u64, chunks: u64) -> String {
    format!(
        "{}{} in {}",
        rows.map(|n| format!("{}, ", count(n, "row", "rows")))
            .unwrap_or_default(),
        bytes(size),
        count(chunks, "chunk", "chunks")
    )
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

/// A byte progress bar on stderr (hidden unless `show`): `{label} [=====>   ] 1.0 GiB/2.0 GiB
/// 80 MiB/s ETA 12s`, where `label` is a fixed text or `{msg:10}` for a changing one.
pub(super) fn progress_bar(show: bool, label: &str, total: Option<u64>) -> indicatif::ProgressBar {
    let target = if show {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(total, target);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{label} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// A millisecond timestamp as UTC date and time.
pub(super) fn time_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &Table) -> String {
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_line_up_by_display_width_not_characters() {
        let mut t = Table::new().indent("  ").right_align(&[2]);
        t.row(["统一社会信用代码", "C", "18"]);
        t.row(["ID", "N", "9"]);
        t.row(["编号", "", ""]);
        // 统一社会信用代码 is 8 characters but 16 columns wide.
        assert_eq!(
            text(&t),
            "  统一社会信用代码  C  18\n  ID                N   9\n  编号\n"
        );
    }

    #[test]
    fn counts_say_one_without_an_s() {
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(0, "entry", "entries"), "0 entries");
        assert_eq!(count(2, "problem", "problems"), "2 problems");
    }
}
