//! Issue #9, authorisation and audit with real nodes: a grant serves only the provider that
//! approved it (point 1), an unknown application is refused (point 2), a 不予共享 信息项 is never
//! sent whatever a grant lists (point 4), a receipt passes the same authorisation as a chunk
//! (point 5), the provider logs what it sent by itself — with or without a receipt — and a
//! receipt counts the bytes actually sent (point 7), and a grant event the applications view
//! refuses is never logged as the step it claims to be (point 8). A member under the test's
//! control ([`rogue::Rogue`]) speaks the data protocol and signs feed entries with its own key.

use std::time::Duration;

use huitong_config::{keyfile, NODE_KEY_FILE};
use huitong_protocol::application::GrantEvent;
use huitong_protocol::dataset::{Body, Manifest, MAX_MANIFEST_BYTES};
use huitong_protocol::feed::FEED_ENTRY_VERSION;
use huitong_protocol::grant::{assemble, endorse, mint, GrantFacts};
use huitong_protocol::receipt::{TransferOutcome, TransferRecord};
use huitong_protocol::wire::{DataRequest, DataResponse, Gossip};
use huitong_protocol::{
    codec, EntryHash, Envelope, Event, FeedEntry, Kind, ResourceCode, SecretKey,
};
use huitong_testnet::Testnet;
use huitong_tests::data;
use huitong_tests::rogue;
use huitong_tests::workflow::wait_state;
use huitong_tests::{cli_ok, start, wait_until};
use serde_bytes::ByteBuf;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

fn key_of(net: &Testnet, i: usize) -> anyhow::Result<SecretKey> {
    Ok(keyfile::read(&net.nodes[i].dir.join(NODE_KEY_FILE))?)
}

