//! A member peer under the test's control: it runs the node's own libp2p behaviour in a
//! background thread and sends whatever bytes the test gives it, so tests can check how a real
//! node treats forged, malformed and oversize messages from a peer that passed the gate.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use huitong_node::link::frame;
use huitong_node::net::{build_swarm, topic, BehaviourEvent};
use huitong_protocol::dataset::{Manifest, MAX_MANIFEST_BYTES};
use huitong_protocol::feed::{VerifiedEntry, FEED_ENTRY_VERSION};
use huitong_protocol::wire::{
    DataRequest, DataResponse, Gossip, SyncRequest, SyncResponse, DATA_PROTOCOL, MAX_DATA_FRAME,
};
use huitong_protocol::{
    codec, EntryHash, Envelope, Event, FeedEntry, Kind, ResourceCode, SecretKey,
};
use huitong_testnet::ids::{government_uscc, HAIMEN_DIVISION};
use huitong_testnet::Testnet;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response, Multiaddr, PeerId};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

/// The answer to one data-stream request: the response frame and, for a chunk, its bytes.
pub type DataAnswer = Result<(DataResponse, Vec<u8>), String>;

/// How the rogue answers the feed-sync requests it receives.
#[derive(Clone, Copy, Debug)]
pub enum Answering {
    /// Drops each request at once (the asker sees a failed request).
    Drop,
    /// Keeps each request unanswered (the asker waits for its request timeout).
    Hold,
    /// Answers each request with `Refused`.
    Refuse,
}

enum Cmd {
    Stall(
        PeerId,
        Vec<Vec<DataRequest>>,
        std::sync::mpsc::SyncSender<usize>,
    ),
    Dial(Multiaddr, PeerId),
    Gossip(Vec<u8>),
    Request(PeerId, SyncRequest),
    /// How to answer the sync requests received from now on.
    Answer(Answering),
    Data(PeerId, DataRequest, std::sync::mpsc::SyncSender<DataAnswer>),
}

