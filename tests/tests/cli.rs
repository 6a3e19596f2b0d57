//! The CLI as a user meets it: bad input exits non-zero naming every problem with its field,
//! nothing is stored; output lines up in Chinese, prints hex in JSON, says "1 entry", and ends
//! quietly when its reader goes away (`huitong … | head`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use huitong_tests::{cli_ok, data, entry, publish, publish_ok, start, wait_until};
use serde_json::Value;

#[test]
fn malformed_entry_files_are_refused_with_field_paths_and_nothing_is_stored() -> anyhow::Result<()>
{
    let mut f = start(1, 2)?;
    let i = f.net.index("police").unwrap();
    let before = f.net.get(i, "/status")?["own_seq"].as_u64();

    // Several distinct problems: a bad USCC, an unknown item type, a missing share condition
    // (a rule across fields, checked although other fields are bad), an unknown key and a
    // value of the wrong type. Every one is reported, each once, and nothing else.
    let mut bad = entry(&f.net, i, 5, "坏条目");
    bad["provider_code"] = "91350100M000100Y44".into();
    bad["items"][1]["data_type"] = "X".into();
    bad["share_type"] = "有条件共享".into();
    bad["items"][0]["length"] = "20".into();
    bad["colour"] = "red".into();
    let out = publish(&f, i, &bad)?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = err.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("error: ") && head.ends_with(".json: 5 problems; nothing was published:"),
        "{err}"
    );
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            "  provider_code: check character is '4' but GB 32100 gives '3'",
            "  items[0].length: expected a whole number from 1 to 4294967295, found the text \"20\"",
            "  items[1].data_type: unknown type \"X\"; expected one of C N Y D T L M G B I F",
            "  share_condition: 有条件共享 needs a share_condition (the conditions and scope of sharing)",
            "  colour: unknown field; the fields of an entry are classification, title, code, provider_name, provider_code, abstract, format, items, share_type, share_condition, share_mode, open_type, open_condition, update_cycle, publish_date, related_codes",
        ],
        "{err}"
    );

    // One problem is one problem.
    let mut one = entry(&f.net, i, 6, "一个问题");
    one["title"] = serde_json::json!(["不是文本"]);
    let out = publish(&f, i, &one)?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(": 1 problem; nothing was published:\n  title: expected text, found a list\n"),
        "{err}"
    );

    // Another organisation's entry is refused by the node itself.
    let market = f.net.index("market");
    if let Some(m) = market {
        let foreign = entry(&f.net, m, 7, "他人条目");
        let out = publish(&f, i, &foreign)?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not this node's organisation"));
    }
    assert_eq!(
        f.net.get(i, "/status")?["own_seq"].as_u64(),
        before,
        "nothing was appended"
    );

    // JSONL: bad lines refuse the whole file, every problem of each named with its line; a
    // good file publishes all.
    let jsonl = f.tmp.path().join("many.jsonl");
    let mut bad_line = entry(&f.net, i, 21, "批量二");
    bad_line["update_cycle"] = "每两天".into();
    bad_line["publish_date"] = "2026-02-30".into();
    let lines = [
        entry(&f.net, i, 20, "批量一").to_string(),
        bad_line.to_string(),
        "[]".to_owned(),
    ];
    std::fs::write(&jsonl, lines.join("\n"))?;
    let out = f
        .net
        .cli(i, &["catalogue", "publish", &jsonl.to_string_lossy()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().next().is_some_and(
            |l| l.ends_with("many.jsonl: 3 problems in 2 of 3 entries; nothing was published:")
        ),
        "{err}"
    );
    assert_eq!(
        err.lines().skip(1).collect::<Vec<_>>(),
        [
            "  line 2: update_cycle: unknown update cycle \"每两天\"; expected one of realtime (实时), daily (每日), weekly (每周), monthly (每月), quarterly (每季度), half_yearly (每半年), yearly (每年), irregular (不定期)",
            "  line 2: publish_date: \"2026-02-30\" is not a date YYYY-MM-DD",
            "  line 3: not a JSON entry: a catalogue entry is a table (TOML) or an object (JSON) of fields",
        ],
        "{err}"
    );
    assert_eq!(
        f.net.get(i, "/status")?["own_seq"].as_u64(),
        before,
        "nothing was appended"
    );
    let good: Vec<String> = (20..25)
        .map(|s| entry(&f.net, i, s, &format!("批量条目{s}")).to_string())
        .collect();
    std::fs::write(&jsonl, good.join("\n"))?;
    let out = f
        .net
        .cli(i, &["catalogue", "publish", &jsonl.to_string_lossy()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 published"));
    let hub = f.net.index("hub").unwrap();
    let net = &mut f.net;
    wait_until(Duration::from_secs(30), "the batch on the hub", || {
        Ok(huitong_tests::search(net, hub, "批量条目24")?.len() == 1)
    })?;

    // TOML works too, and a second init on the same dir is refused.
    let toml_file = f.tmp.path().join("e.toml");
    let v = entry(&f.net, i, 8, "TOML条目");
    let t: toml_value::Wrapper = serde_json::from_value(serde_json::json!({"e": v}))?;
    std::fs::write(&toml_file, t.to_toml()?)?;
    let out = f.net.cli(
        i,
        &[
            "catalogue",
            "publish",
            &toml_file.to_string_lossy(),
            "--json",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let net = &mut f.net;
    wait_until(Duration::from_secs(30), "TOML entry listed", || {
        Ok(net
            .cli(i, &["catalogue", "show", "301001/000008"])?
            .status
            .success())
    })?;
    let out = f.net.cli(
        i,
        &["init", "--name", "x", "--org-code", "91350100M000100Y43"],
    )?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    Ok(())
}

/// Terminal columns of `s`: the test's text is ASCII or CJK (two columns each).
fn columns(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// The terminal column at which `needle` starts in `line`.
fn column_of(line: &str, needle: &str) -> Option<usize> {
    line.find(needle).map(|at| columns(&line[..at]))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_hex32(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn output_lines_up_prints_hex_counts_right_and_ends_quietly_in_a_pipe() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let i = f.net.index("police").unwrap();
    let dir = f.tmp.path().to_path_buf();

    // One entry: "(1 entry)", not "(1 entries)".
    let mut e = entry(&f.net, i, 1, "人口");
    e["items"] = serde_json::json!([
        {"name": "编号", "data_type": "C", "length": 20},
        {"name": "统一社会信用代码", "data_type": "C", "length": 18},
        {"name": "ID", "data_type": "N", "length": 9},
    ]);
    publish_ok(&f, i, &e)?;
    let list = stdout(&cli_ok(&f.net, i, &["catalogue", "list"])?);
    assert!(list.ends_with("(1 entry)\n"), "{list}");

    // 信息项 of different display widths: the type column starts at one terminal column, and
    // so do the values after the Chinese labels.
    let show = stdout(&cli_ok(&f.net, i, &["catalogue", "show", "301001/000001"])?);
    let at: Vec<Option<usize>> = [("编号", " C "), ("统一社会信用代码", " C "), ("ID", " N ")]
        .iter()
        .map(|(name, ty)| {
            show.lines()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| column_of(l, ty))
        })
        .collect();
    assert!(
        at[0].is_some() && at.iter().all(|c| *c == at[0]),
        "{at:?}\n{show}"
    );
    let values: Vec<Option<usize>> = [
        ("分类 classification", "301001"),
        ("提供方 provider", &f.net.nodes[i].name),
        ("更新周期 update cycle", "每日"),
        ("发布日期 published", "2026-11-20"),
    ]
    .iter()
    .map(|(label, value)| {
        show.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| column_of(l, value))
    })
    .collect();
    assert!(
        values[0].is_some() && values.iter().all(|c| *c == values[0]),
        "{values:?}\n{show}"
    );
    assert!(
        show.lines().all(|l| !l.ends_with(' ')),
        "trailing spaces:\n{show}"
    );

    // Titles of different widths: the provider column lines up in the list.
    let mut wide = entry(&f.net, i, 2, "流动人口居住登记信息");
    wide["items"] = e["items"].clone();
    publish_ok(&f, i, &wide)?;
    let list = stdout(&cli_ok(&f.net, i, &["catalogue", "list"])?);
    let provider = &f.net.nodes[i].name;
    let at: Vec<Option<usize>> = list
        .lines()
        .filter(|l| l.starts_with("301001/"))
        .map(|l| column_of(l, provider))
        .collect();
    assert!(
        at.len() == 2 && at[0].is_some() && at[0] == at[1],
        "{at:?}\n{list}"
    );
    assert!(list.ends_with("(2 entries)\n"), "{list}");

    // --json: keys, feeds and hashes are hex strings, not arrays of 32 numbers.
    data::publish_table_entry(&f.net, &dir, i, 3, "无条件共享", None)?;
    let csv = data::table_csv(&dir.join("t.csv"), 10, 0..0)?;
    data::publish(&f.net, i, "301001/000003", &csv, &[])?;
    let key = f.net.nodes[i].node_key.clone();
    let shown: Value = serde_json::from_str(&stdout(&cli_ok(
        &f.net,
        i,
        &["catalogue", "show", "301001/000003", "--json"],
    )?))?;
    assert_eq!(shown[0]["feed"], key.as_str(), "{shown}");
    assert!(is_hex32(&shown[0]["dataset"]["manifest"]), "{shown}");
    let versions: Value = serde_json::from_str(&stdout(&cli_ok(
        &f.net,
        i,
        &["dataset", "versions", "301001/000003", "--json"],
    )?))?;
    assert_eq!(
        versions[0]["versions"][0]["manifest"], shown[0]["dataset"]["manifest"],
        "{versions}"
    );
    let charter: Value =
        serde_json::from_str(&stdout(&cli_ok(&f.net, i, &["charter", "show", "--json"])?))?;
    let members = charter["members"].as_array().cloned().unwrap_or_default();
    assert!(!members.is_empty(), "{charter}");
    assert!(
        members.iter().all(|m| is_hex32(&m["node_key"])),
        "{charter}"
    );
    assert!(
        members.iter().any(|m| m["node_key"] == key.as_str()),
        "{charter}"
    );
    // The same over the admin API.
    let api = f.net.get(i, "/catalogue?code=301001%2F000003")?;
    assert_eq!(api["records"][0]["feed"], key.as_str(), "{api}");

    // `huitong … | head`: a reader that has gone away ends the command quietly, like `ls`.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["peers"],
        &["catalogue", "list"],
        &["catalogue", "list", "--json"],
        &["catalogue", "show", "301001/000001"],
        &["catalogue", "search", "人口"],
        &["charter", "show"],
        &["dataset", "versions", "301001/000003"],
        &["applications"],
    ] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = Command::new(&f.net.bin)
            .arg("--dir")
            .arg(&f.net.nodes[i].dir)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "huitong {}: {err}", args.join(" "));
        assert!(
            out.status.success() || out.status.signal() == Some(SIGPIPE),
            "huitong {}: {:?}",
            args.join(" "),
            out.status
        );
    }
    Ok(())
}

/// SIGPIPE's number (POSIX leaves it open; 13 on Linux and the BSDs).
const SIGPIPE: i32 = 13;

mod toml_value {
    /// Serialises the inner JSON object as a TOML document.
    #[derive(serde::Deserialize)]
    pub struct Wrapper {
        e: serde_json::Value,
    }
    impl Wrapper {
        pub fn to_toml(&self) -> anyhow::Result<String> {
            let mut v = self.e.clone();
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            Ok(toml::to_string(&v)?)
        }
    }
}
