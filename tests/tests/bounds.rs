//! Issue #10, point 6, the data plane with real nodes: an XLSX zip bomb, and an XLSX file whose
//! styles calamine would multiply (review 10, H2), are refused with a clear error (the node
//! keeps answering); the reject report is written to a file whose path the
//! publish names; a pull never writes through a symbolic link (one at the output is refused, one
//! planted at a partial file's name is left alone); a pull on a node whose floor of free space
//! (`storage.keep_free_mib`, review 10, M9) is more than its disk has free is refused up front,
//! the error naming what was needed, what is free and what is kept back, and nothing is
//! written; `huitong gc` lets go of a consumer's superseded version and removes what
//! no kept version needs, while a provider keeps every version it published.

use std::path::{Path, PathBuf};

use huitong_node::housekeeping;
use huitong_protocol::dataset::ChunkHash;
use huitong_tests::{cli_ok, data, start_prepared};
use serde_json::Value;

/// Chunk files in node `i`'s chunk store.
fn chunk_files(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(net.nodes[i].dir.join("chunks"))? {
        let d = d?;
        if d.file_name() == "tmp" {
            continue;
        }
        for f in std::fs::read_dir(d.path())? {
            out.push(f?.path());
        }
    }
    Ok(out)
}

fn gc(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(
        &cli_ok(net, i, &["gc", "--json"])?.stdout,
    )?)
}

/// The path a refused publish names for its report.
fn report_path(stderr: &str) -> Option<PathBuf> {
    let at = stderr.find("is listed in ")? + "is listed in ".len();
    let rest = &stderr[at..];
    Some(PathBuf::from(
        &rest[..rest.find(".jsonl")? + ".jsonl".len()],
    ))
}

fn json_lines(path: &Path) -> anyhow::Result<Vec<Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