/// Sends one request on a new data stream and reads the answer.
async fn data_request(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    req: DataRequest,
) -> DataAnswer {
    use futures::AsyncReadExt;
    let protocol = libp2p::StreamProtocol::new(DATA_PROTOCOL);
    let mut s = control
        .open_stream(peer, protocol)
        .await
        .map_err(|e| e.to_string())?;
    frame::write(&mut s, &req)
        .await
        .map_err(|e| e.to_string())?;
    futures::AsyncWriteExt::flush(&mut s)
        .await
        .map_err(|e| e.to_string())?;
    let r: DataResponse = frame::read(&mut s, MAX_DATA_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the stream closed")?;
    let mut body = Vec::new();
    if let DataResponse::Chunk { len } = &r {
        body.resize(*len as usize, 0);
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    }
    Ok((r, body))
}

/// Opens a stream, sends `requests` on it and never reads: the stream stays open (and the
/// provider's writes to it blocked) until the rogue stops. Whether the requests were sent.
async fn stalled_stream(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    requests: Vec<DataRequest>,
) -> Option<libp2p::Stream> {
    let protocol = libp2p::StreamProtocol::new(DATA_PROTOCOL);
    let mut s = control.open_stream(peer, protocol).await.ok()?;
    for r in &requests {
        frame::write(&mut s, r).await.ok()?;
    }
    futures::AsyncWriteExt::flush(&mut s).await.ok()?;
    Some(s)
}

/// Handle to the rogue peer.
pub struct Rogue {
    tx: mpsc::Sender<Cmd>,
    subscribed: Arc<Mutex<HashSet<PeerId>>>,
    /// Gossip publish errors seen so far.
    pub publish_errors: Arc<Mutex<Vec<String>>>,
}

impl Rogue {
    /// Starts the peer with `key` in federation `federation`.
    pub fn start(key: &SecretKey, federation: &str) -> anyhow::Result<Rogue> {
        let mut swarm = build_swarm(key, Duration::from_secs(600), None, false)?;
        let t = topic(federation);
        swarm.behaviour_mut().gossipsub.subscribe(&t)?;
        let (tx, mut rx) = mpsc::channel::<Cmd>(64);
        let subscribed = Arc::new(Mutex::new(HashSet::new()));
        let publish_errors = Arc::new(Mutex::new(Vec::new()));
        let (sub, errs) = (subscribed.clone(), publish_errors.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            rt.block_on(async move {
                let control = swarm.behaviour().stream.new_control();
                let mut allowed = HashSet::new();
                let mut answering = Answering::Drop;
                // Sync requests kept unanswered: the asking node waits for its request timeout.
                let mut held_requests = Vec::new();
                loop {
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            None => break,
                            Some(Cmd::Dial(a, p)) => {
                                allowed.insert(p);
                                swarm.behaviour_mut().gate.set_allowed(allowed.clone());
                                let _ = swarm.dial(a);
                            }
                            Some(Cmd::Gossip(b)) => {
                                if let Err(e) = swarm.behaviour_mut().gossipsub.publish(t.clone(), b) {
                                    errs.lock().unwrap().push(e.to_string());
                                }
                            }
                            Some(Cmd::Request(p, r)) => { swarm.behaviour_mut().sync.send_request(&p, r); }
                            Some(Cmd::Answer(a)) => answering = a,
                            Some(Cmd::Stall(p, streams, reply)) => {
                                let c = control.clone();
                                tokio::spawn(async move {
                                    let opened = futures::future::join_all(
                                        streams.into_iter().map(|r| stalled_stream(c.clone(), p, r)),
                                    )
                                    .await;
                                    let held: Vec<libp2p::Stream> = opened.into_iter().flatten().collect();
                                    let _ = reply.send(held.len());
                                    // Held, never read, until the rogue's runtime stops.
                                    futures::future::pending::<()>().await;
                                    drop(held);
                                });
                            }
                            Some(Cmd::Data(p, r, reply)) => {
                                let c = control.clone();
                                tokio::spawn(async move {
                                    let _ = reply.send(data_request(c, p, r).await);
                                });
                            }
                        },
                        ev = swarm.select_next_some() => match ev {
                            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. })) => {
                                sub.lock().unwrap().insert(peer_id);
                            }
                            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                                message: request_response::Message::Request { channel, .. },
                                ..
                            })) => match answering {
                                Answering::Drop => drop(channel),
                                Answering::Hold => held_requests.push(channel),
                                Answering::Refuse => {
                                    let refused = SyncResponse::Refused("the rogue refuses".into());
                                    let _ = swarm.behaviour_mut().sync.send_response(channel, refused);
                                }
                            },
                            _ => {}
                        }
                    }
                }
            });
        });
        Ok(Rogue {
            tx,
            subscribed,
            publish_errors,
        })
    }

    /// Dials `peer` at an address (and lets it through the rogue's own gate).
    pub fn dial(&self, addr: &str, peer: &str) -> anyhow::Result<()> {
        self.tx
            .blocking_send(Cmd::Dial(addr.parse()?, peer.parse()?))?;
        Ok(())
    }

    /// Whether `peer` has subscribed to the federation topic (so gossip reaches it).
    pub fn sees_subscribed(&self, peer: &str) -> bool {
        peer.parse::<PeerId>()
            .map(|p| self.subscribed.lock().unwrap().contains(&p))
            .unwrap_or(false)
    }

    /// Publishes raw gossip bytes.
    pub fn gossip(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.tx.blocking_send(Cmd::Gossip(bytes))?;
        Ok(())
    }

    /// Sends one data-plane request (manifest, chunk, receipt) on a new stream to `peer` and
    /// waits for the answer (at most 60 s).
    pub fn data(&self, peer: &str, r: DataRequest) -> anyhow::Result<(DataResponse, Vec<u8>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx.blocking_send(Cmd::Data(peer.parse()?, r, tx))?;
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("no answer to a data request in 60 s"))?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Opens one stream per element of `streams` to `peer`, sends that element's requests on
    /// it and never reads an answer (a consumer that stops reading). Returns how many streams
    /// were opened with their requests sent.
    pub fn stall(&self, peer: &str, streams: Vec<Vec<DataRequest>>) -> anyhow::Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .blocking_send(Cmd::Stall(peer.parse()?, streams, tx))?;
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("the stalled streams were not opened in 60 s"))
    }

    /// Sends a feed-sync request.
    pub fn request(&self, peer: &str, r: SyncRequest) -> anyhow::Result<()> {
        self.tx.blocking_send(Cmd::Request(peer.parse()?, r))?;
        Ok(())
    }

    /// From now on, answers every sync request it receives as `answering` says.
    pub fn answer_requests(&self, answering: Answering) -> anyhow::Result<()> {
        self.tx.blocking_send(Cmd::Answer(answering))?;
        Ok(())
    }
}