fn json(net: &Testnet, i: usize, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = cli_ok(net, i, args)?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn refusal(answer: &(DataResponse, Vec<u8>)) -> Option<String> {
    match &answer.0 {
        DataResponse::Refused { message, .. } => Some(message.clone()),
        _ => None,
    }
}

#[test]
fn grants_hold_to_the_approving_provider_and_every_transfer_is_logged() -> anyhow::Result<()> {
    let mut f = start(3, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer, second) = (0, 1, 2, 3);
    let code = "301001/000041";
    let cond = Some("仅用于社会救助核验");
    // Two providers publish the same resource code (codes are unique per provider only).
    data::publish_table_entry(net, &dir, provider, 41, "有条件共享", cond)?;
    data::publish_table_entry(net, &dir, second, 41, "有条件共享", cond)?;
    data::publish_table_entry(net, &dir, provider, 42, "无条件共享", None)?;
    let csv = data::table_csv(&dir.join("t.csv"), 20_000, 0..0)?;
    let csv2 = data::table_csv(&dir.join("t2.csv"), 20_000, 0..20_000)?;
    data::publish(net, second, code, &csv2, &[])?;
    data::publish(net, provider, code, &csv, &[])?;
    data::publish(net, provider, "301001/000042", &csv, &[])?;
    data::wait_version(net, consumer, "301001/000042", 1)?;
    let (p_uscc, s_uscc) = (
        net.nodes[provider].uscc.clone(),
        net.nodes[second].uscc.clone(),
    );

    // The consumer applies to the first provider, which approves: granted.
    let out = json(
        net,
        consumer,
        &[
            "apply",
            code,
            "--provider",
            &p_uscc,
            "--fields",
            "编号,姓名",
            "--purpose",
            "低保审核核验",
            "--basis",
            "《社会救助暂行办法》第十一条",
            "--until",
            "2099-12-31",
            "--json",
        ],
    )?;
    let id = out[0]["id"].as_str().unwrap_or_default().to_string();
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    cli_ok(net, provider, &["approve", &id])?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;
    let x = dir.join("x.csv").to_string_lossy().to_string();
    // Point 1: the second provider does not serve its own rows under the first one's grant.
    let err = data::pull_refused(
        net,
        consumer,
        &[code, "--provider", &s_uscc, "--grant", &id, "--out", &x],
    )?;
    assert!(
        err.contains("another provider") || err.contains("approval of the node serving"),
        "{err}"
    );

    // Point 4: the provider makes 姓名 不予共享 after the grant: never sent again.
    let mut entry = data::table_entry(net, provider, 41, "有条件共享", cond);
    entry["items"][1]["share_type"] = "不予共享".into();
    data::publish_entry(net, &dir, provider, &entry)?;
    let y = dir.join("y.csv").to_string_lossy().to_string();
    wait_until(T, "姓名 refused as 不予共享", || {
        let out = net.cli(
            consumer,
            &[
                "pull",
                code,
                "--provider",
                &p_uscc,
                "--fields",
                "编号,姓名",
                "--out",
                &y,
            ],
        )?;
        Ok(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("不予共享"))
    })?;
    // Without --fields the pull takes the granted items that may still be sent.
    let s = data::pull(net, consumer, &[code, "--provider", &p_uscc, "--out", &y])?;
    assert_eq!(s["fields"], serde_json::json!(["编号"]), "{s}");
    assert_eq!(
        s["withheld"],
        serde_json::json!(["姓名", "金额", "日期", "备注"]),
        "{s}"
    );
    assert_eq!(s["rows"].as_u64(), Some(20_000), "{s}");

    // A member under the test's control.
    let (rkey, _) = rogue::admit(net, provider)?;
    let t0 = huitong_tests::now_ms();
    let rogue = rogue::connect(net, &rkey)?;
    let peer = net.nodes[provider].peer_id.clone();
    let code41 = ResourceCode::parse(code)?;

    // Point 5: no receipt without the same authorisation as the data.
    for fields in [vec![], vec!["编号".to_string()]] {
        let a = rogue.data(
            &peer,
            DataRequest::Receipt {
                code: code41.clone(),
                version: 1,
                fields: fields.clone(),
                grant: None,
            },
        )?;
        assert!(
            refusal(&a).is_some(),
            "a receipt for {fields:?} of a conditional resource without a grant"
        );
    }

    // Point 2: a token that verifies (platform key, the provider's own approval) but names an
    // application the provider has no record of is refused.
    let facts = GrantFacts {
        id: "ffffffffffffffffffffffffffffffff".into(),
        code: code.into(),
        provider: key_of(net, provider)?.public(),
        consumer: rkey.public(),
        fields: vec!["编号".into()],
        expires: 4_000_000_000,
    };
    let token = mint(&key_of(net, hub)?, &facts)?;
    let block = endorse(&key_of(net, provider)?, &token, &facts)?;
    let a = rogue.data(
        &peer,
        DataRequest::Manifest {
            code: code41.clone(),
            version: None,
            grant: Some(ByteBuf::from(assemble(&token, &block)?)),
        },
    )?;
    let why = refusal(&a).unwrap_or_default();
    assert!(why.contains("no record of that application"), "{why:?}");

    // Point 7: the rogue takes one chunk of an open table and never asks for a receipt; the
    // provider logs the abandoned transfer by itself, with the bytes it sent.
    let code42 = ResourceCode::parse("301001/000042")?;
    let (m, _) = rogue.data(
        &peer,
        DataRequest::Manifest {
            code: code42.clone(),
            version: None,
            grant: None,
        },
    )?;
    let DataResponse::Manifest { envelope, .. } = m else {
        anyhow::bail!("no manifest: {m:?}");
    };
    let env = Envelope::open_limited(&envelope, Kind::Manifest, MAX_MANIFEST_BYTES)?;
    let manifest: Manifest = codec::decode(env.payload(), MAX_MANIFEST_BYTES)?;
    let Body::Table { columns, .. } = &manifest.body else {
        anyhow::bail!("not a table");
    };
    let chunk = columns[0].chunks[0];
    let (c, bytes) = rogue.data(
        &peer,
        DataRequest::Chunk {
            code: code42.clone(),
            version: 1,
            hash: chunk.hash,
            grant: None,
        },
    )?;
    assert!(matches!(c, DataResponse::Chunk { .. }), "{c:?}");
    let rogue_hex = rkey.public().to_hex();
    let mut abandoned = Value::Null;
    wait_until(
        T,
        "the abandoned transfer logged and seen by the hub",
        || {
            let v = json(
                net,
                hub,
                &["audit", "transfers", "--code", "301001/000042", "--json"],
            )?;
            if let Some(t) = v.iter().find(|t| t["consumer_key"] == rogue_hex.as_str()) {
                abandoned = t.clone();
            }
            Ok(!abandoned.is_null())
        },
    )?;
    assert_eq!(abandoned["outcome"], "abandoned", "{abandoned}");
    assert_eq!(
        abandoned["bytes"].as_u64(),
        Some(bytes.len() as u64),
        "{abandoned}"
    );
    assert_eq!(abandoned["chunks"].as_u64(), Some(1), "{abandoned}");
    assert!(abandoned["receipt"].is_null(), "{abandoned}");
    let tid = abandoned["id"].as_str().unwrap_or_default().to_string();
    wait_until(T, "the transfer in the hub's log", || {
        let out = net.cli(hub, &["audit", "verify", "--record", &tid, "--json"])?;
        Ok(out.status.success()
            && serde_json::from_slice::<Vec<Value>>(&out.stdout)?
                .iter()
                .any(|r| r["kind"] == "transfer"))
    })?;

    // A preview (the portal's first rows) passes the same authorisation: refused for a
    // conditional table without a grant; an open table shows only its open 信息项. (After the
    // abandoned transfer: a preview's rows count in the member's transfer of that version.)
    let a = rogue.data(
        &peer,
        DataRequest::Preview {
            code: code41.clone(),
            version: 1,
        },
    )?;
    let why = refusal(&a).unwrap_or_default();
    assert!(why.contains("not shared without conditions"), "{why:?}");
    let (p, _) = rogue.data(
        &peer,
        DataRequest::Preview {
            code: ResourceCode::parse("301001/000042")?,
            version: 1,
        },
    )?;
    let DataResponse::Preview { columns, rows } = p else {
        anyhow::bail!("no preview: {p:?}");
    };
    assert_eq!(
        columns,
        ["编号", "姓名", "金额", "日期"],
        "备注 is 有条件共享"
    );
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[9][0], "NO0000000009");

    // A full pull and then an incremental one: each receipt counts the bytes actually sent,
    // and matches the provider's own completed transfer record.
    let z = dir.join("z.csv").to_string_lossy().to_string();
    let full = data::pull(net, consumer, &["301001/000042", "--out", &z])?;
    let csv3 = data::table_csv(&dir.join("t3.csv"), 20_000, 0..200)?;
    data::publish(net, provider, "301001/000042", &csv3, &[])?;
    data::wait_version(net, consumer, "301001/000042", 2)?;
    let z2 = dir.join("z2.csv").to_string_lossy().to_string();
    let incr = data::pull(net, consumer, &["301001/000042", "--out", &z2])?;
    for s in [&full, &incr] {
        let receipt = s["receipt"].as_str().unwrap_or_default().to_string();
        assert!(!receipt.is_empty(), "{s}");
        let mut t = Value::Null;
        wait_until(T, "the completed transfer", || {
            let v = json(net, consumer, &["audit", "transfers", "--json"])?;
            t = v
                .into_iter()
                .find(|t| t["receipt"] == receipt.as_str())
                .unwrap_or(Value::Null);
            Ok(!t.is_null())
        })?;
        let r = json(net, consumer, &["audit", "receipts", "--json"])?
            .into_iter()
            .find(|r| r["id"] == receipt.as_str())
            .unwrap_or(Value::Null);
        assert_eq!(t["outcome"], "completed", "{t}");
        assert_eq!(r["bytes"], t["bytes"], "receipt {r} vs transfer {t}");
        assert_eq!(t["bytes"], s["bytes_fetched"], "transfer {t} vs pull {s}");
    }
    let (f_bytes, i_bytes) = (
        full["bytes_fetched"].as_u64().unwrap_or(0),
        incr["bytes_fetched"].as_u64().unwrap_or(0),
    );
    assert!(
        i_bytes > 0 && i_bytes < f_bytes / 2,
        "full {f_bytes}, incremental {i_bytes}"
    );

    // Point 8: the rogue "revokes" the consumer's application from its own feed. The view
    // refuses it and the hub logs it as refused, never as a revocation.
    let forged = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: rkey.public(),
        seq: 1,
        prev: EntryHash::ZERO,
        timestamp_ms: t0 + 1,
        charter: 2,
        event: Event::Grant(GrantEvent::Revoked {
            id: id.clone(),
            reason: "冒充撤销".into(),
        }),
        by: None,
    }
    .seal(&rkey);
    rogue.gossip(codec::encode(&Gossip::Entry(ByteBuf::from(
        forged.envelope.to_bytes(),
    ))))?;
    let mut logged = Vec::new();
    wait_until(T, "the forged revocation logged as refused", || {
        let out = net.cli(hub, &["audit", "verify", "--record", &id, "--json"])?;
        logged = serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default();
        Ok(logged
            .iter()
            .any(|r| r["signer"] == "海门区测试局" && r["kind"] == "refused"))
    })?;
    assert!(
        !logged.iter().any(|r| r["kind"] == "revocation"),
        "{logged:?}"
    );
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    // A transfer record about another provider's resource (the rogue claims to have served
    // the consumer 301001/000042) is refused by every view and logged as refused.
    let claim = TransferRecord {
        id: "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".into(),
        consumer: key_of(net, consumer)?.public(),
        code: code42.clone(),
        version: 1,
        manifest: manifest_hash(&envelope),
        fields: vec!["编号".into()],
        grant: None,
        bytes: 1,
        chunks: 1,
        started_ms: 1,
        ended_ms: 2,
        outcome: TransferOutcome::Completed,
        receipt: None,
    };
    let second = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: rkey.public(),
        seq: 2,
        prev: forged.hash,
        timestamp_ms: t0 + 2,
        charter: 2,
        event: Event::Transfer(claim),
        by: None,
    }
    .seal(&rkey);
    rogue.gossip(codec::encode(&Gossip::Entry(ByteBuf::from(
        second.envelope.to_bytes(),
    ))))?;
    wait_until(T, "the forged transfer logged as refused", || {
        let out = net.cli(
            hub,
            &["audit", "verify", "--record", &"e".repeat(32), "--json"],
        )?;
        Ok(out.status.success()
            && serde_json::from_slice::<Vec<Value>>(&out.stdout)?
                .iter()
                .any(|r| r["kind"] == "refused"))
    })?;
    let listed = json(net, hub, &["audit", "transfers", "--json"])?;
    assert!(
        !listed.iter().any(|t| t["id"] == "e".repeat(32).as_str()),
        "{listed:?}"
    );
    Ok(())
}

fn manifest_hash(envelope: &[u8]) -> huitong_protocol::dataset::ChunkHash {
    huitong_protocol::dataset::ChunkHash::of(
        Envelope::open_limited(envelope, Kind::Manifest, MAX_MANIFEST_BYTES)
            .map(|e| e.payload().to_vec())
            .unwrap_or_default()
            .as_slice(),
    )
}
