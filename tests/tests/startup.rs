//! Issue #10, point 8 (in part), with a real node: a node whose `node.org_code` does not match
//! the USCC under which the charter admits its key refuses to start, says both and what to do,
//! and starts again once the configuration is corrected.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huitong_tests::{start, wait_until};

#[test]
fn a_node_whose_org_code_is_not_its_charter_entry_refuses_to_start() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let (node, other) = (1, 2);
    f.net.stop(node, false)?;
    let toml = f.net.nodes[node].dir.join("huitong.toml");
    let original = std::fs::read_to_string(&toml)?;
    let (ours, theirs) = (
        f.net.nodes[node].uscc.clone(),
        f.net.nodes[other].uscc.clone(),
    );
    assert!(original.contains(&ours), "the config names the node's USCC");
    std::fs::write(&toml, original.replace(&ours, &theirs))?;

    let mut child = Command::new(&f.net.bin)
        .arg("--dir")
        .arg(&f.net.nodes[node].dir)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            anyhow::bail!("the misconfigured node is still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status.code(),
        Some(huitong_node::daemon::EXIT_CONFIG),
        "a configuration error exits 78, which the systemd unit does not restart"
    );
    assert!(
        err.contains(&format!("node.org_code is {theirs}"))
            && err.contains(&ours)
            && err.contains("set node.org_code"),
        "{err}"
    );

    // Corrected, it starts and answers.
    std::fs::write(&toml, original)?;
    f.net.start(node)?;
    let net = &mut f.net;
    wait_until(
        Duration::from_secs(60),
        "the corrected node to answer",
        || Ok(net.get(node, "/status").is_ok()),
    )?;
    Ok(())
}
