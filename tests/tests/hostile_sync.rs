//! Issue #10, point 4, with real nodes: a member that asks for a feed range from `u64::MAX`
//! and floods sync requests is refused and counted, while the node's network keeps working
//! (gossip from other members still arrives) — the network task neither dies nor stalls.
//! Review s7, M2: the checkpoint notes its summaries vouch for, junk every time, are counted
//! against it (`rejected.vouched_note`) and logged naming it, as a warning once a minute.

use std::time::Duration;

use huitong_protocol::wire::{Head, Summary, SyncRequest};
use huitong_protocol::NodeId;
use huitong_tests::{entry, publish_ok, rogue, search, start, wait_until};
use serde_bytes::ByteBuf;

const T: Duration = Duration::from_secs(90);

#[test]
fn range_overflow_and_sync_floods_leave_the_network_working() -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let (target, other) = (1, 2);
    let (key, _) = rogue::admit(&mut f.net, target)?;
    let r = rogue::connect(&f.net, &key)?;
    let peer = f.net.nodes[target].peer_id.clone();
    let other_key = NodeId::from_hex(&f.net.nodes[other].node_key)?;

    // A range from the last sequence number (a debug build used to panic counting past it).
    r.request(
        &peer,
        SyncRequest::Range {
            feed: other_key,
            from: u64::MAX,
            limit: u32::MAX,
        },
    )?;
    // A flood of summaries, advertising a feed of a key that is no member far ahead (a node
    // must not ask for it), each vouching for 9 new junk checkpoint notes.
    let stranger = NodeId([42; 32]);
    for i in 0..400 {
        r.request(
            &peer,
            SyncRequest::Summary(Summary {
                charter_version: 0,
                heads: vec![Head {
                    feed: stranger,
                    seq: u64::MAX,
                }],
                audit: (0..9)
                    .map(|j| ByteBuf::from(format!("junk {i} {j}").into_bytes()))
                    .collect(),
            }),
        )?;
    }
    let net = &mut f.net;
    wait_until(T, "the flood refused and counted", || {
        Ok(net.get(target, "/status")?["rejected"]["sync_rate"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
    })?;

    wait_until(T, "the junk notes counted", || {
        Ok(net.get(target, "/status")?["rejected"]["vouched_note"]
            .as_u64()
            .unwrap_or(0)
            >= 2)
    })?;
    let rogue_key = key.public().to_hex();
    let log = std::fs::read_to_string(net.nodes[target].dir.join(huitong_testnet::LOG_FILE))?;
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("does not open"))
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "one warning a minute: {warned:#?}");
    assert!(
        warned[0].contains(&rogue_key),
        "names the peer: {}",
        warned[0]
    );

    // The target's network still works: an entry another member publishes now arrives.
    let e = entry(&f.net, other, 5, "洪泛之后发布的资源");
    publish_ok(&f, other, &e)?;
    let net = &mut f.net;
    wait_until(T, "the new entry on the target", || {
        Ok(search(net, target, "洪泛之后发布的资源")?.len() == 1)
    })?;
    Ok(())
}