/// Admits a new member (海门区测试局) signed by the testnet's authority on the hub (node 0) and
/// waits until node `watcher` has the new charter; returns its key and USCC.
pub fn admit(net: &mut Testnet, watcher: usize) -> anyhow::Result<(SecretKey, String)> {
    let key = SecretKey::from_bytes(rand::random());
    let uscc = government_uscc(HAIMEN_DIVISION, "77777777");
    let authority = net.dir.join("authority.key");
    let admitted = net.get(0, "/status")?["charter_version"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("the hub shows no charter version"))?
        + 1;
    crate::cli_ok(
        net,
        0,
        &[
            "charter",
            "admit",
            "--uscc",
            &uscc,
            "--name",
            "海门区测试局",
            "--node-key",
            &key.public().to_hex(),
            "--authority-key",
            &authority.to_string_lossy(),
        ],
    )?;
    crate::wait_charter(net, watcher, admitted)?;
    Ok((key, uscc))
}

/// Starts a rogue with `key` and connects it to every node (gossip reaches all of them).
pub fn connect(net: &Testnet, key: &SecretKey) -> anyhow::Result<Rogue> {
    let rogue = Rogue::start(key, "海门区")?;
    for n in &net.nodes {
        rogue.dial(&format!("/ip4/127.0.0.1/tcp/{}", n.port), &n.peer_id)?;
    }
    for n in &net.nodes {
        crate::wait_until(Duration::from_secs(90), "the nodes to subscribe", || {
            Ok(rogue.sees_subscribed(&n.peer_id))
        })?;
    }
    Ok(rogue)
}

/// The manifest of the latest version of `code` on `peer`, asked for without a grant.
pub fn manifest(rogue: &Rogue, peer: &str, code: &ResourceCode) -> anyhow::Result<Manifest> {
    let (m, _) = rogue.data(
        peer,
        DataRequest::Manifest {
            code: code.clone(),
            version: None,
            grant: None,
        },
    )?;
    let DataResponse::Manifest { envelope, .. } = m else {
        anyhow::bail!("no manifest of {code}: {m:?}");
    };
    let env = Envelope::open_limited(&envelope, Kind::Manifest, MAX_MANIFEST_BYTES)?;
    Ok(codec::decode(env.payload(), MAX_MANIFEST_BYTES)?)
}

/// A valid catalogue entry of the rogue member (海门区测试局, `uscc`): code `301001/{n:06}`.
pub fn catalogue_entry(uscc: &str, n: u32, title: &str) -> anyhow::Result<huitong_protocol::Entry> {
    let e = crate::entry_of("海门区测试局", uscc, n, title);
    let raw: huitong_protocol::catalogue::RawEntry = serde_json::from_value(e)?;
    raw.validate().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The entry after `prev` (the first when `None`) in `key`'s feed, stamped `at_ms`, naming
/// charter version `charter`, signed by `key`.
pub fn feed_entry(
    key: &SecretKey,
    prev: Option<&VerifiedEntry>,
    at_ms: u64,
    charter: u64,
    event: Event,
) -> VerifiedEntry {
    FeedEntry {
        version: FEED_ENTRY_VERSION,
        feed: key.public(),
        seq: prev.map_or(1, |p| p.entry.seq + 1),
        prev: prev.map_or(EntryHash::ZERO, |p| p.hash),
        timestamp_ms: at_ms,
        charter,
        event,
        by: None,
    }
    .seal(key)
}

/// A signed entry as a gossip message.
pub fn gossip_entry(v: &VerifiedEntry) -> Vec<u8> {
    codec::encode(&Gossip::Entry(ByteBuf::from(v.envelope.to_bytes())))
}
