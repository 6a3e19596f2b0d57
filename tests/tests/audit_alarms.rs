//! A dishonest hub, for real: a hub process built with the test-only `fault-injection` feature
//! (a line in the hub's `faults` file) shows one member a different tree, leaves a member's events out of its log,
//! or withholds consistency proofs, and every member raises the alarm (SPLIT VIEW, OMISSION,
//! withheld proof) in `status` and `audit verify`. And a checkpoint the witness has not cosigned
//! is only pending: no record is proved against it until the witness cosigns.

use std::time::Duration;

use huitong_testnet::Testnet;
use huitong_tests::workflow::apply;
use huitong_tests::{cli_ok, data, start, start_prepared, wait_until};
use serde_json::Value;

const DEADLINES: &str = "HUITONG_AUDIT_DEADLINES";

/// Switches a test-only fault on for node `i` (see node/src/audit/fault.rs).
fn fault(net: &Testnet, i: usize, line: &str) -> anyhow::Result<()> {
    std::fs::write(net.nodes[i].dir.join("faults"), format!("{line}\n"))?;
    Ok(())
}

/// Node `i`'s `/status` audit part.
fn audit_status(net: &mut Testnet, i: usize) -> anyhow::Result<Value> {
    Ok(net.get(i, "/status")?["audit"].clone())
}

/// `huitong status` text on node `i`.
fn status_text(net: &Testnet, i: usize) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&cli_ok(net, i, &["status"])?.stdout).into_owned())
}

