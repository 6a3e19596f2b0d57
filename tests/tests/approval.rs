//! Issue #9, points 3 and 6, with real nodes: the provider may approve fewer 信息项 and a
//! shorter period than applied for and the grant follows that (its token expires at 24:00 of the
//! approved day in the federation's time zone, Asia/Shanghai); a hub that mints a token wider
//! than the approval (a test-only fault switched on in the real hub process) gets no
//! endorsement: the provider refuses it and reports it by revoking, with the reason, in its feed.

use huitong_tests::data;
use huitong_tests::workflow::{apply, apps, wait_state};
use huitong_tests::{cli_ok, start};

/// 2098-06-30 24:00 in Beijing (16:00 UTC), minus one second.
const END_OF_2098_06_30_CST: u64 = 4_054_982_399;

#[test]
fn grants_follow_a_partial_approval_and_a_wider_token_is_refused() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    let code = "301001/000051";
    data::publish_table_entry(net, &dir, provider, 51, "有条件共享", Some("仅限核验"))?;
    let csv = data::table_csv(&dir.join("t.csv"), 2_000, 0..0)?;
    data::publish(net, provider, code, &csv, &[])?;
    data::wait_version(net, consumer, code, 1)?;

    // Partial approval: one of three 信息项, a shorter period.
    let id = apply(net, consumer, code, "编号,姓名,金额")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    let out = net.cli(provider, &["approve", &id, "--fields", "编号,日期"])?;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not applied for"),
        "approving an item not applied for: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = net.cli(provider, &["approve", &id, "--until", "2100-01-01"])?;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shorter period"),
        "approving a longer period: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli_ok(
        net,
        provider,
        &["approve", &id, "--fields", "编号", "--until", "2098-06-30"],
    )?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;
    let a = apps(net, consumer, "--outgoing")?
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .unwrap_or_default();
    assert_eq!(a["approved_fields"], serde_json::json!(["编号"]), "{a}");
    assert_eq!(a["approved_until"], "2098-06-30", "{a}");
    // The token itself ends at 24:00 of the approved day, Beijing time (point 6).
    assert_eq!(
        a["grant_expires"].as_u64(),
        Some(END_OF_2098_06_30_CST),
        "{a}"
    );

    let x = dir.join("x.csv").to_string_lossy().to_string();
    let s = data::pull(net, consumer, &[code, "--out", &x])?;
    assert_eq!(s["fields"], serde_json::json!(["编号"]), "{s}");
    let err = data::pull_refused(net, consumer, &[code, "--fields", "编号,姓名", "--out", &x])?;
    assert!(err.contains("outside the grant"), "{err}");

    // A hub that ignores the partial approval: the provider does not endorse its token.
    std::fs::write(
        net.nodes[hub].dir.join("faults"),
        "hub-mints-applied-scope\n",
    )?;
    let wide = apply(net, consumer, code, "编号,姓名")?;
    wait_state(net, provider, "--incoming", &wide, "accepted")?;
    cli_ok(net, provider, &["approve", &wide, "--fields", "编号"])?;
    wait_state(net, consumer, "--outgoing", &wide, "revoked")?;
    let a = apps(net, consumer, "--outgoing")?
        .into_iter()
        .find(|a| a["id"] == wide.as_str())
        .unwrap_or_default();
    let reason = a["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not within the provider's approval") && reason.contains("姓名"),
        "{a}"
    );
    let err = data::pull_refused(net, consumer, &[code, "--grant", &wide, "--out", &x])?;
    assert!(
        err.contains("no issued and endorsed grant") || err.contains("revoked"),
        "{err}"
    );
    // The refusal is in the hub's audit log, as the provider's revocation.
    huitong_tests::wait_until(
        std::time::Duration::from_secs(90),
        "the refusal in the audit log",
        || {
            let out = net.cli(hub, &["audit", "verify", "--record", &wide, "--json"])?;
            Ok(out.status.success()
                && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)?
                    .iter()
                    .any(|r| r["kind"] == "revocation"))
        },
    )?;
    Ok(())
}

/// Review s7, X1: the hub appends one step (acceptance or rejection) for each application
/// submitted, so one member applying up to its own feed quota used to spend the hub's quota too,
/// and then nobody's application was accepted (nor any token issued) for the hour. Now one
/// applicant's applications take at most 1/16 of the hub's quota an hour, and all members'
/// at most half: another member's application is accepted at once, and the hub still appends
/// its own entries.
#[test]
fn one_member_applying_in_bulk_cannot_spend_the_hubs_feed_quota() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer, city) = (0, 1, 2, 3);
    let code = "301001/000052";
    data::publish_table_entry(net, &dir, provider, 52, "有条件共享", Some("仅限核验"))?;
    // The hub holds two entries of its own; the quota is 48 entries an hour.
    for n in 1..=2 {
        data::publish_entry(
            net,
            &dir,
            hub,
            &huitong_tests::entry(net, hub, n, "枢纽自有资源"),
        )?;
    }
    let auth = net.dir.join("authority.key");
    cli_ok(
        net,
        hub,
        &[
            "charter",
            "quota",
            "--entries-per-hour",
            "48",
            "--authority-key",
            &auth.to_string_lossy(),
        ],
    )?;
    for i in [provider, consumer, city] {
        huitong_tests::wait_charter(net, i, 2)?;
    }
    huitong_tests::wait_until(
        std::time::Duration::from_secs(60),
        "the entry on the applicants' nodes",
        || {
            Ok(cli_ok(net, consumer, &["catalogue", "show", code]).is_ok()
                && cli_ok(net, city, &["catalogue", "show", code]).is_ok())
        },
    )?;
    // The consumer applies as often as its own quota lets it (48 an hour).
    let script = format!(
        "for i in $(seq 48); do {bin} --dir {dir} apply {code} --fields 编号 --purpose 核验 --basis 依据 --until 2099-12-31 >/dev/null 2>&1 || true; done",
        bin = net.bin.display(),
        dir = net.nodes[consumer].dir.display(),
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()?;
    anyhow::ensure!(status.success(), "the applying loop failed");
    let submitted = apps(net, consumer, "--outgoing")?.len();
    assert!(submitted >= 40, "{submitted} applications submitted");
    // Another member's application is accepted all the same.
    let id = apply(net, city, code, "编号")?;
    wait_state(net, city, "--outgoing", &id, "accepted")?;
    // The consumer's: 48 / 16 = 3 accepted this hour, the rest still waiting.
    let consumer_states = || -> anyhow::Result<Vec<String>> {
        Ok(apps(net, consumer, "--outgoing")?
            .iter()
            .map(|a| a["state"].as_str().unwrap_or_default().to_string())
            .collect())
    };
    huitong_tests::wait_until(
        std::time::Duration::from_secs(60),
        "3 of the consumer's applications accepted",
        || {
            Ok(consumer_states()?
                .iter()
                .filter(|s| *s == "accepted")
                .count()
                >= 3)
        },
    )?;
    let states = consumer_states()?;
    let accepted = states.iter().filter(|s| *s == "accepted").count();
    assert_eq!(accepted, 3, "{states:?}");
    assert_eq!(
        states.iter().filter(|s| *s == "submitted").count(),
        submitted - 3,
        "{states:?}"
    );
    // The hub's own half of its quota is intact.
    data::publish_entry(
        net,
        &dir,
        hub,
        &huitong_tests::entry(net, hub, 3, "配额内的枢纽资源"),
    )?;
    Ok(())
}
