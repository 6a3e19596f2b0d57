//! Real nodes over real sockets: one logical catalogue across the federation.

use std::time::Duration;

use huitong_tests::{entry, publish_ok, rejected, search, start, wait_until, Fixture};

const T: Duration = Duration::from_secs(60);

/// (a) Eight nodes (hub, six departments, city): an entry published on one is found by search
/// on all of them.
#[test]
fn entry_published_on_one_node_is_found_on_all_eight() -> anyhow::Result<()> {
    let mut f: Fixture = start(6, 5)?;
    assert_eq!(f.net.nodes.len(), 8);
    let police = f.net.index("police").unwrap();
    publish_ok(
        &f,
        police,
        &entry(&f.net, police, 1, "长江流域水质监测数据"),
    )?;
    for i in 0..f.net.nodes.len() {
        let net = &mut f.net;
        wait_until(T, &format!("search on node {i}"), || {
            Ok(search(net, i, "水质监测")?
                .iter()
                .any(|t| t == "长江流域水质监测数据"))
        })?;
    }
    // Filters: the provider filter finds it, another provider's does not.
    let uscc = f.net.nodes[police].uscc.clone();
    let hub = f.net.index("hub").unwrap();
    let v = f.net.get(
        hub,
        &format!("/catalogue?q=%E6%B0%B4%E8%B4%A8&provider={uscc}"),
    )?;
    assert_eq!(v["records"].as_array().map(|a| a.len()), Some(1));
    let other = f.net.nodes[f.net.index("market").unwrap()].uscc.clone();
    let v = f.net.get(
        hub,
        &format!("/catalogue?q=%E6%B0%B4%E8%B4%A8&provider={other}"),
    )?;
    assert_eq!(v["records"].as_array().map(|a| a.len()), Some(0));
    Ok(())
}

/// (b) A node stopped while others publish catches up after restart through anti-entropy
/// alone (it missed the gossip while it was down).
#[test]
fn stopped_node_catches_up_through_anti_entropy() -> anyhow::Result<()> {
    let mut f = start(3, 2)?;
    let sleeper = f.net.index("market").unwrap();
    f.net.stop(sleeper, false)?;
    let police = f.net.index("police").unwrap();
    let health = f.net.index("health").unwrap();
    for s in 1..=4 {
        publish_ok(
            &f,
            police,
            &entry(&f.net, police, s, &format!("补同步测试甲{s}")),
        )?;
    }
    for s in 1..=3 {
        publish_ok(
            &f,
            health,
            &entry(&f.net, health, s, &format!("补同步测试乙{s}")),
        )?;
    }
    // A withdrawal while it is down must reach it too.
    let out = f.net.cli(
        police,
        &[
            "catalogue",
            "withdraw",
            "301001/000004",
            "--reason",
            "测试下架",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.net.start(sleeper)?;
    let net = &mut f.net;
    wait_until(T, "the restarted node to hold all six live entries", || {
        let s = net.get(sleeper, "/status")?;
        Ok(s["catalogue_entries"].as_u64() == Some(6))
    })?;
    let titles = search(net, sleeper, "补同步测试甲4")?;
    assert!(
        titles.is_empty(),
        "withdrawn entry still searchable: {titles:?}"
    );
    // `show` still finds it, marked withdrawn with its reason; a live code is found too.
    let shown = net.get(sleeper, "/catalogue?code=301001/000004")?;
    assert_eq!(shown["records"][0]["withdrawn"], "测试下架", "{shown}");
    let live = net.get(sleeper, "/catalogue?code=301001/000003")?;
    assert_eq!(
        live["records"].as_array().map(Vec::len),
        Some(2),
        "police and health both use seq 3: {live}"
    );
    assert_eq!(
        search(net, sleeper, "补同步测试乙3")?,
        vec!["补同步测试乙3".to_owned()]
    );
    Ok(())
}

/// (c) A node whose key is not in the charter is refused: members log and report its PeerId
/// and it never gets a connection.
#[test]
fn key_outside_the_charter_is_refused() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let outsider_dir = f.tmp.path().join("outsider");
    let authority = f.net.get(0, "/charter")?["authority"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let targets: Vec<String> = f
        .net
        .nodes
        .iter()
        .map(|n| format!("/ip4/127.0.0.1/tcp/{}", n.port))
        .collect();
    let mut init = std::process::Command::new(&f.net.bin);
    init.arg("--dir").arg(&outsider_dir).args([
        "init",
        "--name",
        "冒充部门",
        "--org-code",
        "91350100M000100Y43",
        "--api",
        "127.0.0.1:0",
        "--portal",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--authority-key",
        &authority,
        "--json",
    ]);
    let out = init.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outsider_peer = serde_json::from_slice::<serde_json::Value>(&out.stdout)?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Same charter (it knows where members are) and explicit bootstrap dials.
    std::fs::copy(
        f.net.dir.join("charter.cbor"),
        outsider_dir.join("charter.cbor"),
    )?;
    let mut toml = std::fs::read_to_string(outsider_dir.join("huitong.toml"))?;
    toml = toml.replace("bootstrap = []", &format!("bootstrap = {targets:?}"));
    std::fs::write(outsider_dir.join("huitong.toml"), toml)?;
    let log = std::fs::File::create(outsider_dir.join("node.log"))?;
    let mut child = std::process::Command::new(&f.net.bin)
        .arg("--dir")
        .arg(&outsider_dir)
        .arg("run")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| {
        let hub = f.net.index("hub").unwrap();
        publish_ok(&f, hub, &entry(&f.net, hub, 1, "仅限成员可见"))?;
        for i in 0..f.net.nodes.len() {
            let net = &mut f.net;
            wait_until(T, "members to hold the entry", || {
                Ok(search(net, i, "仅限成员可见")?.len() == 1)
            })?;
            let net = &mut f.net;
            wait_until(T, "members to report the refused outsider", || {
                let s = net.get(i, "/status")?;
                Ok(s["refused_peers"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == outsider_peer.as_str())))
            })?;
            let peers = net.get(i, "/peers")?;
            assert!(
                !peers.to_string().contains(&outsider_peer),
                "outsider connected to node {i}"
            );
        }
        anyhow::Ok(())
    })();
    let status = std::process::Command::new(&f.net.bin)
        .arg("--dir")
        .arg(&outsider_dir)
        .args(["status", "--json"])
        .output()?;
    let _ = child.kill();
    let _ = child.wait();
    result?;
    // Members refuse it at connection establishment, before any protocol runs, so it never
    // learns anything: every member holds the entry published below, the outsider none.
    // (Its own connection count can flicker while a refused connection is being closed.)
    let s: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(s["catalogue_entries"], 0, "the outsider got data: {s}");
    assert_eq!(s["feeds"], 0, "the outsider got feeds: {s}");
    Ok(())
}

