//! Issue #10, point 8, with real nodes: `huitong backup` of a running node and of a stopped one,
//! `huitong restore`, and a restored node that catches up on its own feed from its peers before
//! it appends — so it never forks its own feed. Restoring used to make the node sign a second
//! entry for a seq its peers already held (a FORK on every node).
//!
//! Review s7, H1: a member that keeps winning the one range request of the restored node's feed
//! and never answers it is refuted after failing twice; the node then catches up from its
//! honest peers (it used to drop their claims after a minute and append at the stale head).
//!
//! Also: a backup of the running hub holds its audit log as of one checkpoint, checked against
//! it; nodes started by the testnet log to a size-rotated `node.log` (`run --log-file`).

use std::time::Duration;

use huitong_config::{keyfile, NODE_KEY_FILE};
use huitong_testnet::Testnet;
use huitong_tests::data::publish_entry;
use huitong_tests::rogue::Answering;
use huitong_tests::{cli_ok, entry, start, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// `huitong catalogue publish` of `e` on node `i`, as it ended.
fn publish(
    net: &Testnet,
    dir: &std::path::Path,
    i: usize,
    e: &Value,
) -> anyhow::Result<std::process::Output> {
    let file = dir.join(format!("entry-{}.json", rand::random::<u64>()));
    std::fs::write(&file, serde_json::to_vec(e)?)?;
    net.cli(i, &["catalogue", "publish", &file.to_string_lossy()])
}

fn own_seq(net: &mut Testnet, i: usize) -> anyhow::Result<u64> {
    net.get(i, "/status")?["own_seq"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no own_seq"))
}

/// Whether node `i` holds catalogue entry `code` of any provider.
fn holds(net: &mut Testnet, i: usize, code: &str) -> anyhow::Result<bool> {
    let q: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
    Ok(net.get(i, &format!("/catalogue?code={q}"))?["records"]
        .as_array()
        .is_some_and(|r| !r.is_empty()))
}

/// A testnet with a rogue member admitted, whose node 1 published one entry and was backed up
/// into `<tmp>/backup`, then signed `after` more entries that reached every peer, and was
/// restored from the backup (it is stopped); returns the rogue's key and the node's own seq in
/// the backup.
fn backed_up_beside_a_rogue(
    f: &mut huitong_tests::Fixture,
    after: u32,
) -> anyhow::Result<(huitong_protocol::SecretKey, u64)> {
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let node = 1;
    let (key, _) = huitong_tests::rogue::admit(net, node)?;
    publish_entry(net, &dir, node, &entry(net, node, 1, "备份前条目"))?;
    let at_backup = own_seq(net, node)?;
    let backup = dir.join("backup");
    cli_ok(net, node, &["backup", "--out", &backup.to_string_lossy()])?;
    for n in 2..=after + 1 {
        publish_entry(net, &dir, node, &entry(net, node, n, "备份后条目"))?;
    }
    let last = format!("301001/{:06}", after + 1);
    for i in (0..net.nodes.len()).filter(|&i| i != node) {
        wait_until(WAIT, "the peers to hold the later entries", || {
            holds(net, i, &last)
        })?;
    }
    net.stop(node, false)?;
    cli_ok(
        net,
        node,
        &["restore", "--from", &backup.to_string_lossy(), "--force"],
    )?;
    Ok((key, at_backup))
}

/// Stops `peers`, then starts node `i` (restored) and waits until it answers.
fn start_alone(net: &mut Testnet, i: usize, peers: &[usize]) -> anyhow::Result<()> {
    for &p in peers {
        net.stop(p, false)?;
    }
    net.start(i)?;
    wait_until(WAIT, "the restored node to answer", || {
        Ok(net.get(i, "/status").is_ok())
    })
}

#[test]
fn restored_node_catches_up_on_its_own_feed_and_never_forks_it() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let node = 1;
    let peers: Vec<usize> = (0..net.nodes.len()).filter(|&i| i != node).collect();
    for n in 1..=3 {
        publish_entry(net, &dir, node, &entry(net, node, n, "备份前条目"))?;
    }
    let at_backup = own_seq(net, node)?;

    // A backup of the running node; an existing --out is refused.
    let b1 = dir.join("backup-running");
    let b1_s = b1.to_string_lossy().to_string();
    let out = cli_ok(net, node, &["backup", "--out", &b1_s, "--json"])?;
    let info: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info["own_seq"].as_u64(), Some(at_backup), "{info}");
    assert_eq!(info["node_key"], net.nodes[node].node_key);
    for f in ["backup.json", "db", "chunks", "huitong.toml", "node.key"] {
        assert!(b1.join(f).exists(), "{f} in the backup");
    }
    assert!(
        !net.nodes[node]
            .dir
            .join("backup-staging")
            .read_dir()?
            .any(|_| true),
        "the staged checkpoint is removed"
    );
    // A backup of the running hub holds its audit log as of one checkpoint, staged by the node
    // while it held the log (so no append could prune a tile that checkpoint needs), and
    // checked by the CLI before `backup.json` was written (review 10, M4).
    let hub = net
        .index("hub")
        .ok_or_else(|| anyhow::anyhow!("no hub in the testnet"))?;
    wait_until(WAIT, "the hub's audit log to hold a checkpoint", || {
        Ok(net.get(hub, "/status")?["audit"]["checkpoint_size"].as_u64() > Some(0))
    })?;
    let bh = dir.join("backup-hub");
    let out = cli_ok(
        net,
        hub,
        &["backup", "--out", &bh.to_string_lossy(), "--json"],
    )?;
    let info_hub: Value = serde_json::from_slice(&out.stdout)?;
    let audit_size = info_hub["audit_size"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no audit_size in {info_hub}"))?;
    let federation = net.get(hub, "/status")?["federation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hub_key = keyfile::read(&net.nodes[hub].dir.join(NODE_KEY_FILE))?.public();
    let report = huitong_node::audit_log::tiles::verify_dir(
        &bh.join("audit"),
        &huitong_protocol::audit::origin(&federation),
        &hub_key,
    )?;
    assert_eq!(report.size, audit_size, "{info_hub}");
    assert!(
        !net.nodes[hub]
            .dir
            .join("backup-staging")
            .read_dir()?
            .any(|_| true),
        "the hub's staging is removed"
    );

    let again = net.cli(node, &["backup", "--out", &b1_s])?;
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The node signs more after the backup; its peers get them.
    for n in 4..=5 {
        publish_entry(net, &dir, node, &entry(net, node, n, "备份后条目"))?;
    }
    let latest = own_seq(net, node)?;
    assert!(latest > at_backup);
    for &i in &peers {
        wait_until(WAIT, "the peers to hold the later entries", || {
            holds(net, i, "301001/000005")
        })?;
    }

    // Stopped, it can be backed up offline; then the first backup is restored over it.
    net.stop(node, false)?;
    let b2 = dir.join("backup-stopped");
    let out = cli_ok(
        net,
        node,
        &["backup", "--out", &b2.to_string_lossy(), "--json"],
    )?;
    let info2: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(info2["own_seq"].as_u64(), Some(latest), "{info2}");
    let refused = net.cli(node, &["restore", "--from", &b1_s])?;
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let restored = cli_ok(net, node, &["restore", "--from", &b1_s, "--force"])?;
    assert!(String::from_utf8_lossy(&restored.stdout).contains("catches up"));

    // Started while no peer runs, it knows it may be behind: it refuses to publish.
    start_alone(net, node, &peers)?;
    let status = net.get(node, "/status")?;
    assert_eq!(status["own_seq"].as_u64(), Some(at_backup), "{status}");
    assert!(status["catching_up"].is_object(), "{status}");
    let early = publish(net, &dir, node, &entry(net, node, 6, "恢复后过早发布"))?;
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(
        !early.status.success() && err.contains("catching up on its own feed"),
        "{err}"
    );
    let shown = cli_ok(net, node, &["status"])?;
    assert!(String::from_utf8_lossy(&shown.stdout).contains("CATCHING UP"));

    // The peers come back: it fetches its own later entries, then publishes after them.
    for &i in &peers {
        net.start(i)?;
    }
    net.wait_healthy(WAIT)?;
    wait_until(WAIT, "the restored node to catch up", || {
        let s = net.get(node, "/status")?;
        Ok(s["catching_up"].is_null() && s["own_seq"].as_u64() == Some(latest))
    })?;
    let out = publish(net, &dir, node, &entry(net, node, 6, "恢复后条目6"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        own_seq(net, node)?,
        latest + 1,
        "the feed goes on after its real head"
    );
    for &i in &peers {
        wait_until(WAIT, "every node to hold the new entry", || {
            holds(net, i, "301001/000006")
        })?;
    }
    for i in 0..net.nodes.len() {
        let s = net.get(i, "/status")?;
        assert_eq!(
            s["forks"],
            serde_json::json!([]),
            "{}: {s}",
            net.nodes[i].name
        );
        assert!(
            s["rejected"]["fork"].is_null(),
            "{}: {s}",
            net.nodes[i].name
        );
    }

    // Caught up once, it is done: a restart publishes at once.
    net.stop(node, false)?;
    net.start(node)?;
    net.wait_healthy(WAIT)?;
    assert!(net.get(node, "/status")?["catching_up"].is_null());
    publish_entry(net, &dir, node, &entry(net, node, 7, "重启后条目7"))?;

    // The testnet's nodes log to node.log (rotated by size), not to their stdout.
    let log = std::fs::read_to_string(net.nodes[node].dir.join(huitong_testnet::LOG_FILE))?;
    assert!(log.contains("node running") && log.contains("caught up on this node's own feed"));
    let stray = std::fs::read_to_string(net.nodes[node].dir.join(huitong_testnet::OUT_FILE))?;
    assert!(!stray.contains("node running"), "{stray}");
    Ok(())
}

/// Review of issue #10 (M1): a member that claims, in its sync summary, far more of a restored
/// node's own feed than exists (and never serves it) held that node in "catching up" — refusing
/// every publish — for as long as it ran. Its claim now counts only until it is shown to be
/// unbacked (not served within a minute), and the node catches up from its honest peers.
#[test]
fn a_member_claiming_entries_it_does_not_hold_cannot_stall_a_restored_node() -> anyhow::Result<()> {
    claiming_rogue_cannot_stall_a_restored_node(Answering::Drop)
}

/// Review of session 8: a member that answers every range request of a restored node's own
/// feed with `Refused` (not a failure of the request, not an empty answer) while claiming far
/// more of the feed than exists held the node in "catching up" for ever. A refusal now counts
/// as a failed request, so the claim is refuted like a dropped one.
#[test]
fn a_member_refusing_every_range_request_cannot_stall_a_restored_node() -> anyhow::Result<()> {
    claiming_rogue_cannot_stall_a_restored_node(Answering::Refuse)
}

/// A rogue member claims 1,000 entries of a restored node's feed that do not exist and answers
/// the node's range requests as `answering` says: the node catches up from its honest peers all
/// the same, refuting the claim, and publishes at the real head.
fn claiming_rogue_cannot_stall_a_restored_node(answering: Answering) -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let (key, at_backup) = backed_up_beside_a_rogue(&mut f, 0)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let node = 1;
    // Restored while its peers are down, it waits for them; the rogue reaches it first.
    let peers: Vec<usize> = (0..net.nodes.len()).filter(|&i| i != node).collect();
    start_alone(net, node, &peers)?;
    let rogue = huitong_tests::rogue::Rogue::start(&key, "海门区")?;
    rogue.answer_requests(answering)?;
    let n = &net.nodes[node];
    rogue.dial(&format!("/ip4/127.0.0.1/tcp/{}", n.port), &n.peer_id)?;
    wait_until(WAIT, "the rogue connected", || {
        Ok(rogue.sees_subscribed(&n.peer_id))
    })?;
    let me = huitong_protocol::NodeId::from_hex(&n.node_key)?;
    let claimed_seq = at_backup + 1000;
    let summary = || claim(me, claimed_seq);
    let peer = n.peer_id.clone();
    rogue.request(&peer, summary())?;
    wait_until(WAIT, "the rogue's claim heard", || {
        Ok(net.get(node, "/status")?["catching_up"]["highest_heard"].as_u64() == Some(claimed_seq))
    })?;
    // The honest peers come back; the rogue keeps claiming. The node catches up all the same.
    for &i in &peers {
        net.start(i)?;
    }
    net.wait_healthy(WAIT)?;
    let mut claimed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(180),
        "the restored node to catch up",
        || {
            if claimed.elapsed() > Duration::from_secs(2) {
                rogue.request(&peer, summary())?;
                claimed = std::time::Instant::now();
            }
            Ok(net.get(node, "/status")?["catching_up"].is_null())
        },
    )?;
    assert!(huitong_tests::rejected(net, node, "own_head_claim")? >= 1);
    publish_entry(net, &dir, node, &entry(net, node, 2, "恢复后条目"))?;
    assert_eq!(own_seq(net, node)?, at_backup + 1);
    Ok(())
}

/// A summary from a peer claiming that it holds `feed` up to `seq`.
fn claim(feed: huitong_protocol::NodeId, seq: u64) -> huitong_protocol::wire::SyncRequest {
    huitong_protocol::wire::SyncRequest::Summary(huitong_protocol::wire::Summary {
        charter_version: 2,
        heads: vec![huitong_protocol::wire::Head { feed, seq }],
        audit: Vec::new(),
    })
}

#[test]
fn a_member_that_never_answers_cannot_make_a_restored_node_fork() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    // Two entries after the backup reach the peers: the restored node must fetch them.
    let (key, at_backup) = backed_up_beside_a_rogue(&mut f, 2)?;
    let latest = at_backup + 2;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let node = 1;
    let peers: Vec<usize> = (0..net.nodes.len()).filter(|&i| i != node).collect();
    // The rogue reaches the restored node first and is asked for its feed; it holds every
    // request unanswered and keeps sending summaries (every 30 ms), so that it wins the feed's
    // one request again each time the last one times out.
    start_alone(net, node, &peers)?;
    let rogue = huitong_tests::rogue::Rogue::start(&key, "海门区")?;
    rogue.answer_requests(Answering::Hold)?;
    let n = &net.nodes[node];
    let (peer, me) = (
        n.peer_id.clone(),
        huitong_protocol::NodeId::from_hex(&n.node_key)?,
    );
    rogue.dial(&format!("/ip4/127.0.0.1/tcp/{}", n.port), &peer)?;
    wait_until(WAIT, "the rogue connected", || {
        Ok(rogue.sees_subscribed(&peer))
    })?;
    rogue.request(&peer, claim(me, latest))?;
    wait_until(WAIT, "the rogue's claim heard", || {
        Ok(net.get(node, "/status")?["catching_up"]["highest_heard"].as_u64() == Some(latest))
    })?;
    for &i in &peers {
        net.start(i)?;
    }
    net.wait_healthy(WAIT)?;
    // The rogue's summaries come every 30 ms from a thread of their own while the test waits.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let caught_up = std::thread::scope(|s| {
        let spam = s.spawn(|| -> anyhow::Result<()> {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                rogue.request(&peer, claim(me, latest))?;
                std::thread::sleep(Duration::from_millis(30));
            }
            Ok(())
        });
        let waited = wait_until(
            Duration::from_secs(240),
            "the restored node to catch up",
            || Ok(net.get(node, "/status")?["catching_up"].is_null()),
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let spammed = spam
            .join()
            .map_err(|_| anyhow::anyhow!("the rogue's thread panicked"));
        waited.and(spammed?)
    });
    caught_up?;
    // Caught up with the entries its peers hold, not at the backup's head (whether the rogue
    // was refuted first or an honest peer won the feed's request in between).
    assert_eq!(own_seq(net, node)?, latest, "caught up to the real head");
    publish_entry(net, &dir, node, &entry(net, node, 4, "恢复后条目"))?;
    assert_eq!(own_seq(net, node)?, latest + 1);
    let hub = net
        .index("hub")
        .ok_or_else(|| anyhow::anyhow!("no hub in the testnet"))?;
    wait_until(WAIT, "the hub to hold the new entry", || {
        holds(net, hub, "301001/000004")
    })?;
    let forks = net.get(hub, "/status")?["forks"].clone();
    assert!(
        forks.as_array().is_some_and(|a| a.is_empty()),
        "no fork: {forks}"
    );
    Ok(())
}
