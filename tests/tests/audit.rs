//! The hub's audit log with real nodes: a granted pull's receipt and every workflow step land in
//! the log, cosigned by the city witness, provable on any node (from its own mirror with the hub
//! stopped) and offline from a proof file;
//! hand-made tokens (expired, forged approval, not rooted in the platform key) are refused by
//! the provider; a tampered tile is named by `audit verify`; a hub that signs two different
//! checkpoints (or one that does not extend its log) is caught by the departments; a hub killed
//! while logging loses nothing, and charter changes are logged.

use std::path::Path;
use std::time::Duration;

use huitong_config::{keyfile, NODE_KEY_FILE};
use huitong_protocol::audit::note::{open_checkpoint, sign_checkpoint};
use huitong_protocol::grant::{assemble, endorse, mint, GrantFacts};
use huitong_protocol::SecretKey;
use huitong_testnet::Testnet;
use huitong_tests::data;
use huitong_tests::workflow::{apply, wait_state};
use huitong_tests::{cli_ok, start, wait_until};
use serde_json::Value;

fn key_of(net: &Testnet, i: usize) -> anyhow::Result<SecretKey> {
    Ok(keyfile::read(&net.nodes[i].dir.join(NODE_KEY_FILE))?)
}

/// `audit verify --record ID --json` on node `i`, if it succeeds.
fn proved(net: &Testnet, i: usize, id: &str) -> anyhow::Result<Vec<Value>> {
    let out = cli_ok(net, i, &["audit", "verify", "--record", id, "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The audit log origin of the testnet's federation.
fn origin_of(net: &mut Testnet) -> anyhow::Result<String> {
    let federation = net.get(0, "/status")?["federation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(huitong_protocol::audit::origin(&federation))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes a token for `fields` of `code` to `path`, minted by `platform` and endorsed by
/// `approver`, for the consumer key.
fn token_file(
    path: &Path,
    platform: &SecretKey,
    approver: &SecretKey,
    provider: &SecretKey,
    consumer: &SecretKey,
    code: &str,
    expires: u64,
) -> anyhow::Result<()> {
    let facts = GrantFacts {
        id: "0123456789abcdef0123456789abcdef".into(),
        code: code.into(),
        provider: provider.public(),
        consumer: consumer.public(),
        fields: vec!["编号".into()],
        expires,
    };
    let token = mint(platform, &facts)?;
    let block = endorse(approver, &token, &facts)?;
    std::fs::write(path, assemble(&token, &block)?)?;
    Ok(())
}

#[test]
fn granted_pull_is_receipted_logged_cosigned_and_provable() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    let code = "301001/000031";
    data::publish_table_entry(
        net,
        &dir,
        provider,
        31,
        "有条件共享",
        Some("仅用于社会救助核验"),
    )?;
    let csv = data::table_csv(&dir.join("t.csv"), 5_000, 0..0)?;
    data::publish(net, provider, code, &csv, &[])?;
    data::wait_version(net, consumer, code, 1)?;

    let id = apply(net, consumer, code, "编号,姓名")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    cli_ok(net, provider, &["approve", &id])?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;
    let out = dir.join("granted.csv");
    let s = data::pull(net, consumer, &[code, "--out", &out.to_string_lossy()])?;
    let receipt = s["receipt"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the pull has no receipt: {s}"))?
        .to_string();

    // The receipt reaches the hub's log through the consumer's feed; the consumer proves its
    // inclusion against a checkpoint the city has cosigned.
    wait_until(
        Duration::from_secs(90),
        "the receipt proved against a cosigned checkpoint",
        || {
            let v = proved(net, consumer, &receipt)?;
            Ok(v.len() == 1
                && v[0]["kind"] == "receipt"
                && v[0]["matches_local"] == true
                && v[0]["checkpoint"]["cosigned_by"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|w| w == "南通市数据局")))
        },
    )?;
    // The consumer mirrors the log: with the hub stopped it still proves the receipt, offline.
    wait_until(Duration::from_secs(60), "the consumer's mirror", || {
        let out = cli_ok(net, consumer, &["audit", "verify", "--json"])?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["disk"]["size"].as_u64().is_some() && v["disk"]["size"] == v["latest"]["size"])
    })?;
    net.stop(hub, false)?;
    let offline = proved(net, consumer, &receipt)?;
    assert_eq!(offline[0]["offline"], true, "{offline:?}");
    net.start(hub)?;
    wait_until(Duration::from_secs(60), "the hub back", || {
        Ok(net.get(hub, "/status").is_ok())
    })?;
    // Every node lists the receipt under its grant: who pulled what, how many bytes.
    let listed: Vec<Value> = serde_json::from_slice(
        &cli_ok(net, hub, &["audit", "receipts", "--grant", &id, "--json"])?.stdout,
    )?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], receipt.as_str());
    assert_eq!(listed[0]["fields"], serde_json::json!(["编号", "姓名"]));
    assert!(listed[0]["bytes"].as_u64().unwrap_or(0) > 0, "{listed:?}");
    // Every step of the application is logged: submitted, accepted, approved, issued, endorsed.
    let steps = proved(net, provider, &id)?;
    let mut kinds: Vec<&str> = steps.iter().filter_map(|r| r["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["application", "decision", "decision", "grant", "grant"],
        "{steps:?}"
    );

    // A proof file exported on the provider checks offline on the hub; an altered one is refused
    // naming the index it claims.
    let proof = dir.join("receipt.tlog-proof");
    cli_ok(
        net,
        provider,
        &["audit", "export-proof", &receipt, &proof.to_string_lossy()],
    )?;
    let text = std::fs::read_to_string(&proof)?;
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\n"), "{text}");
    let ok = cli_ok(
        net,
        hub,
        &[
            "audit",
            "verify",
            "--proof",
            &proof.to_string_lossy(),
            "--json",
        ],
    )?;
    let ok: Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(ok["kind"], "receipt");
    let index = ok["index"].as_u64().unwrap_or(0);
    assert!(index > 0, "the receipt comes after the charter: {ok}");
    let altered = dir.join("altered.tlog-proof");
    std::fs::write(
        &altered,
        text.replace(
            &format!("\nindex {index}\n"),
            &format!("\nindex {}\n", index - 1),
        ),
    )?;
    let out = net.cli(
        hub,
        &["audit", "verify", "--proof", &altered.to_string_lossy()],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("entry {} is not included", index - 1)),
        "{err}"
    );

    // Hand-made tokens presented with `pull --token`: each refused by the provider.
    let (hub_key, provider_key, consumer_key) = (
        key_of(net, hub)?,
        key_of(net, provider)?,
        key_of(net, consumer)?,
    );
    let x = dir.join("x.csv").to_string_lossy().to_string();
    let later = now_secs() + 86_400;
    let cases = [
        (
            "expired",
            &hub_key,
            &provider_key,
            now_secs() - 3_600,
            "expired",
        ),
        (
            "forged approval",
            &hub_key,
            &consumer_key,
            later,
            "approval",
        ),
        (
            "not rooted",
            &consumer_key,
            &provider_key,
            later,
            "platform key",
        ),
    ];
    for (what, platform, approver, expires, want) in cases {
        let t = dir.join(format!("{}.token", what.replace(' ', "-")));
        token_file(
            &t,
            platform,
            approver,
            &provider_key,
            &consumer_key,
            code,
            expires,
        )?;
        let err = data::pull_refused(
            net,
            consumer,
            &[
                code,
                "--fields",
                "编号",
                "--token",
                &t.to_string_lossy(),
                "--out",
                &x,
            ],
        )?;
        assert!(err.contains(want), "{what}: {err}");
    }

    // A tampered hash tile: `audit verify` on the hub names the entry.
    cli_ok(net, hub, &["audit", "verify"])?;
    let audit = net.nodes[hub].dir.join("audit");
    let note = std::fs::read(audit.join("checkpoint"))?;
    let origin = origin_of(net)?;
    let size = open_checkpoint(&note, &origin, &hub_key.public(), &[])?.size;
    assert!((3..256).contains(&size), "size {size}");
    let tile = audit.join(format!("tile/0/000.p/{size}"));
    let mut bytes = std::fs::read(&tile)?;
    bytes[2 * 32 + 5] ^= 0x40;
    std::fs::write(&tile, bytes)?;
    let out = net.cli(hub, &["audit", "verify"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("entry 2: tile/0/000.p/{size}")),
        "{err}"
    );
    Ok(())
}

#[test]
fn hub_showing_two_checkpoints_is_caught() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let city = net.nodes.len() - 1;
    let hub_key = key_of(net, 0)?;
    let origin = origin_of(net)?;
    // Every node holds the hub's honest checkpoint (the charter's record).
    let mut size = 0;
    wait_until(
        Duration::from_secs(60),
        "every node holds a checkpoint",
        || {
            let mut sizes = Vec::new();
            for i in 0..net.nodes.len() {
                let out = cli_ok(net, i, &["audit", "verify", "--json"])?;
                let v: Value = serde_json::from_slice(&out.stdout)?;
                sizes.push(v["latest"]["size"].as_u64().unwrap_or(0));
            }
            size = sizes[0];
            Ok(size > 0 && sizes.iter().all(|&s| s == size))
        },
    )?;

    // The hub signs a different tree of the same size and shows it to department 1 only.
    let forged = sign_checkpoint(
        &hub_key,
        &origin,
        size,
        tlog_tiles::record_hash(b"another history"),
    );
    let file = dir.join("forged.checkpoint");
    std::fs::write(&file, &forged)?;
    let out = net.cli(1, &["audit", "import-checkpoint", &file.to_string_lossy()])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && said.contains("split view")
            && said.contains("two different trees"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown again, it is still a split view, but the evidence is kept once.
    let again = net.cli(1, &["audit", "import-checkpoint", &file.to_string_lossy()])?;
    assert!(String::from_utf8_lossy(&again.stdout).contains("split view"));
    assert_eq!(net.get(1, "/status")?["audit"]["split_views"], 1);
    // Department 1 passes it on: department 2 and the city witness catch it too.
    for i in [2, city] {
        wait_until(
            Duration::from_secs(60),
            &format!("split view on node {i}"),
            || {
                let out = net.cli(i, &["audit", "verify"])?;
                Ok(!out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("SPLIT VIEW"))
            },
        )?;
    }
    let status = net.get(2, "/status")?;
    assert!(
        status["audit"]["split_views"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    assert!(
        status["rejected"]["split_view"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );

    // A checkpoint for a larger tree that the hub's log cannot prove consistent with the one
    // already seen: caught by the consistency check.
    let ahead = sign_checkpoint(&hub_key, &origin, size + 3, tlog_tiles::record_hash(b"x"));
    std::fs::write(&file, &ahead)?;
    let out = net.cli(1, &["audit", "import-checkpoint", &file.to_string_lossy()])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("does not extend"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A checkpoint not signed by the hub is refused outright, not recorded as evidence.
    let by_other = sign_checkpoint(
        &key_of(net, 1)?,
        &origin,
        size,
        tlog_tiles::record_hash(b"y"),
    );
    std::fs::write(&file, &by_other)?;
    let out = net.cli(2, &["audit", "import-checkpoint", &file.to_string_lossy()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused checkpoint"),
        "{err}"
    );
    Ok(())
}

#[test]
fn hub_killed_while_logging_loses_nothing_and_stays_consistent() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    let code = "301001/000041";
    data::publish_table_entry(net, &dir, provider, 41, "有条件共享", Some("仅限核验"))?;
    wait_until(Duration::from_secs(60), "the entry on the hub", || {
        Ok(cli_ok(net, hub, &["catalogue", "show", code]).is_ok())
    })?;
    // A stream of applications from the consumer, each logged with the hub's decision on it.
    const N: usize = 60;
    let script = format!(
        "for i in $(seq {N}); do {bin} --dir {dir} apply {code} --fields 编号 --purpose 核验 --basis 依据 --until 2099-12-31 >/dev/null || exit 1; done",
        bin = net.bin.display(),
        dir = net.nodes[consumer].dir.display(),
    );
    let mut applying = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()?;
    // Kill -9 the hub once it has logged some of them, then restart it.
    wait_until(Duration::from_secs(60), "some applications logged", || {
        Ok(net.get(hub, "/status")?["audit"]["checkpoint_size"]
            .as_u64()
            .unwrap_or(0)
            >= 10)
    })?;
    net.stop(hub, true)?;
    net.start(hub)?;
    anyhow::ensure!(applying.wait()?.success(), "an application failed");
    // Every application and its decision end up in the log exactly once: charter + 2 × N.
    let want = 1 + 2 * N as u64;
    wait_until(Duration::from_secs(120), "every event logged", || {
        let v: Value =
            serde_json::from_slice(&cli_ok(net, hub, &["audit", "verify", "--json"])?.stdout)?;
        Ok(v["latest"]["size"].as_u64() == Some(want) && v["pending"] == 0)
    })?;
    // The files match the checkpoint, and no member saw a contradiction across the crash.
    for i in 0..net.nodes.len() {
        wait_until(
            Duration::from_secs(60),
            &format!("node {i} consistent at {want}"),
            || {
                let out = cli_ok(net, i, &["audit", "verify", "--json"])?;
                let v: Value = serde_json::from_slice(&out.stdout)?;
                Ok(v["latest"]["size"].as_u64() == Some(want)
                    && v["split_views"].as_array().is_some_and(|a| a.is_empty()))
            },
        )?;
    }
    // A charter change is logged too: suspend the consumer, then prove charter-2 on the provider.
    let authority = net.dir.join("authority.key");
    let uscc = net.nodes[consumer].uscc.clone();
    cli_ok(
        net,
        hub,
        &[
            "charter",
            "suspend",
            &uscc,
            "--authority-key",
            &authority.to_string_lossy(),
        ],
    )?;
    wait_until(Duration::from_secs(60), "charter-2 proved", || {
        let v = proved(net, provider, "charter-2")?;
        Ok(v.len() == 1 && v[0]["kind"] == "charter" && v[0]["index"] == want)
    })?;
    Ok(())
}