/// (d) A long feed — more range answers than a node keeps queued per feed — reaches a node
/// started after it was published, complete and in order: the range after a long answer that
/// came while the queue was full is asked for as soon as a queued one has been ingested.
#[test]
fn a_feed_of_several_ranges_reaches_a_node_started_later() -> anyhow::Result<()> {
    // Three range answers of 2,000 and a fourth of 500: past the three a feed keeps queued.
    const ENTRIES: u32 = 6_500;
    // Anti-entropy ticks a minute apart: the catch-up below must not wait for one.
    let mut f = start(1, 60)?;
    let city = f.net.index("city").unwrap();
    let police = f.net.index("police").unwrap();
    f.net.stop(city, false)?;
    let net = &mut f.net;
    for first in (1..=ENTRIES).step_by(2000) {
        let batch: Vec<_> = (first..=ENTRIES.min(first + 1999))
            .map(|s| entry(net, police, s, &format!("长队列同步{s}")))
            .collect();
        let r = net.post(
            police,
            "/catalogue/batch",
            &serde_json::json!({ "entries": batch }),
        )?;
        assert_eq!(r["published"].as_u64(), Some(batch.len() as u64), "{r}");
    }
    let hub = net.index("hub").unwrap();
    wait_until(Duration::from_secs(120), "the hub to hold the feed", || {
        let s = net.get(hub, "/status")?;
        Ok(s["catalogue_entries"].as_u64() == Some(u64::from(ENTRIES)))
    })?;
    net.start(city)?;
    // Within the first tick: the summaries exchanged on connecting start the catch-up, and the
    // ranges follow one another until the feed is whole.
    wait_until(
        Duration::from_secs(50),
        "the node started later to hold the whole feed",
        || {
            let s = net.get(city, "/status")?;
            Ok(s["catalogue_entries"].as_u64() == Some(u64::from(ENTRIES)))
        },
    )?;
    // Whole and in order: the last entry is there, nothing was refused.
    let last = net.get(city, &format!("/catalogue?code=301001/{ENTRIES:06}"))?;
    assert_eq!(
        last["records"][0]["entry"]["title"],
        format!("长队列同步{ENTRIES}"),
        "{last}"
    );
    assert_eq!(rejected(net, city, "broken_chain")?, 0);
    assert_eq!(rejected(net, city, "range_mismatch")?, 0);
    Ok(())
}
