//! A member peer sends forged, malformed and oversize messages; the node refuses each, stays
//! up, reports forks, and refuses a suspended member's new entries.

use std::time::Duration;

use huitong_protocol::feed::FEED_ENTRY_VERSION;
use huitong_protocol::wire::{Gossip, Head, Summary, SyncRequest};
use huitong_protocol::{codec, EntryHash, Event, FeedEntry, NodeId};
use huitong_tests::rogue::{self, Rogue};
use huitong_tests::{
    add_user, cli_ok, entry, rejected, search, session, start, wait_charter, wait_until,
};
use serde_bytes::ByteBuf;

const T: Duration = Duration::from_secs(60);

fn gossip_entry(bytes: Vec<u8>) -> Vec<u8> {
    codec::encode(&Gossip::Entry(ByteBuf::from(bytes)))
}

#[test]
fn forged_malformed_forked_and_suspended_entries_are_refused() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let hub = f.net.index("hub").unwrap();
    let target = f.net.index("police").unwrap();
    let authority = f.net.dir.join("authority.key");

    // Admit the rogue as a member through the CLI, signed with the authority key.
    let (key, rogue_uscc) = rogue::admit(&mut f.net, target)?;
    let t0 = huitong_tests::now_ms();

    let rogue = Rogue::start(&key, "海门区")?;
    let target_peer = f.net.nodes[target].peer_id.clone();
    rogue.dial(
        &format!("/ip4/127.0.0.1/tcp/{}", f.net.nodes[target].port),
        &target_peer,
    )?;
    wait_until(T, "the target to subscribe", || {
        Ok(rogue.sees_subscribed(&target_peer))
    })?;

    // A valid first entry is accepted.
    let cat = rogue::catalogue_entry(&rogue_uscc, 1, "测试局资源一")?;
    let first = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: key.public(),
        seq: 1,
        prev: EntryHash::ZERO,
        timestamp_ms: t0 + 1,
        charter: 2,
        event: Event::CataloguePublished(cat.clone()),
        by: None,
    }
    .seal(&key);
    rogue.gossip(gossip_entry(first.envelope.to_bytes()))?;
    let net = &mut f.net;
    wait_until(T, "the valid entry", || {
        Ok(search(net, target, "测试局资源一")?.len() == 1)
    })?;

    // (d) forged signature.
    let mut second = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: key.public(),
        seq: 2,
        prev: first.hash,
        timestamp_ms: t0 + 2,
        charter: 2,
        event: Event::CatalogueWithdrawn {
            code: cat.code.clone(),
            reason: "伪造".into(),
        },
        by: None,
    };
    let mut forged = second.seal(&key).envelope.to_bytes();
    let n = forged.len();
    forged[n - 3] ^= 0x40;
    rogue.gossip(gossip_entry(forged))?;
    wait_until(T, "bad_signature", || {
        Ok(rejected(&mut f.net, target, "bad_signature")? >= 1)
    })?;

    // (d) wrong signer: an entry of the police feed signed by the rogue.
    let police_key = NodeId::from_hex(&f.net.nodes[target].node_key)?;
    let wrong = FeedEntry {
        feed: police_key,
        ..second.clone()
    }
    .seal(&key);
    rogue.gossip(gossip_entry(wrong.envelope.to_bytes()))?;
    wait_until(T, "wrong_signer", || {
        Ok(rejected(&mut f.net, target, "wrong_signer")? >= 1)
    })?;

    // (d) broken hash chain.
    let broken = FeedEntry {
        prev: EntryHash([9; 32]),
        ..second.clone()
    }
    .seal(&key);
    rogue.gossip(gossip_entry(broken.envelope.to_bytes()))?;
    wait_until(T, "broken_chain", || {
        Ok(rejected(&mut f.net, target, "broken_chain")? >= 1)
    })?;

    // (d) malformed CBOR, as gossip and inside an envelope.
    rogue.gossip(vec![0xff, 0x00, 0x13, 0x37])?;
    rogue.gossip(gossip_entry(vec![0xa1, 0x61]))?;
    wait_until(T, "malformed", || {
        Ok(rejected(&mut f.net, target, "malformed")? >= 2)
    })?;

    // (d) oversize: a sync request over the 1 MiB request limit.
    let heads = (0..40_000u64)
        .map(|i| Head {
            feed: key.public(),
            seq: i,
        })
        .collect();
    rogue.request(
        &target_peer,
        SyncRequest::Summary(Summary {
            charter_version: 0,
            heads,
            audit: Vec::new(),
        }),
    )?;
    wait_until(T, "oversize", || {
        Ok(rejected(&mut f.net, target, "oversize")? >= 1)
    })?;

    // Nothing forged was stored: the entry is still there (the forged withdrawal was refused).
    assert_eq!(search(&mut f.net, target, "测试局资源一")?.len(), 1);

    // (e) fork: a second, different entry 1.
    let mut other = cat.clone();
    other.title = "测试局资源一（分叉）".into();
    let fork = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: key.public(),
        seq: 1,
        prev: EntryHash::ZERO,
        timestamp_ms: t0 + 3,
        charter: 2,
        event: Event::CataloguePublished(other),
        by: None,
    }
    .seal(&key);
    rogue.gossip(gossip_entry(fork.envelope.to_bytes()))?;
    let net = &mut f.net;
    wait_until(T, "fork report", || {
        let s = net.get(target, "/status")?;
        Ok(s["forks"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["feed"] == key.public().to_hex() && x["seq"] == 1)
        }))
    })?;
    let out = f.net.cli(target, &["status"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FORK"),
        "human status shows the fork"
    );

    // (f) suspension: the target disconnects the suspended member and refuses it at the gate
    // (issue #10, point 2), so its entry 2, valid but signed after the suspension, never
    // arrives; were it relayed, it would be refused as `suspended`.
    cli_ok(
        &f.net,
        hub,
        &[
            "charter",
            "suspend",
            &rogue_uscc,
            "--authority-key",
            &authority.to_string_lossy(),
        ],
    )?;
    wait_charter(&mut f.net, target, 3)?;
    second.timestamp_ms = t0 + 4;
    second.event = Event::CataloguePublished(huitong_protocol::Entry {
        title: "测试局停用后资源".into(),
        ..cat
    });
    let rogue_peer = huitong_node::net::peer_id(&key.public())
        .map(|p| p.to_string())
        .unwrap_or_default();
    let connected = |net: &mut huitong_testnet::Testnet| -> anyhow::Result<bool> {
        let peers = net.get(target, "/peers")?;
        Ok(peers
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["peer_id"] == rogue_peer.as_str())))
    };
    wait_until(T, "the suspended member disconnected", || {
        Ok(!connected(&mut f.net)?)
    })?;
    // It dials again: the gate refuses it and names it.
    rogue.dial(
        &format!("/ip4/127.0.0.1/tcp/{}", f.net.nodes[target].port),
        &target_peer,
    )?;
    wait_until(T, "the suspended member refused at the gate", || {
        let s = f.net.get(target, "/status")?;
        Ok(s["refused_peers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == rogue_peer.as_str())))
    })?;
    rogue.gossip(gossip_entry(second.seal(&key).envelope.to_bytes()))?;
    assert!(
        !connected(&mut f.net)?,
        "the suspended member stays disconnected"
    );
    assert!(search(&mut f.net, target, "停用后资源")?.is_empty());
    // The target's auditor sees the suspension among the alarms, and every page's banner
    // counts it (issue #11, point 7).
    let pw = add_user(&f.net, target, "shenji", "审计员", "auditor")?;
    let (token, _) = session(&mut f.net, target, "shenji", &pw)?;
    let portal = f
        .net
        .portal_addr(target)
        .ok_or_else(|| anyhow::anyhow!("no portal address"))?;
    let port = portal.rsplit(':').next().unwrap_or_default().to_string();
    let page = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{portal}/audit"))
        .header("cookie", format!("huitong_session_{port}={token}"))
        .send()?
        .text()?;
    assert!(page.contains("成员已被章程暂停"), "{page}");
    assert!(page.contains("被暂停成员 1"), "{page}");

    // The node is still up and still syncing with honest members.
    let market = f.net.index("market").unwrap();
    huitong_tests::publish_ok(&f, market, &entry(&f.net, market, 9, "攻击后仍可同步"))?;
    let net = &mut f.net;
    wait_until(T, "honest entry after the attacks", || {
        Ok(search(net, target, "攻击后仍可同步")?.len() == 1)
    })?;
    Ok(())
}
