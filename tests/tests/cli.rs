//! The CLI as a user meets it: bad input exits non-zero naming the field, nothing is stored.

use huitong_tests::{entry, publish, start, wait_until};
use std::time::Duration;

#[test]
fn malformed_entry_files_are_refused_with_field_paths_and_nothing_is_stored() -> anyhow::Result<()>
{
    let mut f = start(1, 2)?;
    let i = f.net.index("police").unwrap();
    let before = f.net.get(i, "/status")?["own_seq"].as_u64();

    let mut bad = entry(&f.net, i, 5, "坏条目");
    bad["provider_code"] = "91350100M000100Y44".into();
    bad["items"][1]["data_type"] = "X".into();
    bad["share_type"] = "有条件共享".into();
    let out = publish(&f, i, &bad)?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provider_code: check character is '4' but GB 32100 gives '3'"),
        "{err}"
    );
    assert!(
        err.contains(
            "items[1].data_type: unknown type \"X\"; expected one of C N Y D T L M G B I F"
        ),
        "{err}"
    );
    assert!(
        err.contains("3 problem(s)") || err.contains("problem(s)"),
        "{err}"
    );

    let mut unknown = entry(&f.net, i, 6, "未知字段");
    unknown["colour"] = "red".into();
    let out = publish(&f, i, &unknown)?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

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

    // JSONL: one bad line refuses the whole file, naming the line; a good file publishes all.
    let jsonl = f.tmp.path().join("many.jsonl");
    let mut bad_line = entry(&f.net, i, 21, "批量二");
    bad_line["update_cycle"] = "每两天".into();
    let lines = [entry(&f.net, i, 20, "批量一"), bad_line];
    let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(&jsonl, text.join("\n"))?;
    let out = f
        .net
        .cli(i, &["catalogue", "publish", &jsonl.to_string_lossy()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: update_cycle: unknown update cycle"),
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
