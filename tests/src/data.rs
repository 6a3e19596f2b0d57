//! Helpers for dataset exchange tests: generated inputs, byte-exact comparison, transfer
//! counters, and pulls run as real `huitong pull` processes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};
use huitong_testnet::Testnet;
use serde_json::{json, Value};

/// Writes `len` random bytes (from /dev/urandom, so no two chunks are alike).
pub fn random_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut src = std::fs::File::open("/dev/urandom")?.take(len);
    let mut dst = std::io::BufWriter::new(std::fs::File::create(path)?);
    std::io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    Ok(())
}

/// Whether two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let mut fa = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(a)?);
    let mut fb = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The transfer counters of node `i`.
pub fn transfer(net: &mut Testnet, i: usize) -> anyhow::Result<Value> {
    Ok(net.get(i, "/status")?["transfer"].clone())
}

/// A counter of node `i`'s transfer status.
pub fn counter(net: &mut Testnet, i: usize, name: &str) -> anyhow::Result<u64> {
    transfer(net, i)?[name]
        .as_u64()
        .with_context(|| format!("status.transfer.{name} missing"))
}

/// Starts `huitong pull … --json` on node `i` as a separate process.
pub fn spawn_pull(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(&net.bin)
        .arg("--dir")
        .arg(&net.nodes[i].dir)
        .arg("pull")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Runs `huitong pull … --json` on node `i`; returns the summary.
pub fn pull(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<Value> {
    let out = spawn_pull(net, i, args)?.wait_with_output()?;
    if !out.status.success() {
        bail!("pull failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Runs `huitong pull … --json` on node `i` and fails if it has not ended within `deadline`
/// (the pull is killed then); returns the summary and how long the pull took.
pub fn pull_within(
    net: &Testnet,
    i: usize,
    args: &[&str],
    deadline: std::time::Duration,
) -> anyhow::Result<(Value, std::time::Duration)> {
    let start = std::time::Instant::now();
    let mut child = spawn_pull(net, i, args)?;
    while child.try_wait()?.is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the pull {args:?} did not end within {deadline:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let took = start.elapsed();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("pull failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((serde_json::from_slice(&out.stdout)?, took))
}

/// Runs `huitong pull` on node `i` expecting a failure; returns its stderr.
pub fn pull_refused(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = spawn_pull(net, i, args)?.wait_with_output()?;
    if out.status.success() {
        bail!(
            "pull succeeded but was expected to fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes `len` random bytes to `src`, publishes them on node `i` as version 1 of file resource
/// `code`, and waits until node `seen_by` knows the version; returns the publish report.
pub fn publish_random_file(
    net: &mut Testnet,
    i: usize,
    code: &str,
    src: &Path,
    len: u64,
    seen_by: usize,
) -> anyhow::Result<Value> {
    random_file(src, len)?;
    let report = publish(net, i, code, src, &["--file"])?;
    wait_version(net, seen_by, code, 1)?;
    Ok(report)
}

/// Publishes from node `i` the catalogue entry `seq` ([`crate::entry`], code `301001/<seq>`)
/// titled `title`, and `len` random bytes (written to `dir/source-<seq>.bin`, returned) as its
/// version 1, and waits until node `seen_by` knows the version.
pub fn publish_file_resource(
    net: &mut Testnet,
    dir: &Path,
    i: usize,
    seq: u32,
    title: &str,
    len: u64,
    seen_by: usize,
) -> anyhow::Result<PathBuf> {
    publish_entry(net, dir, i, &crate::entry(net, i, seq, title))?;
    let src = dir.join(format!("source-{seq}.bin"));
    publish_random_file(net, i, &format!("301001/{seq:06}"), &src, len, seen_by)?;
    Ok(src)
}

/// Publishes `path` as a new version of `code` on node `i`; returns the report.
pub fn publish(
    net: &Testnet,
    i: usize,
    code: &str,
    path: &Path,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let p = path.to_string_lossy();
    let mut args = vec!["dataset", "publish", code, "--from", &p, "--json"];
    args.extend_from_slice(extra);
    let out = net.cli(i, &args)?;
    if !out.status.success() {
        bail!("publish failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Publishes on node `i` the [`table_entry`] `seq` with this share type and condition.
pub fn publish_table_entry(
    net: &Testnet,
    dir: &Path,
    i: usize,
    seq: u32,
    share: &str,
    condition: Option<&str>,
) -> anyhow::Result<()> {
    publish_entry(net, dir, i, &table_entry(net, i, seq, share, condition))
}

/// A table entry of node `i` with items 编号, 姓名, 金额, 日期 and 备注 (备注 is 有条件共享 when
/// the entry is 无条件共享).
pub fn table_entry(
    net: &Testnet,
    i: usize,
    seq: u32,
    share: &str,
    condition: Option<&str>,
) -> Value {
    let n = &net.nodes[i];
    let mut e = json!({
        "classification": "301001",
        "title": format!("交换测试表{seq}"),
        "code": format!("301001/{seq:06}"),
        "provider_name": n.name,
        "provider_code": n.uscc,
        "abstract": "数据交换测试用的库表资源。",
        "format": {"category": "数据库", "type": "mysql"},
        "items": [
            {"name": "编号", "data_type": "C", "length": 20},
            {"name": "姓名", "data_type": "C", "length": 50},
            {"name": "金额", "data_type": "N", "length": 12},
            {"name": "日期", "data_type": "D"},
            {"name": "备注", "data_type": "C", "length": 200},
        ],
        "share_type": share,
        "share_mode": "库表",
        "open_type": "不予开放",
        "update_cycle": "每日",
        "publish_date": "2026-11-20",
    });
    if let Some(c) = condition {
        e["share_condition"] = json!(c);
    }
    if share == "无条件共享" {
        e["items"][4]["share_type"] = json!("有条件共享");
    }
    e
}

/// One CSV row of the [`table_entry`] layout; `tag` changes the 姓名 and 备注 text.
pub fn table_row(n: u64, tag: &str) -> String {
    format!(
        "NO{n:010},{tag}张三{n},{}.{:02},2026-{:02}-{:02},第{n}条{tag}备注",
        n * 7 % 100_000,
        n % 100,
        n % 12 + 1,
        n % 28 + 1
    )
}

/// Writes a CSV of `rows` rows; rows in `changed` get another tag.
pub fn table_csv(path: &Path, rows: u64, changed: std::ops::Range<u64>) -> anyhow::Result<PathBuf> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "编号,姓名,金额,日期,备注")?;
    for n in 0..rows {
        let tag = if changed.contains(&n) { "改" } else { "" };
        writeln!(w, "{}", table_row(n, tag))?;
    }
    w.flush()?;
    Ok(path.to_path_buf())
}

/// Publishes a catalogue entry from node `i` (asserting success).
pub fn publish_entry(net: &Testnet, dir: &Path, i: usize, entry: &Value) -> anyhow::Result<()> {
    let file = dir.join(format!("entry-{}.json", rand::random::<u64>()));
    std::fs::write(&file, serde_json::to_vec(entry)?)?;
    crate::cli_ok(net, i, &["catalogue", "publish", &file.to_string_lossy()]).map(|_| ())
}

/// The latest version node `i` knows of `code` (0 when none).
pub fn latest_version(net: &mut Testnet, i: usize, code: &str) -> anyhow::Result<u64> {
    let q: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
    let v = net.get(i, &format!("/datasets/versions?code={q}"))?;
    Ok(v[0]["versions"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|d| d["version"].as_u64())
        .unwrap_or(0))
}

/// Waits until node `i` knows version `version` (or later) of `code`.
pub fn wait_version(net: &mut Testnet, i: usize, code: &str, version: u64) -> anyhow::Result<()> {
    crate::wait_until(
        std::time::Duration::from_secs(60),
        &format!("{code} v{version} on node {i}"),
        || Ok(latest_version(net, i, code)? >= version),
    )
}

/// `huitong pull CODE --out PATH [extra…]` on node `i`, expecting a refusal; returns stderr.
pub fn refused_into(
    net: &Testnet,
    i: usize,
    code: &str,
    out: &Path,
    extra: &[&str],
) -> anyhow::Result<String> {
    let out = out.to_string_lossy();
    let mut args = vec![code, "--out", &out];
    args.extend_from_slice(extra);
    pull_refused(net, i, &args)
}

/// SpreadsheetML namespace.
const XLSX_NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";

/// Starts a one-sheet workbook at `path`: the package and workbook relationships, the workbook,
/// and `xl/worksheets/sheet1.xml` opened up to the end of its header row `header` (the caller
/// writes `</row>`, any rows, and the end of the sheet).
fn xlsx_start(
    path: &Path,
    header: &[&str],
) -> anyhow::Result<(zip::ZipWriter<std::fs::File>, zip::write::SimpleFileOptions)> {
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    const PKG: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
    let mut z = zip::ZipWriter::new(std::fs::File::create(path)?);
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file("_rels/.rels", o)?;
    write!(
        z,
        r#"<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    )?;
    z.start_file("xl/workbook.xml", o)?;
    write!(
        z,
        r#"<workbook xmlns="{XLSX_NS}" xmlns:r="{REL}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    )?;
    z.start_file("xl/_rels/workbook.xml.rels", o)?;
    write!(
        z,
        r#"<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#
    )?;
    z.start_file("xl/worksheets/sheet1.xml", o)?;
    write!(z, r#"<worksheet xmlns="{XLSX_NS}"><sheetData><row>"#)?;
    for h in header {
        write!(z, r#"<c t="inlineStr"><is><t>{h}</t></is></c>"#)?;
    }
    Ok((z, o))
}

/// Writes a one-sheet workbook: the header row `header`, then `rows`, every cell an inline
/// string (as an export of a department's spreadsheet).
pub fn xlsx_table(path: &Path, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let (mut z, _) = xlsx_start(path, header)?;
    write!(z, "</row>")?;
    for row in rows {
        write!(z, "<row>")?;
        for cell in row {
            let cell = cell
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            write!(z, r#"<c t="inlineStr"><is><t>{cell}</t></is></c>"#)?;
        }
        write!(z, "</row>")?;
    }
    write!(z, "</sheetData></worksheet>")?;
    z.finish()?;
    Ok(())
}

/// Writes review 10's styles bomb, about 2 MiB: a workbook whose first sheet holds only the
/// header `header` and whose `xl/styles.xml` names one font of 1 MiB of random letters and
/// digits (so the part does not compress past 100×) in 200,000 `<xf fontId="0"/>`. calamine
/// copies the font name into every `xf`: it would ask for 200 GiB.
pub fn xlsx_styles_bomb(path: &Path, header: &[&str]) -> anyhow::Result<()> {
    use rand::Rng;
    let (mut z, o) = xlsx_start(path, header)?;
    write!(z, "</row></sheetData></worksheet>")?;
    z.start_file("xl/styles.xml", o)?;
    let name: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(1 << 20)
        .map(char::from)
        .collect();
    write!(
        z,
        r#"<styleSheet xmlns="{XLSX_NS}"><fonts count="1"><font><name val="{name}"/></font></fonts><cellXfs count="200000">"#
    )?;
    z.write_all(r#"<xf fontId="0"/>"#.repeat(200_000).as_bytes())?;
    write!(z, "</cellXfs></styleSheet>")?;
    z.finish()?;
    Ok(())
}

/// Writes a zip bomb shaped like a workbook: a first sheet whose header names `header`, then
/// `mib` MiB of one repeated row, deflated to a few dozen KiB (an XLSX file is a zip archive).
pub fn xlsx_bomb(path: &Path, header: &[&str], mib: usize) -> anyhow::Result<()> {
    let (mut z, _) = xlsx_start(path, header)?;
    write!(z, "</row>")?;
    let row: String = std::iter::once("<row>".to_string())
        .chain(
            header
                .iter()
                .map(|_| r#"<c t="inlineStr"><is><t>A</t></is></c>"#.to_string()),
        )
        .chain(std::iter::once("</row>".to_string()))
        .collect::<String>()
        .repeat(1024);
    let mut written = 0;
    while written < mib << 20 {
        z.write_all(row.as_bytes())?;
        written += row.len();
    }
    write!(z, "</sheetData></worksheet>")?;
    z.finish()?;
    Ok(())
}
