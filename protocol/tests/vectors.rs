//! Regenerates the hex test vectors of `docs/protocol.md` and checks the document holds them,
//! so the published byte layout is always the one this code produces.
//! `HUITONG_PRINT_VECTORS=1 cargo test -p huitong-protocol --test vectors -- --nocapture`
//! prints them.

use huitong_protocol::audit::note::{cosign, open_checkpoint, sign_checkpoint};
use huitong_protocol::audit::{self, Record, RecordKind};
use huitong_protocol::charter::CHARTER_LAYOUT_VERSION;
use huitong_protocol::dataset::ChunkHash;
use huitong_protocol::feed::{VerifiedEntry, FEED_ENTRY_VERSION};
use huitong_protocol::receipt::{Receipt, SignedReceipt, RECEIPT_VERSION};
use huitong_protocol::wire::{Gossip, Head, Summary, SyncRequest};
use huitong_protocol::{
    codec, uscc, Charter, EntryHash, Event, FeedEntry, Member, MemberStatus, ResourceCode, Role,
    SecretKey, Uscc,
};

fn vectors() -> Vec<(&'static str, String)> {
    let node = SecretKey::from_bytes([1; 32]);
    let authority = SecretKey::from_bytes([2; 32]);
    let entry = FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: node.public(),
        seq: 1,
        prev: EntryHash::ZERO,
        timestamp_ms: 1_700_000_000_000,
        charter: 1,
        event: Event::CatalogueWithdrawn {
            code: ResourceCode::parse("101001/000001").unwrap(),
            reason: "示例".into(),
        },
        by: None,
    };
    let sealed = entry.seal(&node);
    let charter = Charter {
        layout: CHARTER_LAYOUT_VERSION,
        federation: "海门区".into(),
        version: 1,
        issued_at_ms: 1_700_000_000_000,
        authority: authority.public(),
        members: vec![Member {
            uscc: Uscc::parse("91350100M000100Y43").unwrap(),
            name: "示例部门".into(),
            node_key: node.public(),
            role: Role::Hub,
            addresses: vec!["/ip4/127.0.0.1/tcp/7400".into()],
            status: MemberStatus::Active,
        }],
        timezone: huitong_protocol::charter::DEFAULT_TIMEZONE.into(),
        witnesses: Default::default(),
        previous: None,
        closed: Vec::new(),
        feed_quota: Default::default(),
    };
    let summary = SyncRequest::Summary(Summary {
        charter_version: 1,
        heads: vec![Head {
            feed: node.public(),
            seq: 1,
        }],
        audit: Vec::new(),
    });
    let receipt = Receipt {
        layout: RECEIPT_VERSION,
        provider: node.public(),
        consumer: authority.public(),
        code: ResourceCode::parse("101001/000001").unwrap(),
        version: 1,
        manifest: ChunkHash([3; 32]),
        fields: vec!["姓名".into()],
        bytes: 4096,
        grant: Some("0123456789abcdef0123456789abcdef".into()),
        signed_at_ms: 1_700_000_000_000,
    };
    let record = Record {
        kind: RecordKind::Receipt,
        id: SignedReceipt::seal(&node, &receipt).id,
        signer: authority.public(),
        seq: 7,
        hash: [4; 32],
        at_ms: 1_700_000_000_000,
    }
    .encode();
    // The hub (node key) signs a one-entry tree; the witness (authority key) cosigns at a fixed time.
    let note = sign_checkpoint(
        &node,
        &audit::origin("海门区"),
        1,
        tlog_tiles::record_hash(&record),
    );
    let cosigned = cosign(&note, &authority, 1_700_000_000).unwrap();
    vec![
        (
            "uscc-check-91350100M000100Y4",
            uscc::check_character("91350100M000100Y4")
                .unwrap()
                .to_string(),
        ),
        ("node-public-key", node.public().to_hex()),
        ("authority-public-key", authority.public().to_hex()),
        ("feed-entry-payload", hex::encode(codec::encode(&entry))),
        ("feed-entry-hash", sealed.hash.to_hex()),
        (
            "feed-entry-envelope",
            hex::encode(sealed.envelope.to_bytes()),
        ),
        (
            "charter-envelope",
            hex::encode(charter.seal(&authority).to_bytes()),
        ),
        (
            "gossip-entry",
            hex::encode(codec::encode(&Gossip::Entry(serde_bytes::ByteBuf::from(
                sealed.envelope.to_bytes(),
            )))),
        ),
        ("sync-summary-request", hex::encode(codec::encode(&summary))),
        (
            "transfer-receipt-envelope",
            hex::encode(SignedReceipt::seal(&node, &receipt).bytes),
        ),
        ("audit-record", hex::encode(&record)),
        (
            "audit-leaf-hash",
            hex::encode(tlog_tiles::record_hash(&record).0),
        ),
        ("audit-checkpoint-note-cosigned", hex::encode(cosigned)),
    ]
}

#[test]
fn protocol_doc_holds_the_current_vectors() {
    // Included at compile time (cargo rebuilds when the doc changes), so a test binary reused
    // from another checkout of the same sources never reads a path that is gone.
    let doc = include_str!("../../docs/protocol.md");
    let print = std::env::var_os("HUITONG_PRINT_VECTORS").is_some();
    let mut missing = Vec::new();
    for (name, value) in vectors() {
        if print {
            println!("vector {name}\n{value}\n");
        }
        let needle = format!("vector {name}\n{value}\n");
        if !doc.contains(&needle) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/protocol.md is missing or has stale vectors: {missing:?}"
    );
}

#[test]
fn vectors_verify_as_a_receiver_would() {
    let v = vectors();
    let env = hex::decode(
        &v.iter()
            .find(|(n, _)| *n == "feed-entry-envelope")
            .unwrap()
            .1,
    )
    .unwrap();
    let opened = VerifiedEntry::open(&env).unwrap();
    assert_eq!(opened.entry.seq, 1);
    let authority = SecretKey::from_bytes([2; 32]).public();
    let ch = hex::decode(&v.iter().find(|(n, _)| *n == "charter-envelope").unwrap().1).unwrap();
    let (c, _) = Charter::open(&ch, &authority).unwrap();
    assert_eq!(c.members[0].name, "示例部门");
    let get = |name: &str| hex::decode(&v.iter().find(|(n, _)| *n == name).unwrap().1).unwrap();
    let r = SignedReceipt::open(&get("transfer-receipt-envelope")).unwrap();
    assert_eq!(r.receipt.bytes, 4096);
    let hub = SecretKey::from_bytes([1; 32]).public();
    let cp = open_checkpoint(
        &get("audit-checkpoint-note-cosigned"),
        &audit::origin("海门区"),
        &hub,
        &[authority],
    )
    .unwrap();
    assert_eq!(cp.size, 1);
    assert_eq!(cp.cosigned_by, vec![(authority, 1_700_000_000)]);
    assert_eq!(cp.root, tlog_tiles::record_hash(&get("audit-record")));
}