#[test]
fn bombs_reports_links_and_collected_chunks() -> anyhow::Result<()> {
    let (provider, consumer, full) = (1, 2, 3);
    let mut f = start_prepared(2, 5, &[], |net| {
        // The consumer lets go of a superseded version at once; no periodic run in between.
        net.set_env(
            consumer,
            housekeeping::ENV,
            "interval_secs=3600,gc_grace_secs=0",
        );
        // The city node keeps 16 TiB free: more than any test disk has, so it has no room.
        huitong_tests::edit_config(net, full, |c| {
            c.storage.keep_free_mib = Some(16 * 1024 * 1024)
        })
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let code = "301001/000061";
    data::publish_table_entry(net, &dir, provider, 61, "无条件共享", None)?;

    // An XLSX zip bomb: 16 MiB of sheet in a few KiB, refused before it is unpacked.
    let bomb = dir.join("bomb.xlsx");
    data::xlsx_bomb(&bomb, &["编号", "姓名", "金额", "日期", "备注"], 16)?;
    assert!(std::fs::metadata(&bomb)?.len() < 1 << 20);
    let publish_refused = |net: &huitong_testnet::Testnet, file: &std::path::Path| {
        let out = net.cli(
            provider,
            &[
                "dataset",
                "publish",
                code,
                "--from",
                &file.to_string_lossy(),
            ],
        )?;
        anyhow::ensure!(!out.status.success(), "{} was published", file.display());
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let err = publish_refused(net, &bomb)?;
    assert!(
        err.contains("zip bomb") && err.contains("sheet1.xml"),
        "{err}"
    );
    net.get(provider, "/status")?;

    // Review 10, H2: styles that calamine would copy into every cell format (200 GiB from a
    // 2 MiB file, which aborted the node) are refused before calamine reads them; the node runs on.
    let styles = dir.join("styles.xlsx");
    data::xlsx_styles_bomb(&styles, &["编号", "姓名", "金额", "日期", "备注"])?;
    assert!(std::fs::metadata(&styles)?.len() < 4 << 20);
    let err = publish_refused(net, &styles)?;
    assert!(
        err.contains("xl/styles.xml holds a single XML tag")
            && err.contains("save the sheet as CSV"),
        "{err}"
    );
    net.get(provider, "/status")?;

    // Three bad cells in 1,000 rows: the publish is refused and names the report file, which
    // lists exactly those cells.
    let csv = dir.join("bad.csv");
    data::table_csv(&csv, 1000, 0..0)?;
    let mut text = std::fs::read_to_string(&csv)?;
    for n in [2u64, 9, 499] {
        let row = data::table_row(n, "");
        let amount = format!(",{}.{:02},", n * 7 % 100_000, n % 100);
        text = text.replace(&row, &row.replacen(&amount, ",x,", 1));
    }
    std::fs::write(&csv, text)?;
    let out = net.cli(
        provider,
        &["dataset", "publish", code, "--from", &csv.to_string_lossy()],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("3 row(s)"), "{err}");
    let report = report_path(&err).ok_or_else(|| anyhow::anyhow!("no report path in: {err}"))?;
    let lines = json_lines(&report)?;
    let rows: Vec<u64> = lines.iter().filter_map(|l| l["row"].as_u64()).collect();
    assert_eq!(rows, vec![3, 10, 500], "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l["item"] == "金额" && l["value"] == "x"));
    // With --allow-rejects: 997 rows published, the report's path and counts in the answer.
    let r = data::publish(net, provider, code, &csv, &["--allow-rejects"])?;
    assert_eq!(r["rows"], 997);
    assert_eq!(
        (r["rejected_rows"].as_u64(), r["rejected_cells"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(r["report_cells"], 3);
    let kept = PathBuf::from(r["report"].as_str().unwrap_or_default());
    assert_eq!(json_lines(&kept)?.len(), 3);
    data::wait_version(net, consumer, code, 1)?;

    // A pull never writes through a link: one at the output is refused; one planted at a
    // partial file's name is left alone and the pull writes its own.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "不可覆盖")?;
    let link = dir.join("linked.csv");
    std::os::unix::fs::symlink(&victim, &link)?;
    let err = data::refused_into(net, consumer, code, &link, &[])?;
    assert!(
        err.contains("symbolic link") && err.contains("linked.csv"),
        "{err}"
    );
    let planted = dir.join(".planted.csv.huitong-partial");
    std::os::unix::fs::symlink(&victim, &planted)?;
    let planted_out = dir.join("planted.csv");
    let s = data::pull(
        net,
        consumer,
        &[code, "--out", &planted_out.to_string_lossy()],
    )?;
    assert_eq!(s["rows"], 997, "{s}");
    assert!(std::fs::symlink_metadata(&planted_out)?.is_file());
    assert_eq!(std::fs::read_to_string(&victim)?, "不可覆盖");
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert!(std::fs::symlink_metadata(&planted)?
        .file_type()
        .is_symlink());

    // Review 10, M9: a node whose floor is more than is free refuses the pull up front, naming
    // the numbers and what to do; nothing is written, and the node runs on.
    data::wait_version(net, full, code, 1)?;
    let full_out = dir.join("full.csv");
    let err = data::refused_into(net, full, code, &full_out, &[])?;
    for part in [
        "not enough free space to write",
        "needed",
        "free on its file system",
        "17592186044416 bytes (16.0 TiB) kept free for the node's database",
        "storage.keep_free_mib",
        "huitong gc",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(!full_out.exists() && huitong_node::partial::existing(&full_out).is_empty());
    net.get(full, "/status")?;

    // The consumer pulls v1, then v2 (every row changed); `huitong gc` lets go of v1 and keeps
    // exactly v2's chunks, which a pull of v2 then reuses.
    let v1_out = dir.join("v1.csv");
    let s = data::pull(net, consumer, &[code, "--out", &v1_out.to_string_lossy()])?;
    let v1_chunks = s["chunks"].as_u64().unwrap_or(0);
    let v2 = data::table_csv(&dir.join("v2.csv"), 1000, 0..1000)?;
    data::publish(net, provider, code, &v2, &[])?;
    data::wait_version(net, consumer, code, 2)?;
    let v2_out = dir.join("v2.csv.out");
    let s = data::pull(
        net,
        consumer,
        &[code, "--out", &v2_out.to_string_lossy(), "--format", "csv"],
    )?;
    let v2_chunks = s["chunks"].as_u64().unwrap_or(0);
    // A table's column chunks are small: rows of the consumer's database, not files.
    assert!(v2_chunks > 0 && v1_chunks > 0, "{s}");
    assert!(chunk_files(net, consumer)?.is_empty());
    let r = gc(net, consumer)?;
    assert_eq!(
        r["versions_dropped"].as_array().map(Vec::len),
        Some(1),
        "{r}"
    );
    assert_eq!(r["versions_dropped"][0]["version"], 1, "{r}");
    assert_eq!(r["chunks_kept"].as_u64(), Some(v2_chunks), "{r}");
    assert!(r["bytes_freed"].as_u64() > Some(0), "{r}");
    let removed = r["chunks_removed"].as_u64().unwrap_or(0);
    assert!(removed > 0 && removed <= v1_chunks, "{r}");
    let again = data::pull(
        net,
        consumer,
        &[code, "--out", &v2_out.to_string_lossy(), "--format", "csv"],
    )?;
    assert_eq!(again["bytes_fetched"], 0, "{again}");
    // Nothing more to collect.
    assert_eq!(gc(net, consumer)?["chunks_removed"], 0);

    // The provider keeps both versions it published; only a stray chunk no manifest names goes.
    let stray = b"a chunk no version names";
    let hex = ChunkHash::of(stray).to_hex();
    let stray_path = net.nodes[provider]
        .dir
        .join("chunks")
        .join(&hex[..2])
        .join(&hex);
    std::fs::create_dir_all(stray_path.parent().unwrap_or(Path::new("/")))?;
    std::fs::write(&stray_path, stray)?;
    let r = gc(net, provider)?;
    assert_eq!(r["chunks_removed"], 1, "{r}");
    assert_eq!(r["versions_kept"], 2, "{r}");
    assert!(!stray_path.exists());
    let s = data::pull(
        net,
        consumer,
        &[code, "--version", "1", "--out", &v1_out.to_string_lossy()],
    )?;
    assert_eq!(s["rows"], 997, "{s}");
    // v1's chunks were removed from the consumer's rows: fetched again.
    assert!(s["bytes_fetched"].as_u64() > Some(0), "{s}");
    Ok(())
}
