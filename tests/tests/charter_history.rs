//! Issue #10, points 1–3, with real nodes: entries are judged by the charter version they name,
//! so suspending a member and re-keying another leave every node — old ones and a fresh one that
//! starts from the latest charter — with the same catalogue; a read-only suspended member stays
//! connected but cannot publish, not even by back-dating an entry to a version in which it was
//! active; a new version is signed offline from a charter file; two different charters of one
//! version are reported as equivocation; a charter needs exactly one hub and an authority key
//! apart from every node key. Review s21, H1: which rules judge an entry's signature follows
//! from the charter layout of the version it names, and a federation moves to layout 2 with
//! `charter upgrade-layout`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use huitong_protocol::Event;
use huitong_testnet::Testnet;
use huitong_tests::rogue;
use huitong_tests::{
    cli_ok, entry, publish_ok, rejected, search, start, start_prepared, wait_charter, wait_until,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// The catalogue of node `i` as (provider, code, title, withdrawn) rows.
fn catalogue(net: &Testnet, i: usize) -> anyhow::Result<BTreeSet<String>> {
    let out = cli_ok(net, i, &["catalogue", "list", "--json"])?;
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["entry"]["provider_code"], r["entry"]["code"], r["entry"]["title"]
            )
        })
        .collect())
}

