//! A member peer under the test's control: it runs the node's own libp2p behaviour in a
//! background thread and sends whatever bytes the test gives it, so tests can check how a real
//! node treats forged, malformed and oversize messages from a peer that passed the gate.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use huitong_node::link::frame;
use huitong_node::net::{build_swarm, topic, BehaviourEvent};
use huitong_protocol::wire::{
    DataRequest, DataResponse, SyncRequest, DATA_PROTOCOL, MAX_DATA_FRAME,
};
use huitong_protocol::SecretKey;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, Multiaddr, PeerId};
use tokio::sync::mpsc;

/// The answer to one data-stream request: the response frame and, for a chunk, its bytes.
pub type DataAnswer = Result<(DataResponse, Vec<u8>), String>;

enum Cmd {
    Dial(Multiaddr, PeerId),
    Gossip(Vec<u8>),
    Request(PeerId, SyncRequest),
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
                            Some(Cmd::Data(p, r, reply)) => {
                                let c = control.clone();
                                tokio::spawn(async move {
                                    let _ = reply.send(data_request(c, p, r).await);
                                });
                            }
                        },
                        ev = swarm.select_next_some() => {
                            if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. })) = ev {
                                sub.lock().unwrap().insert(peer_id);
                            }
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

    /// Sends a feed-sync request.
    pub fn request(&self, peer: &str, r: SyncRequest) -> anyhow::Result<()> {
        self.tx.blocking_send(Cmd::Request(peer.parse()?, r))?;
        Ok(())
    }
}
