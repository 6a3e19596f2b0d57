//! The 有条件共享 workflow driven through the CLI: apply, list, wait for a state.

use std::time::Duration;

use huitong_testnet::Testnet;
use serde_json::Value;

use crate::{cli_ok, wait_until};

/// `applications DIR --json` on node `i`.
pub fn apps(net: &Testnet, i: usize, dir: &str) -> anyhow::Result<Vec<Value>> {
    let out = cli_ok(net, i, &["applications", dir, "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Waits until application `id` shows `state` on node `i`.
pub fn wait_state(net: &Testnet, i: usize, dir: &str, id: &str, state: &str) -> anyhow::Result<()> {
    wait_until(
        Duration::from_secs(60),
        &format!("application {id} {state} on node {i}"),
        || {
            Ok(apps(net, i, dir)?
                .iter()
                .any(|a| a["id"] == id && a["state"] == state))
        },
    )
}

/// Applies on node `i` for `fields` of `code` until 2099; returns the application id.
pub fn apply(net: &Testnet, i: usize, code: &str, fields: &str) -> anyhow::Result<String> {
    let out = cli_ok(
        net,
        i,
        &[
            "apply",
            code,
            "--fields",
            fields,
            "--purpose",
            "低保审核核验",
            "--basis",
            "《社会救助暂行办法》第十一条",
            "--until",
            "2099-12-31",
            "--json",
        ],
    )?;
    let v: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["id"].as_str().unwrap_or_default().to_string())
}