/// `huitong audit verify` on node `i`: whether it succeeded, and what it printed.
fn verify(net: &Testnet, i: usize) -> anyhow::Result<(bool, String)> {
    let out = net.cli(i, &["audit", "verify"])?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Every member but the hub.
fn members(net: &Testnet) -> std::ops::Range<usize> {
    1..net.nodes.len()
}

/// Waits (up to two minutes for each) until `cond` holds on every member.
fn on_every_member(
    net: &mut Testnet,
    what: &str,
    mut cond: impl FnMut(&mut Testnet, usize) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    for i in members(net) {
        wait_until(
            Duration::from_secs(120),
            &format!("node {i}: {what}"),
            || cond(net, i),
        )?;
    }
    Ok(())
}

/// Publishes a 有条件共享 table of `provider` and waits until `applicant` holds it.
fn conditional_table(
    f: &huitong_tests::Fixture,
    provider: usize,
    applicant: usize,
    seq: u32,
) -> anyhow::Result<String> {
    let code = format!("301001/{seq:06}");
    data::publish_table_entry(
        &f.net,
        f.tmp.path(),
        provider,
        seq,
        "有条件共享",
        Some("仅限核验"),
    )?;
    wait_until(
        Duration::from_secs(60),
        "the entry on the applicant",
        || Ok(cli_ok(&f.net, applicant, &["catalogue", "show", &code]).is_ok()),
    )?;
    Ok(code)
}

/// Whether node `i` reports a split view in `status` (count and text) and `audit verify`
/// (failing, naming it); when not yet, an error saying what it showed instead, so a timeout
/// says which part was missing.
fn split_view_reported(net: &mut Testnet, i: usize) -> anyhow::Result<bool> {
    let count = audit_status(net, i)?["split_views"].as_u64().unwrap_or(0);
    let text = status_text(net, i)?.contains("SPLIT VIEW");
    let (ok, said) = verify(net, i)?;
    if count >= 1 && text && !ok && said.contains("SPLIT VIEW") {
        return Ok(true);
    }
    anyhow::bail!(
        "not yet: status.split_views {count}, SPLIT VIEW in status text: {text}, audit verify succeeded: {ok}, said: {}",
        said.chars().take(400).collect::<String>()
    )
}

#[test]
fn hub_showing_one_member_another_tree_is_caught_by_every_member() -> anyhow::Result<()> {
    // Shows defect 12: the split-view test injected a forged note by hand; here the hub process
    // itself answers department 1's polls with a different (hub-signed) tree.
    let mut f = start_prepared(2, 5, &[], |net| {
        let victim = net.nodes[1].node_key.clone();
        fault(net, 0, &format!("split-view:{victim}"))?;
        Ok(())
    })?;
    on_every_member(&mut f.net, "the split view reported", split_view_reported)
}

#[test]
fn split_view_reaches_members_that_never_got_the_gossip() -> anyhow::Result<()> {
    // The victim gossips no checkpoint at all (as if every gossip message it sent were lost,
    // or gossipsub dropped the repeats as duplicates): the other tree reaches the other members
    // only in the victim's anti-entropy summaries, and they still raise the alarm.
    let mut f = start_prepared(2, 5, &[], |net| {
        let victim = net.nodes[1].node_key.clone();
        fault(net, 0, &format!("split-view:{victim}"))?;
        fault(net, 1, "no-checkpoint-gossip")?;
        Ok(())
    })?;
    on_every_member(&mut f.net, "the split view reported", split_view_reported)
}

#[test]
fn hub_omitting_a_members_events_is_caught_by_every_member() -> anyhow::Result<()> {
    // Shows defect 9: the hub leaves department 1's events out of its log; nobody noticed.
    let mut f = start_prepared(2, 5, &[], |net| {
        let left_out = net.nodes[1].node_key.clone();
        fault(net, 0, &format!("omit:{left_out}"))?;
        for i in 1..net.nodes.len() {
            net.set_env(i, DEADLINES, "checkpoints=2,omission_secs=3");
        }
        Ok(())
    })?;
    let (hub, left_out, provider) = (0, 1, 2);
    let code = conditional_table(&f, provider, left_out, 51)?;
    let net = &mut f.net;
    let all_raised = |net: &mut Testnet| -> anyhow::Result<bool> {
        for i in members(net) {
            if audit_status(net, i)?["omissions"].as_u64().unwrap_or(0) == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // Department 1 applies (left out of the log); the provider's decisions on them are logged,
    // so final checkpoints keep coming. Each round waits for the log to grow.
    let mut rounds = 0;
    while !all_raised(net)? {
        anyhow::ensure!(
            rounds < 15,
            "no omission alarm on every member after {rounds} rounds"
        );
        rounds += 1;
        let before = audit_status(net, hub)?["checkpoint_size"]
            .as_u64()
            .unwrap_or(0);
        apply(net, left_out, &code, "编号")?;
        wait_until(Duration::from_secs(60), "the log grows", || {
            Ok(audit_status(net, hub)?["checkpoint_size"]
                .as_u64()
                .unwrap_or(0)
                > before)
        })?;
        wait_until(
            Duration::from_secs(60),
            "a final checkpoint on every member",
            || {
                for i in members(net) {
                    if audit_status(net, i)?["final_size"].as_u64().unwrap_or(0) <= before {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
    }
    for i in members(net) {
        assert!(status_text(net, i)?.contains("OMISSION"), "node {i}");
        let (ok, said) = verify(net, i)?;
        assert!(!ok && said.contains("OMISSION"), "node {i}: {said}");
        // Only department 1's events are missing: the provider's own are all logged.
        let v: Value = serde_json::from_slice(&net.cli(i, &["audit", "verify", "--json"])?.stdout)?;
        for o in v["omissions"].as_array().into_iter().flatten() {
            let reason = o["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with("application ") && reason.contains(&net.nodes[left_out].name),
                "node {i}: {reason}"
            );
        }
    }
    Ok(())
}

#[test]
fn hub_withholding_a_consistency_proof_is_flagged_by_every_member() -> anyhow::Result<()> {
    // Shows defect 11: a consistency proof the hub never serves was only a warning.
    let mut f = start_prepared(2, 5, &[], |net| {
        fault(net, 0, "withhold-proofs")?;
        for i in 1..net.nodes.len() {
            net.set_env(i, DEADLINES, "proof_secs=3");
        }
        Ok(())
    })?;
    let (applicant, provider) = (1, 2);
    on_every_member(&mut f.net, "the first checkpoint", |net, i| {
        Ok(audit_status(net, i)?["checkpoint_size"] != 0)
    })?;
    // Anything logged now needs a proof that the new tree extends the first one.
    let code = conditional_table(&f, provider, applicant, 52)?;
    apply(&f.net, applicant, &code, "编号")?;
    on_every_member(&mut f.net, "the withheld proof flagged", |net, i| {
        let (ok, said) = verify(net, i)?;
        Ok(!ok
            && said.contains("withheld consistency proof")
            && audit_status(net, i)?["split_views"].as_u64().unwrap_or(0) >= 1)
    })
}

#[test]
fn checkpoint_without_the_witness_is_pending_until_cosigned() -> anyhow::Result<()> {
    // Shows defect 10: a checkpoint signed by the hub alone was final; records were proved
    // against it.
    let mut f = start(2, 5)?;
    let (applicant, provider) = (1, 2);
    let city = f.net.nodes.len() - 1;
    let code = conditional_table(&f, provider, applicant, 53)?;
    let net = &mut f.net;
    wait_until(
        Duration::from_secs(60),
        "a cosigned checkpoint on the applicant",
        || {
            let a = audit_status(net, applicant)?;
            Ok(a["final_size"].as_u64().unwrap_or(0) > 0 && a["pending_witness"].is_null())
        },
    )?;
    // The witness stops; what the hub logs now is signed by the hub alone.
    net.stop(city, false)?;
    let id = apply(net, applicant, &code, "编号")?;
    wait_until(
        Duration::from_secs(60),
        "the application pending witness",
        || {
            let a = audit_status(net, applicant)?;
            let out = net.cli(applicant, &["audit", "verify", "--record", &id])?;
            Ok(a["pending_witness"].as_u64().is_some()
                && status_text(net, applicant)?.contains("PENDING")
                && !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("pending witness"))
        },
    )?;
    // The witness is back: it checks the checkpoint, cosigns it, and it becomes final.
    net.start(city)?;
    wait_until(
        Duration::from_secs(90),
        "the application proved against a cosigned checkpoint",
        || {
            let out = cli_ok(
                net,
                applicant,
                &["audit", "verify", "--record", &id, "--json"],
            )?;
            let v: Vec<Value> = serde_json::from_slice(&out.stdout)?;
            Ok(!v.is_empty()
                && v.iter().all(|r| {
                    r["checkpoint"]["cosigned_by"]
                        .as_array()
                        .is_some_and(|w| !w.is_empty())
                }))
        },
    )?;
    wait_until(Duration::from_secs(60), "nothing pending", || {
        Ok(audit_status(net, applicant)?["pending_witness"].is_null())
    })?;
    Ok(())
}
