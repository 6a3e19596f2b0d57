//! Issue #10, point 5, with real nodes: a member that opens data streams, asks for chunks and
//! never reads the answers does not slow another member's pull, and the provider drops its
//! streams once their writes miss the deadline. The member is a [`rogue::Rogue`] speaking the
//! data protocol with its own key, admitted to the charter like any department.

use std::time::Duration;

use huitong_protocol::dataset::Body;
use huitong_protocol::wire::{DataRequest, DataResponse};
use huitong_protocol::ResourceCode;
use huitong_tests::{data, rogue, start, wait_until};

const MIB: u64 = 1024 * 1024;
const T: Duration = Duration::from_secs(120);

#[test]
fn a_consumer_that_stops_reading_does_not_stall_another_pull() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    for (seq, title) in [
        (1, "基线文件"),
        (2, "受干扰时拉取的文件"),
        (3, "被占住的文件"),
    ] {
        data::publish_entry(
            net,
            &dir,
            provider,
            &huitong_tests::entry(net, provider, seq, title),
        )?;
    }
    let size = 48 * MIB;
    for (code, file) in [("301001/000001", "a.bin"), ("301001/000002", "b.bin")] {
        data::publish_random_file(net, provider, code, &dir.join(file), size, consumer)?;
    }
    data::publish_random_file(
        net,
        provider,
        "301001/000003",
        &dir.join("c.bin"),
        64 * MIB,
        provider,
    )?;

    // Baseline: the consumer pulls one file with nobody else on the provider.
    let a_out = dir.join("a-out.bin");
    let (_, baseline) = data::pull_within(
        net,
        consumer,
        &["301001/000001", "--out", &a_out.to_string_lossy()],
        T,
    )?;
    assert!(data::same_bytes(&dir.join("a.bin"), &a_out)?);

    // A member opens 63 streams, asks for 4 chunks on each and never reads.
    let (key, _) = rogue::admit(net, provider)?;
    let r = rogue::connect(net, &key)?;
    let peer = net.nodes[provider].peer_id.clone();
    let code = ResourceCode::parse("301001/000003")?;
    let m = rogue::manifest(&r, &peer, &code)?;
    let Body::File { chunks, .. } = &m.body else {
        anyhow::bail!("301001/000003 is not a file");
    };
    let streams: Vec<Vec<DataRequest>> = (0..63)
        .map(|i| {
            (0..4)
                .map(|j| DataRequest::Chunk {
                    code: code.clone(),
                    version: 1,
                    hash: chunks[(i * 4 + j) % chunks.len()].hash,
                    grant: None,
                })
                .collect()
        })
        .collect();
    let opened = r.stall(&peer, streams)?;
    assert!(opened > 0, "the rogue opened no stream");
    // The provider is writing chunks to the rogue's streams, blocked once their windows fill.
    wait_until(T, "chunks being sent to the rogue", || {
        Ok(data::counter(net, provider, "sending_chunks")? >= 8)
    })?;

    // Another member's pull of as many bytes is not held up behind the rogue's streams.
    let b_out = dir.join("b-out.bin");
    let (_, contested) = data::pull_within(
        net,
        consumer,
        &["301001/000002", "--out", &b_out.to_string_lossy()],
        T,
    )?;
    assert!(data::same_bytes(&dir.join("b.bin"), &b_out)?);
    let allowed = baseline * 3 + Duration::from_secs(5);
    assert!(
        contested <= allowed,
        "a pull beside a stalled consumer took {contested:?}, alone {baseline:?} (allowed {allowed:?})"
    );

    // The provider drops the rogue's streams once their writes miss the deadline.
    wait_until(T, "the stalled streams dropped", || {
        Ok(net.get(provider, "/status")?["rejected"]["slow_consumer"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
    })?;
    eprintln!("pull alone {baseline:?}, beside a stalled consumer {contested:?}");
    Ok(())
}

/// Review of issue #10 (H1): a member looping "one chunk, then a receipt" made the provider
/// append one transfer entry per loop until its feed quota was spent, locking the provider out
/// of its own feed (no publish, no decisions) for the hour. Now one consumer opens at most
/// 1/16 of the quota in sessions an hour, refused before anything is sent, and the provider's
/// own appends and other members' pulls go on.
#[test]
fn a_member_cannot_spend_a_providers_feed_quota_on_transfers() -> anyhow::Result<()> {
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    data::publish_entry(
        net,
        &dir,
        provider,
        &huitong_tests::entry(net, provider, 1, "小文件"),
    )?;
    let src = dir.join("small.bin");
    data::publish_random_file(net, provider, "301001/000001", &src, 64 * 1024, consumer)?;
    // A quota of 96 entries an hour: 6 sessions an hour for one consumer.
    let auth = net.dir.join("authority.key");
    huitong_tests::cli_ok(
        net,
        hub,
        &[
            "charter",
            "quota",
            "--entries-per-hour",
            "96",
            "--authority-key",
            &auth.to_string_lossy(),
        ],
    )?;
    huitong_tests::wait_charter(net, provider, 2)?;
    let (key, _) = rogue::admit(net, provider)?;
    let r = rogue::connect(net, &key)?;
    let peer = net.nodes[provider].peer_id.clone();
    let code = ResourceCode::parse("301001/000001")?;
    let m = rogue::manifest(&r, &peer, &code)?;
    let Body::File { chunks, .. } = &m.body else {
        anyhow::bail!("301001/000001 is not a file");
    };
    let (mut receipts, mut refused) = (0, 0);
    for _ in 0..100 {
        let chunk = DataRequest::Chunk {
            code: code.clone(),
            version: 1,
            hash: chunks[0].hash,
            grant: None,
        };
        match r.data(&peer, chunk)?.0 {
            DataResponse::Chunk { .. } => {}
            DataResponse::Refused { message, .. } if message.contains("transfers") => {
                refused += 1;
                continue;
            }
            other => anyhow::bail!("unexpected answer to a chunk request: {other:?}"),
        }
        let receipt = DataRequest::Receipt {
            code: code.clone(),
            version: 1,
            fields: Vec::new(),
            grant: None,
        };
        match r.data(&peer, receipt)?.0 {
            DataResponse::Receipt(_) => receipts += 1,
            other => anyhow::bail!("unexpected answer to a receipt request: {other:?}"),
        }
    }
    assert_eq!(
        (receipts, refused),
        (6, 94),
        "transfers a member can cause in an hour (96 / 16 = 6)"
    );
    assert!(huitong_tests::rejected(net, provider, "transfer_budget")? >= 94);
    // The provider still appends to its own feed, and another member still pulls.
    huitong_tests::publish_ok(
        &f,
        provider,
        &huitong_tests::entry(&f.net, provider, 2, "配额内的新资源"),
    )?;
    let out = dir.join("small-out.bin");
    data::pull_within(
        &f.net,
        consumer,
        &["301001/000001", "--out", &out.to_string_lossy()],
        T,
    )?;
    assert!(data::same_bytes(&src, &out)?);
    Ok(())
}
