//! A dishonest hub, for real: a hub process built with the test-only `fault-injection` feature
//! (`HUITONG_FAULT`) shows one member a different tree, and every member raises the alarm
//! (SPLIT VIEW) in `status` and `audit verify`.

use std::time::Duration;

use huitong_testnet::Testnet;
use huitong_tests::{cli_ok, start_prepared, wait_until};
use serde_json::Value;

const FAULT: &str = "HUITONG_FAULT";

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

#[test]
fn hub_showing_one_member_another_tree_is_caught_by_every_member() -> anyhow::Result<()> {
    // Shows defect 12: the split-view test injected a forged note by hand; here the hub process
    // itself answers department 1's polls with a different (hub-signed) tree.
    let mut f = start_prepared(2, 5, &[], |net| {
        let victim = net.nodes[1].node_key.clone();
        net.set_env(0, FAULT, &format!("split-view:{victim}"));
        Ok(())
    })?;
    let net = &mut f.net;
    for i in members(net) {
        wait_until(
            Duration::from_secs(120),
            &format!("node {i} reports the split view"),
            || {
                let a = audit_status(net, i)?;
                let (ok, said) = verify(net, i)?;
                Ok(a["split_views"].as_u64().unwrap_or(0) >= 1
                    && status_text(net, i)?.contains("SPLIT VIEW")
                    && !ok
                    && said.contains("SPLIT VIEW"))
            },
        )?;
    }
    Ok(())
}
