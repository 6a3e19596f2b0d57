//! Issue #10, point 5, with real nodes: a member that opens data streams, asks for chunks and
//! never reads the answers does not slow another member's pull, and the provider drops its
//! streams once their writes miss the deadline. The member is a [`rogue::Rogue`] speaking the
//! data protocol with its own key, admitted to the charter like any department.

use std::time::Duration;

use huitong_protocol::dataset::Body;
use huitong_protocol::wire::DataRequest;
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
