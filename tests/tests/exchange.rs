//! Dataset exchange between real nodes over real sockets: publish, pull, share types, rejects,
//! `--fields`, incremental versions, a 1 GiB round trip, kill -9 of the consumer and of the
//! provider mid-pull, a tampered chunk, a pull through the hub's relay, and the bulk data port
//! (chunks over TCP + TLS with the node keys; members only; off → the libp2p connection).
//!
//! The heavy tests take a lock so they never run at the same time (a loaded 2-core machine).

use std::sync::Mutex;
use std::time::Duration;

use huitong_tests::data::{self, counter};
use huitong_tests::{cli_ok, start, start_prepared, start_with, wait_until};

static HEAVY: Mutex<()> = Mutex::new(());

const MIB: u64 = 1024 * 1024;
/// Streams × chunk requests sent ahead on each × the largest file chunk: the most a killed
/// pull can have lost.
const MAX_IN_FLIGHT: u64 = 8 * 4 * 4 * MIB;

#[test]
fn tables_share_types_rejects_fields_and_increments() -> anyhow::Result<()> {
    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = start(3, 5)?;
    let (provider, consumer, fresh) = (1, 2, 3);
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    data::publish_table_entry(net, &dir, provider, 1, "无条件共享", None)?;

    // A row that breaks an item rule refuses the whole publish and names row, item, value.
    let rows = 100_000;
    let bad = dir.join("bad.csv");
    data::table_csv(&bad, rows, 0..0)?;
    let text = std::fs::read_to_string(&bad)?
        .replace("NO0000000005,张三5,35.05", "NO0000000005,张三5,3x5");
    std::fs::write(&bad, text)?;
    let out = net.cli(
        provider,
        &[
            "dataset",
            "publish",
            "301001/000001",
            "--from",
            &bad.to_string_lossy(),
        ],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("row 6: 金额") && err.contains("3x5"), "{err}");
    let versions = cli_ok(
        net,
        provider,
        &["dataset", "versions", "301001/000001", "--json"],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&versions.stdout)?;
    assert_eq!(
        v[0]["versions"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );

    // With --allow-rejects the rest is published and the reject is reported.
    let r = data::publish(net, provider, "301001/000001", &bad, &["--allow-rejects"])?;
    assert_eq!(
        (r["rows"].as_u64(), r["rejected_rows"].as_u64()),
        (Some(rows - 1), Some(1))
    );

    // Version 2: all rows valid.
    let v2 = data::table_csv(&dir.join("v2.csv"), rows, 0..0)?;
    let r = data::publish(net, provider, "301001/000001", &v2, &[])?;
    assert_eq!(r["version"], 2);
    data::wait_version(net, consumer, "301001/000001", 2)?;

    // Pull v2: every 无条件共享 column; 备注 (有条件共享) is left out.
    let out2 = dir.join("v2-out.csv");
    let s = data::pull(
        net,
        consumer,
        &[
            "301001/000001",
            "--version",
            "2",
            "--out",
            &out2.to_string_lossy(),
        ],
    )?;
    assert_eq!(s["withheld"], serde_json::json!(["备注"]));
    assert_eq!(s["rows"].as_u64(), Some(rows));
    let want: String = std::iter::once("编号,姓名,金额,日期".to_string())
        .chain((0..rows).map(|n| {
            data::table_row(n, "")
                .rsplit_once(',')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default()
        }))
        .map(|l| l + "\n")
        .collect();
    assert!(
        std::fs::read_to_string(&out2)? == want,
        "pulled CSV equals the published rows"
    );

    // Asking for the conditional column is refused by the provider.
    let err = data::pull_refused(
        net,
        consumer,
        &[
            "301001/000001",
            "--fields",
            "编号,备注",
            "--out",
            &dir.join("x.csv").to_string_lossy(),
        ],
    )?;
    assert!(
        err.contains("provider refused") && err.contains("备注"),
        "{err}"
    );

    // Version 3: 1% of the rows changed. The consumer holds v2, so it fetches little.
    let v3 = data::table_csv(&dir.join("v3.csv"), rows, 50_000..51_000)?;
    data::publish(net, provider, "301001/000001", &v3, &[])?;
    data::wait_version(net, consumer, "301001/000001", 3)?;
    let s = data::pull(
        net,
        consumer,
        &[
            "301001/000001",
            "--out",
            &dir.join("v3-out.csv").to_string_lossy(),
        ],
    )?;
    let (fetched, total) = (
        s["bytes_fetched"].as_u64().unwrap_or(0),
        s["bytes"].as_u64().unwrap_or(1),
    );
    assert!(
        fetched > 0 && fetched * 100 <= total * 5,
        "incremental pull fetched {fetched} of {total} bytes"
    );

    // --fields transfers only those columns' chunks (a node that holds nothing yet).
    let served_before = counter(net, provider, "served_bytes")?;
    let s = data::pull(
        net,
        fresh,
        &[
            "301001/000001",
            "--fields",
            "编号,金额",
            "--out",
            &dir.join("fields.jsonl").to_string_lossy(),
        ],
    )?;
    let fetched = s["bytes_fetched"].as_u64().unwrap_or(0);
    assert_eq!(fetched, s["bytes"].as_u64().unwrap_or(0));
    assert_eq!(
        counter(net, provider, "served_bytes")? - served_before,
        fetched,
        "the provider sent exactly those columns"
    );
    assert!(
        fetched * 2 < total,
        "two of four columns: {fetched} of {total}"
    );
    let first = std::fs::read_to_string(dir.join("fields.jsonl"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(first, r#"{"编号":"NO0000000000","金额":"0.00"}"#);

    // 有条件共享 and 不予共享 resources are refused by the provider, with the reason.
    data::publish_table_entry(
        net,
        &dir,
        provider,
        2,
        "有条件共享",
        Some("仅用于社会救助核验"),
    )?;
    data::publish_table_entry(
        net,
        &dir,
        provider,
        3,
        "不予共享",
        Some("《中华人民共和国个人信息保护法》第十三条"),
    )?;
    let small = data::table_csv(&dir.join("small.csv"), 10, 0..0)?;
    data::publish(net, provider, "301001/000002", &small, &[])?;
    data::publish(net, provider, "301001/000003", &small, &[])?;
    data::wait_version(net, consumer, "301001/000003", 1)?;
    let err = data::refused_into(net, consumer, "301001/000002", &dir.join("c.csv"), &[])?;
    assert!(err.contains("有条件共享") && err.contains("grant"), "{err}");
    let err = data::refused_into(net, consumer, "301001/000003", &dir.join("n.csv"), &[])?;
    assert!(
        err.contains("不予共享") && err.contains("个人信息保护法"),
        "{err}"
    );
    assert!(!dir.join("c.csv").exists() && !dir.join("n.csv").exists());
    Ok(())
}

#[test]
fn gib_round_trip_survives_killed_consumer_and_provider() -> anyhow::Result<()> {
    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer, hub) = (1, 2, 0);
    let entry = huitong_tests::entry(net, provider, 7, "一吉字节文件");
    data::publish_entry(net, &dir, provider, &entry)?;
    let src = dir.join("source.bin");
    let size = 1024 * MIB;
    let r = data::publish_random_file(net, provider, "301001/000007", &src, size, consumer)?;
    assert_eq!(r["bytes"].as_u64(), Some(size));
    data::wait_version(net, hub, "301001/000007", 1)?;

    // Kill -9 the consumer node mid-pull, restart it, pull again: it resumes.
    let out = dir.join("consumer.bin");
    let out_s = out.to_string_lossy().to_string();
    let mut child = data::spawn_pull(net, consumer, &["301001/000007", "--out", &out_s])?;
    wait_until(
        Duration::from_secs(120),
        "a third of the file fetched",
        || Ok(counter(net, consumer, "fetched_bytes")? >= size / 3),
    )?;
    net.stop(consumer, true)?;
    let status = child.wait()?;
    assert!(!status.success(), "the CLI reports the lost node");
    assert!(!out.exists(), "no partial output");
    net.start(consumer)?;
    net.wait_healthy(Duration::from_secs(60))?;
    let s = data::pull(net, consumer, &["301001/000007", "--out", &out_s])?;
    assert_eq!(s["data_plane"], "tls-tcp", "{s}");
    assert!(
        s["bytes_reused"].as_u64() >= Some(size / 3 - MAX_IN_FLIGHT),
        "resumed from held chunks: {s}"
    );
    let served = counter(net, provider, "served_bytes")?;
    assert!(served >= size, "{served}");
    assert!(
        served - size <= MAX_IN_FLIGHT,
        "re-sent {} bytes, more than the chunks in flight",
        served - size
    );
    assert!(data::same_bytes(&src, &out)?, "bit-exact after resume");
    std::fs::remove_file(&out)?;

    // Kill -9 the provider mid-pull and restart it: the pull completes by itself.
    let out = dir.join("hub.bin");
    let out_s = out.to_string_lossy().to_string();
    let child = data::spawn_pull(net, hub, &["301001/000007", "--out", &out_s])?;
    wait_until(
        Duration::from_secs(120),
        "some of the file fetched by the hub",
        || Ok(counter(net, hub, "fetched_bytes")? >= size / 4),
    )?;
    net.stop(provider, true)?;
    net.start(provider)?;
    let done = child.wait_with_output()?;
    assert!(
        done.status.success(),
        "pull across a provider restart: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&done.stdout)?;
    assert_eq!(s["bytes"].as_u64(), Some(size));
    assert!(
        data::same_bytes(&src, &out)?,
        "bit-exact across a provider restart"
    );
    Ok(())
}

#[test]
fn tampered_chunk_is_rejected_and_named() -> anyhow::Result<()> {
    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    data::publish_entry(
        net,
        &dir,
        provider,
        &huitong_tests::entry(net, provider, 8, "被篡改的文件"),
    )?;
    let src = dir.join("tamper.bin");
    data::publish_random_file(net, provider, "301001/000008", &src, 24 * MIB, consumer)?;

    // Flip one byte of one stored chunk on the provider.
    let chunks = net.nodes[provider].dir.join("chunks");
    let victim = std::fs::read_dir(&chunks)?
        .filter_map(|d| d.ok())
        .filter(|d| d.file_name() != "tmp")
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
        })
        .map(|e| e.path())
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow::anyhow!("no chunk found"))?;
    let mut bytes = std::fs::read(&victim)?;
    bytes[500] ^= 0xff;
    std::fs::write(&victim, bytes)?;
    let name = victim
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();

    let out = dir.join("tampered-out.bin");
    let err = data::refused_into(net, consumer, "301001/000008", &out, &[])?;
    assert!(
        err.contains(&name) && err.contains("failed verification"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    let held = net.nodes[consumer]
        .dir
        .join("chunks")
        .join(&name[..2])
        .join(&name);
    assert!(!held.exists(), "the bad chunk is not stored");
    assert_eq!(counter(net, consumer, "failed_chunks")?, 1);
    Ok(())
}

#[test]
fn pull_goes_through_the_hub_when_no_direct_route() -> anyhow::Result<()> {
    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // Both departments publish no address: each can dial only the hub (and the city).
    let mut f = start_with(2, 5, &["police", "market"])?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (
        net.index("market").unwrap_or(2),
        net.index("police").unwrap_or(1),
    );
    data::publish_entry(
        net,
        &dir,
        provider,
        &huitong_tests::entry(net, provider, 9, "经中继传输的文件"),
    )?;
    let src = dir.join("relay.bin");
    data::publish_random_file(net, provider, "301001/000009", &src, 64 * MIB, consumer)?;
    let out = dir.join("relay-out.bin");
    let s = data::pull(
        net,
        consumer,
        &["301001/000009", "--out", &out.to_string_lossy()],
    )?;
    assert_eq!(s["route"], "relayed", "{s}");
    // A relayed connection says nothing of where the provider's bulk port is reached.
    assert_eq!(s["data_plane"], "libp2p", "{s}");
    // The receipt request goes the same way.
    assert!(s["receipt"].as_str().is_some(), "no receipt: {s}");
    assert!(data::same_bytes(&src, &out)?);
    Ok(())
}

/// Chunk files in a node's chunk store.
fn chunk_files(net: &huitong_testnet::Testnet, i: usize) -> usize {
    let root = net.nodes[i].dir.join("chunks");
    std::fs::read_dir(&root)
        .map(|dirs| {
            dirs.flatten()
                .filter_map(|d| std::fs::read_dir(d.path()).ok())
                .map(|files| files.count())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn file_pulls_write_once_and_reuse_the_earlier_output() -> anyhow::Result<()> {
    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = start(2, 5)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    data::publish_entry(
        net,
        &dir,
        provider,
        &huitong_tests::entry(net, provider, 9, "按版本更新的文件"),
    )?;
    let v1 = dir.join("v1.bin");
    data::publish_random_file(net, provider, "301001/000009", &v1, 48 * MIB, consumer)?;
    let before = chunk_files(net, consumer);
    let out = dir.join("pulled.bin");
    let out_s = out.to_string_lossy().to_string();
    let s = data::pull(net, consumer, &["301001/000009", "--out", &out_s])?;
    assert_eq!(s["bytes_fetched"].as_u64(), Some(48 * MIB), "{s}");
    assert!(data::same_bytes(&v1, &out)?);
    // Written once: into the output, not also into the chunk store; no partial left behind.
    assert_eq!(chunk_files(net, consumer), before, "no chunk-store copy");
    assert!(huitong_node::partial::existing(&out).is_empty());

    // Version 2 changes 1 MiB in the middle: the pull reuses the rest from the earlier output.
    let v2 = dir.join("v2.bin");
    let mut bytes = std::fs::read(&v1)?;
    for b in &mut bytes[(20 * MIB) as usize..(21 * MIB) as usize] {
        *b ^= 0x5a;
    }
    std::fs::write(&v2, &bytes)?;
    data::publish(net, provider, "301001/000009", &v2, &["--file"])?;
    data::wait_version(net, consumer, "301001/000009", 2)?;
    let s = data::pull(net, consumer, &["301001/000009", "--out", &out_s])?;
    let fetched = s["bytes_fetched"].as_u64().unwrap_or(u64::MAX);
    assert!(
        fetched <= 12 * MIB && s["bytes_reused"].as_u64() >= Some(36 * MIB),
        "only the changed chunks are fetched: {s}"
    );
    assert!(data::same_bytes(&v2, &out)?, "bit-exact");

    // An output changed since is not trusted: its chunks are fetched again.
    std::fs::write(&out, b"overwritten by the operator")?;
    let other = dir.join("again.bin");
    let s = data::pull(
        net,
        consumer,
        &["301001/000009", "--out", &other.to_string_lossy()],
    )?;
    assert_eq!(s["bytes_fetched"].as_u64(), Some(48 * MIB), "{s}");
    assert!(data::same_bytes(&v2, &other)?, "bit-exact");
    Ok(())
}

#[test]
fn chunks_go_over_the_bulk_data_port_to_members_only() -> anyhow::Result<()> {
    use futures::AsyncReadExt;
    use huitong_protocol::wire::DataRequest;

    let _g = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    // 区市场监管局 (node 2) turns its bulk data port off.
    let mut f = start_prepared(2, 5, &[], |net| {
        let dir = &net.nodes[2].dir;
        let mut config = huitong_config::Config::load(dir)?;
        config.network.data_listen = Some("off".into());
        std::fs::write(dir.join(huitong_config::CONFIG_FILE), config.to_toml())?;
        Ok(())
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (with_port, without_port) = (1, 2);
    for (provider, consumer, seq) in [(with_port, without_port, 10), (without_port, with_port, 11)]
    {
        let code = format!("301001/{seq:06}");
        let entry = huitong_tests::entry(net, provider, seq, "经数据端口传输的文件");
        data::publish_entry(net, &dir, provider, &entry)?;
        let src = dir.join(format!("bulk-{seq}.bin"));
        data::publish_random_file(net, provider, &code, &src, 24 * MIB, consumer)?;
        let out = dir.join(format!("bulk-{seq}-out.bin"));
        let s = data::pull(net, consumer, &[&code, "--out", &out.to_string_lossy()])?;
        let plane = if provider == with_port {
            "tls-tcp"
        } else {
            "libp2p"
        };
        assert_eq!(s["data_plane"], plane, "{s}");
        assert_eq!(s["route"], "direct", "{s}");
        assert!(s["receipt"].as_str().is_some(), "no receipt: {s}");
        assert!(data::same_bytes(&src, &out)?, "bit-exact over {plane}");
    }
    assert!(net.get(without_port, "/status")?["data_listen"].is_null());

    // A key outside the federation, from an address where members are connected (loopback
    // here), completes the TLS handshake, and the stream is closed before any request is
    // answered.
    let port = net.get(with_port, "/status")?["data_listen"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no data port in the status"))?
        .to_string();
    let addr: std::net::SocketAddr = port.parse()?;
    let provider_peer: libp2p::PeerId = net.nodes[with_port].peer_id.parse()?;
    let before = huitong_tests::rejected(net, with_port, "bulk_non_member")?;
    let rt = tokio::runtime::Runtime::new()?;
    let answered = rt.block_on(async {
        let stranger =
            huitong_node::link::bulk::BulkTls::new(libp2p::identity::Keypair::generate_ed25519())?;
        let mut s = stranger.dial(provider_peer, addr).await?;
        let req = DataRequest::Manifest {
            code: huitong_protocol::ResourceCode::parse("301001/000010")?,
            version: None,
            grant: None,
        };
        // The provider may close before these are read (a reset can fail them): only what
        // comes back counts.
        let _ = huitong_node::link::frame::write(&mut s, &req).await;
        let _ = futures::AsyncWriteExt::flush(&mut s).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        anyhow::Ok((read.is_ok(), buf.len()))
    })?;
    assert_eq!(answered, (true, 0), "closed at once, nothing answered");
    assert_eq!(
        huitong_tests::rejected(net, with_port, "bulk_non_member")?,
        before + 1
    );
    Ok(())
}
