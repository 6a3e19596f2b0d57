//! The 有条件共享 workflow with real nodes: apply → hub accepts → provider approves → hub issues
//! the token (platform key) → provider endorses (third-party block) → pull with only the granted
//! fields; escalations refused by the provider with their reason; rejection; revocation of a
//! grant stops a pull in flight. (Expired tokens, forged approvals and tokens not rooted in the
//! platform key are in `audit.rs`, which mints such tokens with the testnet's keys.)

use std::time::Duration;

use huitong_tests::data::{self, counter};
use huitong_tests::workflow::{apply, wait_state};
use huitong_tests::{cli_ok, start, wait_until};

const MIB: u64 = 1024 * 1024;

#[test]
fn conditional_resource_from_application_to_pull() -> anyhow::Result<()> {
    let mut f = start(3, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer, other) = (1, 2, 3);
    let cond = Some("仅用于社会救助核验");
    data::publish_table_entry(net, &dir, provider, 11, "有条件共享", cond)?;
    data::publish_table_entry(net, &dir, provider, 12, "有条件共享", cond)?;
    data::publish_table_entry(
        net,
        &dir,
        provider,
        13,
        "不予共享",
        Some("《中华人民共和国个人信息保护法》第十三条"),
    )?;
    let csv = data::table_csv(&dir.join("t.csv"), 20_000, 0..0)?;
    data::publish(net, provider, "301001/000011", &csv, &[])?;
    data::publish(net, provider, "301001/000012", &csv, &[])?;
    data::wait_version(net, consumer, "301001/000012", 1)?;
    data::wait_version(net, other, "301001/000011", 1)?;

    // Without an application the provider refuses.
    let err = data::refused_into(net, consumer, "301001/000011", &dir.join("x.csv"), &[])?;
    assert!(err.contains("有条件共享") && err.contains("apply"), "{err}");
    // 不予共享 cannot even be applied for.
    let out = net.cli(
        consumer,
        &[
            "apply",
            "301001/000013",
            "--fields",
            "编号",
            "--purpose",
            "p",
            "--basis",
            "b",
            "--until",
            "2099-12-31",
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("不予共享") && err.contains("个人信息保护法"),
        "{err}"
    );

    // Apply → accepted by the hub → approved by the provider → granted.
    let id = apply(net, consumer, "301001/000011", "编号,姓名")?;
    wait_state(net, 0, "--incoming", &id, "accepted")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    cli_ok(net, provider, &["approve", &id])?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    // The pull finds the grant by itself and receives only the granted columns.
    let out = dir.join("granted.csv");
    let s = data::pull(
        net,
        consumer,
        &["301001/000011", "--out", &out.to_string_lossy()],
    )?;
    assert_eq!(s["fields"], serde_json::json!(["编号", "姓名"]), "{s}");
    assert_eq!(s["rows"].as_u64(), Some(20_000));
    let first = std::fs::read_to_string(&out)?
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(first, "编号,姓名\nNO0000000000,张三0");

    // Escalations, each refused by the provider with its reason.
    let x = dir.join("x.csv").to_string_lossy().to_string();
    let err = data::pull_refused(
        net,
        consumer,
        &["301001/000011", "--fields", "编号,金额", "--out", &x],
    )?;
    assert!(err.contains("outside the grant"), "{err}");
    let err = data::pull_refused(net, other, &["301001/000011", "--grant", &id, "--out", &x])?;
    assert!(err.contains("bound to another node"), "{err}");
    let err = data::pull_refused(
        net,
        consumer,
        &["301001/000012", "--grant", &id, "--out", &x],
    )?;
    assert!(err.contains("another resource"), "{err}");

    // A rejection carries its reason to the applicant.
    let rid = apply(net, other, "301001/000011", "编号")?;
    wait_state(net, provider, "--incoming", &rid, "accepted")?;
    cli_ok(
        net,
        provider,
        &["reject", &rid, "--reason", "用途与共享条件不符"],
    )?;
    wait_state(net, other, "--outgoing", &rid, "rejected")?;
    let err = data::pull_refused(net, other, &["301001/000011", "--out", &x])?;
    assert!(
        err.contains("rejected") && err.contains("用途与共享条件不符"),
        "{err}"
    );
    Ok(())
}

#[test]
fn revocation_stops_a_pull_in_flight() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    data::publish_table_entry(net, &dir, provider, 21, "有条件共享", Some("仅限应急处置"))?;
    let src = dir.join("cond.bin");
    data::publish_random_file(net, provider, "301001/000021", &src, 256 * MIB, consumer)?;
    let id = apply(net, consumer, "301001/000021", "编号")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    cli_ok(net, provider, &["approve", &id])?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    let out = dir.join("cond-out.bin");
    let child = data::spawn_pull(
        net,
        consumer,
        &["301001/000021", "--out", &out.to_string_lossy()],
    )?;
    wait_until(Duration::from_secs(120), "the pull under way", || {
        Ok(counter(net, consumer, "fetched_bytes")? >= 16 * MIB)
    })?;
    cli_ok(net, provider, &["revoke", &id, "--reason", "应急处置结束"])?;
    let done = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        !done.status.success() && err.contains("revoked"),
        "the pull must stop: {err}"
    );
    assert!(!out.exists(), "no output from a revoked pull");
    assert!(
        huitong_node::partial::existing(&out).is_empty(),
        "no partial copy kept after a revocation"
    );
    let served = counter(net, provider, "served_bytes")?;
    assert!(
        served < 256 * MIB,
        "the provider stopped serving: {served} bytes sent"
    );
    Ok(())
}