fn failing(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<String> {
    let out = net.cli(i, args)?;
    anyhow::ensure!(
        !out.status.success(),
        "huitong {} should have failed",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes entry `seq` of node `i` to a file for `catalogue publish`.
fn write_entry(
    f: &huitong_tests::Fixture,
    i: usize,
    seq: u32,
) -> anyhow::Result<std::path::PathBuf> {
    let file = f.tmp.path().join(format!("entry-{i}-{seq}.json"));
    std::fs::write(
        &file,
        serde_json::to_vec(&entry(&f.net, i, seq, "超出配额资源"))?,
    )?;
    Ok(file)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Restarts node `fresh` with an empty store, given only the latest charter (exported by node
/// `from`).
fn restart_empty(net: &mut Testnet, fresh: usize, from: usize) -> anyhow::Result<()> {
    net.stop(fresh, false)?;
    let dir = net.nodes[fresh].dir.clone();
    for d in ["db", "chunks", "audit"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    std::fs::remove_file(dir.join("charter.cbor"))?;
    cli_ok(
        net,
        from,
        &["charter", "export", &path(&dir.join("charter.cbor"))],
    )?;
    net.start(fresh)
}

#[test]
fn every_node_judges_entries_by_the_charter_they_name() -> anyhow::Result<()> {
    let mut f = start(3, 2)?;
    let hub = f.net.index("hub").unwrap_or(0);
    let (rekeyed, old, fresh) = (1, 2, 3);
    let authority = f.net.dir.join("authority.key");
    let auth = path(&authority);
    let tmp = f.tmp.path().to_path_buf();

    // A department publishes under its first key.
    publish_ok(&f, rekeyed, &entry(&f.net, rekeyed, 1, "轮换前资源"))?;
    publish_ok(&f, rekeyed, &entry(&f.net, rekeyed, 2, "旧密钥资源"))?;
    {
        let net = &mut f.net;
        wait_until(T, "the hub to hold both entries", || {
            Ok(search(net, hub, "旧密钥资源")?.len() == 1)
        })?;
    }

    // A member (the rogue, admitted in version 2) publishes two entries.
    let (key, rogue_uscc) = rogue::admit(&mut f.net, old)?;
    let t0 = huitong_tests::now_ms();
    let rogue = rogue::connect(&f.net, &key)?;
    let cat = |n: u32, title: &str| rogue::catalogue_entry(&rogue_uscc, n, title);
    let publish = |n: u32, title: &str| -> anyhow::Result<Event> {
        Ok(Event::CataloguePublished(cat(n, title)?))
    };
    let one = rogue::feed_entry(&key, None, t0 + 1, 2, publish(1, "测试局资源一")?);
    let two = rogue::feed_entry(&key, Some(&one), t0 + 2, 2, publish(2, "测试局资源二")?);
    let three = rogue::feed_entry(&key, Some(&two), t0 + 3, 2, publish(3, "测试局资源三")?);
    for e in [&one, &two, &three] {
        rogue.gossip(rogue::gossip_entry(e))?;
    }
    for i in [hub, old, fresh] {
        let net = &mut f.net;
        wait_until(T, "the member's three entries", || {
            Ok(search(net, i, "测试局资源")?.len() == 3)
        })?;
    }

    // Version 3 suspends it read-only and keeps its feed only up to seq 2: every node drops the
    // third entry, which it took before, and rebuilds its views without it.
    cli_ok(
        &f.net,
        hub,
        &[
            "charter",
            "suspend",
            &rogue_uscc,
            "--read-only",
            "--last-seq",
            "2",
            "--authority-key",
            &auth,
        ],
    )?;
    for i in [hub, rekeyed, old, fresh] {
        wait_charter(&mut f.net, i, 3)?;
    }
    let charter = f.net.get(hub, "/charter")?;
    let closed = &charter["closed"][0];
    assert_eq!(closed["node_key"], key.public().to_hex(), "{charter}");
    assert_eq!(closed["last_seq"], 2, "{charter}");
    for i in [hub, old, fresh] {
        let net = &mut f.net;
        wait_until(T, "the entry past the closure dropped", || {
            Ok(search(net, i, "测试局资源")?.len() == 2
                && search(net, i, "测试局资源三")?.is_empty())
        })?;
    }

    // Read-only, it stays connected (its gossip still arrives), but an entry back-dated to
    // version 2, in which it was active, is refused as past the closure, and one naming version
    // 3 as suspended.
    let later = publish(4, "停用后资源")?;
    let backdated = rogue::feed_entry(&key, Some(&two), t0 + 4, 2, later.clone());
    rogue.gossip(rogue::gossip_entry(&backdated))?;
    {
        let net = &mut f.net;
        wait_until(T, "the back-dated entry refused", || {
            Ok(rejected(net, old, "feed_closed")? >= 1)
        })?;
    }
    let current = rogue::feed_entry(&key, Some(&two), t0 + 4, 3, later);
    rogue.gossip(rogue::gossip_entry(&current))?;
    {
        let net = &mut f.net;
        wait_until(T, "the suspended member's entry refused", || {
            Ok(rejected(net, old, "suspended")? >= 1)
        })?;
    }

    // Version 4 re-keys the department: a new key, same USCC; the old key's feed closes at 2.
    let new_key = tmp.join("new-node.key");
    let out = cli_ok(
        &f.net,
        hub,
        &["authority", "keygen", "--out", &path(&new_key)],
    )?;
    let new_public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    f.net.stop(rekeyed, false)?;
    let n = f.net.nodes[rekeyed].clone();
    let quic = format!("/ip4/127.0.0.1/udp/{}/quic-v1", n.port);
    let tcp = format!("/ip4/127.0.0.1/tcp/{}", n.port);
    cli_ok(
        &f.net,
        hub,
        &[
            "charter",
            "admit",
            "--uscc",
            &n.uscc,
            "--name",
            &n.name,
            "--node-key",
            &new_public,
            "--addr",
            &quic,
            "--addr",
            &tcp,
            "--authority-key",
            &auth,
        ],
    )?;
    std::fs::copy(&new_key, n.dir.join("node.key"))?;
    f.net.start(rekeyed)?;
    for i in [hub, rekeyed, old, fresh] {
        wait_charter(&mut f.net, i, 4)?;
    }
    // Online, the closure is the hub's head of the old key's feed.
    let charter = f.net.get(hub, "/charter")?;
    assert_eq!(
        charter["closed"][0]["node_key"],
        n.node_key.as_str(),
        "{charter}"
    );
    assert_eq!(charter["closed"][0]["last_seq"], 2, "{charter}");
    // Under the new key it updates one of its old entries and publishes a new one.
    publish_ok(&f, rekeyed, &entry(&f.net, rekeyed, 1, "轮换后资源"))?;
    publish_ok(&f, rekeyed, &entry(&f.net, rekeyed, 3, "新密钥资源"))?;
    {
        let net = &mut f.net;
        wait_until(T, "the re-keyed member's entries", || {
            Ok(search(net, old, "轮换后资源")?.len() == 1
                && search(net, old, "新密钥资源")?.len() == 1)
        })?;
    }

    // A fresh node (an empty store, given only the latest charter) reaches the same view as an
    // old one: it fills in versions 1–3 from peers and judges each entry by the version it names.
    restart_empty(&mut f.net, fresh, hub)?;
    {
        let net = &mut f.net;
        wait_until(T, "the fresh node to fill in the charter history", || {
            let c = net.get(fresh, "/charter")?;
            Ok(c["version"] == 4 && c["first_held"] == 1)
        })?;
    }
    let expected = catalogue(&f.net, old)?;
    for title in [
        "轮换后资源",
        "旧密钥资源",
        "新密钥资源",
        "测试局资源一",
        "测试局资源二",
    ] {
        assert!(
            expected.iter().any(|r| r.contains(title)),
            "{title} missing from {expected:?}"
        );
    }
    for gone in ["停用后资源", "轮换前资源", "测试局资源三"] {
        assert!(
            !expected.iter().any(|r| r.contains(gone)),
            "{gone} in {expected:?}"
        );
    }
    let mut last = BTreeSet::new();
    let waited = wait_until(
        T,
        "the fresh node's catalogue to equal the old node's",
        || {
            last = catalogue(&f.net, fresh)?;
            Ok(last == expected)
        },
    );
    assert!(waited.is_ok(), "fresh {last:?}\nold   {expected:?}");
    assert_eq!(catalogue(&f.net, hub)?, expected);

    // The feed quota (issue #10, point 4): version 5 reinstates the member, version 6 allows
    // 3 entries an hour. Past it, this node refuses to publish and says how long to wait, and
    // every node refuses the member's fourth entry within the hour.
    cli_ok(
        &f.net,
        hub,
        &[
            "charter",
            "reinstate",
            &rogue_uscc,
            "--authority-key",
            &auth,
        ],
    )?;
    cli_ok(
        &f.net,
        hub,
        &[
            "charter",
            "quota",
            "--entries-per-hour",
            "3",
            "--authority-key",
            &auth,
        ],
    )?;
    for i in [hub, rekeyed, old] {
        wait_charter(&mut f.net, i, 6)?;
    }
    publish_ok(&f, rekeyed, &entry(&f.net, rekeyed, 4, "配额内资源"))?;
    let err = String::from_utf8_lossy(
        &f.net
            .cli(
                rekeyed,
                &["catalogue", "publish", &path(&write_entry(&f, rekeyed, 5)?)],
            )?
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains("quota of 3 entries an hour") && err.contains("try again in"),
        "{err}"
    );
    let now = huitong_tests::now_ms();
    // Back-dated to before version 6 was issued (to fill the past hours' quota): refused.
    let early = rogue::feed_entry(&key, Some(&two), t0 + 5, 6, publish(9, "倒签资源")?);
    rogue.gossip(rogue::gossip_entry(&early))?;
    {
        let net = &mut f.net;
        wait_until(T, "the back-dated entry refused", || {
            Ok(rejected(net, old, "before_charter")? >= 1)
        })?;
    }
    // Its entries 1 and 2 are within the hour: with a quota of 3, entry 3 fits, entry 4 does not.
    let mut prev = two.clone();
    for seq in 3..=4 {
        let event = publish(10 + seq as u32, &format!("配额测试{seq}"))?;
        let next = rogue::feed_entry(&key, Some(&prev), now, 6, event);
        rogue.gossip(rogue::gossip_entry(&next))?;
        prev = next;
        if seq < 4 {
            // One at a time: a node that got a later entry first would ask the rogue, which
            // answers no sync requests, for the one before.
            let net = &mut f.net;
            let feed = key.public().to_hex();
            wait_until(T, "the member's entry within the quota", || {
                Ok(net.get(old, "/charter")?["feed_heads"][&feed] == seq)
            })?;
        }
    }
    let quota_rows = |net: &mut Testnet| -> anyhow::Result<Vec<String>> {
        let rows = catalogue(net, old)?;
        Ok(rows
            .into_iter()
            .filter(|r| r.contains("配额测试"))
            .collect())
    };
    {
        let net = &mut f.net;
        wait_until(T, "the member's entries within the quota", || {
            Ok(quota_rows(net)?.len() == 1 && rejected(net, old, "feed_quota")? >= 1)
        })?;
    }
    let rows = quota_rows(&mut f.net)?;
    assert!(!rows.iter().any(|r| r.contains("配额测试4")), "{rows:?}");

    // Offline amendment: from an exported charter file to a new file; the authority key never
    // talks to a node. Stopping a feed offline needs --last-seq.
    let v6 = tmp.join("v6.cbor");
    cli_ok(&f.net, hub, &["charter", "export", &path(&v6)])?;
    let err = failing(
        &f.net,
        hub,
        &[
            "charter",
            "suspend",
            &n.uscc,
            "--authority-key",
            &auth,
            "--from",
            &path(&v6),
            "--out",
            &path(&tmp.join("x.cbor")),
        ],
    )?;
    assert!(err.contains("--last-seq"), "{err}");
    let (a, b) = (tmp.join("v7a.cbor"), tmp.join("v7b.cbor"));
    for (cmd, out) in [("suspend", &a), ("remove", &b)] {
        cli_ok(
            &f.net,
            hub,
            &[
                "charter",
                cmd,
                &rogue_uscc,
                "--authority-key",
                &auth,
                "--from",
                &path(&v6),
                "--out",
                &path(out),
                "--last-seq",
                "5",
            ],
        )?;
    }
    // Written files are never overwritten.
    let err = failing(
        &f.net,
        hub,
        &[
            "charter",
            "suspend",
            &rogue_uscc,
            "--authority-key",
            &auth,
            "--from",
            &path(&v6),
            "--out",
            &path(&a),
            "--last-seq",
            "5",
        ],
    )?;
    assert!(err.contains("must not exist"), "{err}");

    // Two different version-7 charters: equivocation, reported like a fork.
    cli_ok(&f.net, hub, &["charter", "import", &path(&a)])?;
    let _ = f.net.cli(old, &["charter", "import", &path(&b)])?;
    {
        let net = &mut f.net;
        wait_until(T, "the equivocation reported", || {
            let s = net.get(old, "/status")?;
            Ok(s["charter_equivocations"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["version"] == 7)))
        })?;
    }
    let out = cli_ok(&f.net, old, &["status"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EQUIVOCATION charter version 7"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Exactly one hub; the authority key is no node's key.
    let authority_public = f.net.get(hub, "/charter")?["authority"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let second_hub =
        huitong_testnet::ids::government_uscc(huitong_testnet::ids::HAIMEN_DIVISION, "66666666");
    for (name, node_key, role, expected) in [
        ("第二枢纽", &new_public, "hub", "exactly one hub"),
        (
            "授权密钥节点",
            &authority_public,
            "department",
            "authority key is also the node key",
        ),
    ] {
        let err = failing(
            &f.net,
            hub,
            &[
                "charter",
                "admit",
                "--uscc",
                &second_hub,
                "--name",
                name,
                "--node-key",
                node_key,
                "--role",
                role,
                "--authority-key",
                &auth,
            ],
        )?;
        assert!(err.contains(expected), "{err}");
    }
    drop(rogue);
    Ok(())
}

/// Re-signs the testnet's first charter at layout 1, as a federation set up by an earlier
/// release holds it (before any node starts).
fn at_layout_1(net: &mut Testnet) -> anyhow::Result<()> {
    use huitong_protocol::codec::{self, MAX_ENVELOPE_BYTES};
    use huitong_protocol::{Charter, Envelope, Kind};
    let bytes = std::fs::read(net.dir.join("charter.cbor"))?;
    let env = Envelope::open(&bytes, Kind::Charter)?;
    let mut charter: Charter = codec::decode(env.payload(), MAX_ENVELOPE_BYTES)?;
    charter.layout = 1;
    let authority = huitong_config::keyfile::read(&net.dir.join("authority.key"))?;
    let bytes = charter.seal(&authority).to_bytes();
    std::fs::write(net.dir.join("charter.cbor"), &bytes)?;
    for n in &net.nodes {
        std::fs::write(n.dir.join("charter.cbor"), &bytes)?;
    }
    Ok(())
}

/// A federation of layout 1 (strict rules) refuses, on every node, an entry signed for ZIP-215
/// rules; `charter upgrade-layout` moves it to layout 2, after which such entries stand
/// everywhere, and a fresh node given only the latest charter judges the mixed history alike.
#[test]
fn the_charter_layout_decides_the_signature_rules_on_every_node() -> anyhow::Result<()> {
    let mut f = start_prepared(2, 2, &[], at_layout_1)?;
    let hub = f.net.index("hub").unwrap_or(0);
    let (dept, fresh) = (1, 2);
    let city = f.net.nodes.len() - 1;
    let auth = path(&f.net.dir.join("authority.key"));
    assert_eq!(f.net.get(hub, "/charter")?["layout"], 1);

    // Under layout 1 the nodes sign for strict rules, and their entries go everywhere.
    publish_ok(&f, dept, &entry(&f.net, dept, 1, "布局一资源"))?;
    for i in [hub, fresh, city] {
        let net = &mut f.net;
        wait_until(T, "the layout-1 entry", || {
            Ok(search(net, i, "布局一资源")?.len() == 1)
        })?;
    }

    // A member's entry signed for ZIP-215 rules, naming a version of layout 1: refused by all.
    let (key, rogue_uscc) = rogue::admit(&mut f.net, dept)?;
    for i in [hub, dept, fresh, city] {
        wait_charter(&mut f.net, i, 2)?;
    }
    let rogue = rogue::connect(&f.net, &key)?;
    let publish = |n: u32, title: &str| -> anyhow::Result<Event> {
        Ok(Event::CataloguePublished(rogue::catalogue_entry(
            &rogue_uscc,
            n,
            title,
        )?))
    };
    let early = rogue::feed_entry(
        &key,
        None,
        huitong_tests::now_ms(),
        2,
        publish(1, "过早资源")?,
    );
    assert_eq!(
        early.entry.version,
        huitong_protocol::feed::FEED_ENTRY_VERSION
    );
    rogue.gossip(rogue::gossip_entry(&early))?;
    for i in [hub, dept, fresh, city] {
        let net = &mut f.net;
        wait_until(T, "the entry signed for ZIP-215 to be refused", || {
            Ok(rejected(net, i, "signature_rule")? >= 1)
        })?;
        assert!(search(&mut f.net, i, "过早资源")?.is_empty());
    }

    // Version 3 moves the federation to layout 2; a second time there is nothing to sign.
    cli_ok(
        &f.net,
        hub,
        &["charter", "upgrade-layout", "--authority-key", &auth],
    )?;
    for i in [hub, dept, fresh, city] {
        wait_charter(&mut f.net, i, 3)?;
        assert_eq!(f.net.get(i, "/charter")?["layout"], 2);
    }
    let again = failing(
        &f.net,
        hub,
        &["charter", "upgrade-layout", "--authority-key", &auth],
    )?;
    assert!(again.contains("layout 2 already"), "{again}");

    // Now the same kind of entry, naming version 3, stands everywhere, and so do the
    // departments' new entries.
    let later = rogue::feed_entry(
        &key,
        None,
        huitong_tests::now_ms(),
        3,
        publish(1, "升级后资源")?,
    );
    rogue.gossip(rogue::gossip_entry(&later))?;
    publish_ok(&f, dept, &entry(&f.net, dept, 2, "布局二资源"))?;
    for i in [hub, dept, fresh, city] {
        let net = &mut f.net;
        wait_until(T, "the layout-2 entries", || {
            Ok(
                search(net, i, "升级后资源")?.len() == 1
                    && search(net, i, "布局二资源")?.len() == 1,
            )
        })?;
    }

    // A fresh node, given only the latest charter, syncs the mixed history by range and holds
    // the same catalogue.
    restart_empty(&mut f.net, fresh, hub)?;
    let expected = catalogue(&f.net, dept)?;
    let mut last = BTreeSet::new();
    let waited = wait_until(T, "the fresh node's catalogue to equal the others'", || {
        last = catalogue(&f.net, fresh)?;
        Ok(last == expected)
    });
    assert!(waited.is_ok(), "fresh {last:?}\nother {expected:?}");
    for title in ["布局一资源", "布局二资源", "升级后资源"] {
        assert!(
            expected.iter().any(|r| r.contains(title)),
            "{title} missing"
        );
    }
    drop(rogue);
    Ok(())
}
