//! Peer-to-peer networking: one event loop owns the libp2p `Swarm`; the rest of the node holds
//! a cloneable [`Client`] and sends [`Command`]s with a oneshot reply.
//!
//! Transports: QUIC (quinn) first, TCP + noise + yamux as fallback, and circuit relay v2 through
//! the hub. Behaviours: the charter [`gate`], identify, ping, gossipsub (one topic per
//! federation), request-response for feed sync (anti-entropy, see `huitong_protocol::wire`),
//! the relay client (every node) and server (the hub only), and `libp2p-stream` for bulk data
//! (see [`crate::transfer`]).
//!
//! Relay: every node that is not the hub reserves a slot on the hub once connected, so a member
//! that publishes no reachable address can still be dialled as
//! `<hub>/p2p/<hub id>/p2p-circuit/p2p/<member id>`. [`Client::connect`] tries the member's own
//! addresses first, one at a time, then those circuit addresses.
//!
//! Layering: above the feeds (it ingests entries), the charter and the state; below everything
//! that uses the network (data streams, the agent, the audit services, the admin API). Gossip
//! about the audit is judged through [`AuditGossip`], which the daemon wires in, so the network
//! never names the audit.

mod event_loop;
pub mod gate;
mod ingest;
mod rate;
pub mod sync_codec;

use std::time::Duration;

use huitong_protocol::codec::MAX_ENVELOPE_BYTES;
use huitong_protocol::wire::Gossip;
use huitong_protocol::{NodeId, SecretKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, gossipsub, identify, identity, ping, relay, request_response, PeerId, Swarm,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use event_loop::EventLoop;

/// Judges the gossip the event loop carries but does not own: audit checkpoint notes and
/// omission reports. Called inline on the event loop, as entry gossip is ingested.
pub trait AuditGossip: Send + Sync {
    /// A gossiped checkpoint note, forwarded by `from` (its node key, if it has one): accept it
    /// (to pass on), ignore or reject it.
    fn checkpoint(&self, from: Option<NodeId>, note: Vec<u8>) -> gossipsub::MessageAcceptance;
    /// The checkpoint notes `peer` vouches for in its summary, handed over unchecked (checked
    /// off the swarm's task). Whether all of them were taken (or handled recently): if not,
    /// the same notes are handed over again with the peer's next summary.
    fn vouched_by(&self, peer: NodeId, notes: Vec<Vec<u8>>) -> bool;
    /// The checkpoint notes this node vouches for, sent in its summary (at most
    /// [`huitong_protocol::wire::MAX_SUMMARY_NOTES`]).
    fn vouched(&self) -> Vec<Vec<u8>>;
    /// An omission report (a signed feed entry said to be missing from the log) from `source`.
    fn omission(&self, source: &PeerId, entry: &[u8]) -> gossipsub::MessageAcceptance;
}

/// Capacity of the command channel.
const COMMAND_QUEUE: usize = 256;

/// All behaviours of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Charter gating.
    pub gate: gate::Behaviour,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
    /// Gossip of feed entries and charters.
    pub gossipsub: gossipsub::Behaviour,
    /// Feed sync.
    pub sync: request_response::Behaviour<sync_codec::Codec>,
    /// Circuit relay client.
    pub relay_client: relay::client::Behaviour,
    /// Circuit relay server (the hub only).
    pub relay: Toggle<relay::Behaviour>,
    /// Bulk data streams.
    pub stream: libp2p_stream::Behaviour,
    /// Connection limits (pending and established, per peer and in all).
    pub limits: connection_limits::Behaviour,
}

/// Established connections a node keeps: members are few (a district has tens of
/// departments). Pending (handshaking) connections are not capped: they come before the charter
/// gate can tell a member from anyone, so a cap would let anyone lock members out; the
/// transport's 10 s handshake timeout bounds them.
fn connection_limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_established_incoming(Some(512))
        .with_max_established_per_peer(Some(8))
}

/// Relay limits of the hub: data pulls through the relay last as long as they need.
fn relay_config() -> relay::Config {
    relay::Config {
        max_circuits: 64,
        max_circuits_per_peer: 16,
        max_circuit_duration: Duration::from_secs(24 * 3600),
        max_circuit_bytes: u64::MAX,
        ..relay::Config::default()
    }
}

/// How a peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A direct connection.
    Direct,
    /// Through the hub's circuit relay.
    Relayed,
    /// This node itself.
    Local,
}

impl Route {
    /// `direct`, `relayed` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Relayed => "relayed",
            Route::Local => "local",
        }
    }
}

/// A network setup error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Building the swarm failed.
    #[error("network setup: {0}")]
    Setup(String),
    /// A configured address is not a multiaddress.
    #[error("{key}: {addr:?} is not a valid multiaddress: {reason}")]
    Address {
        /// Config key.
        key: &'static str,
        /// The value.
        addr: String,
        /// Parser message.
        reason: String,
    },
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}; is another process using the port?")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A worker the network depends on stopped (it panicked): the node must stop.
    #[error("the network's {0} stopped unexpectedly; see the log above for why")]
    WorkerStopped(&'static str),
}

/// The libp2p key pair of a node key (same ed25519 key).
pub fn keypair(key: &SecretKey) -> identity::Keypair {
    let mut bytes = key.to_bytes();
    match identity::Keypair::ed25519_from_bytes(&mut bytes) {
        Ok(k) => k,
        // Any 32 bytes are a valid ed25519 secret key.
        Err(_) => unreachable!("32 bytes are always a valid ed25519 secret"),
    }
}

/// How libp2p writes an Ed25519 public key before its 32 bytes (protobuf field 1, `Type`, = 1
/// for Ed25519; field 2, `Data`, 32 bytes long). Such a key is short enough to be its own
/// PeerId: the identity multihash (code 0, length 36) of these 36 bytes.
const ED25519_KEY_HEADER: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// The identity multihash's code and the length of an encoded Ed25519 key, as they start a
/// PeerId's bytes.
const IDENTITY_36: [u8; 2] = [0x00, 36];

/// The PeerId of a node key; `None` for bytes that are not an Ed25519 point.
///
/// Built from the bytes as libp2p builds it (checked against libp2p's own derivation in the
/// tests below), not through libp2p's key type, which decompressed the point every time: the
/// point check is [`NodeId::from_bytes`], a map lookup for the keys that verified a signature
/// here (members' keys), a decompression only for others.
pub fn peer_id(node: &NodeId) -> Option<PeerId> {
    NodeId::from_bytes(node.0).ok()?;
    let mut bytes = [0u8; 2 + 4 + 32];
    bytes[..2].copy_from_slice(&IDENTITY_36);
    bytes[2..6].copy_from_slice(&ED25519_KEY_HEADER);
    bytes[6..].copy_from_slice(&node.0);
    PeerId::from_bytes(&bytes).ok()
}

/// The node key of a PeerId (the inverse of [`peer_id`]); `None` for one that is not an
/// inlined Ed25519 key.
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    NodeId::from_bytes(ed25519_key_bytes(peer)?).ok()
}

/// The 32 key bytes an inlined Ed25519 PeerId carries, not checked to be a point: enough to
/// compare with a charter's member keys, since a connected peer's PeerId comes from a key its
/// handshake parsed and checked (no square root per request, as comparing PeerIds built from
/// every member's key took).
pub fn ed25519_key_bytes(peer: &PeerId) -> Option<[u8; 32]> {
    const IDENTITY: u64 = 0;
    let hash = peer.as_ref();
    if hash.code() != IDENTITY {
        return None;
    }
    hash.digest()
        .strip_prefix(&ED25519_KEY_HEADER[..])?
        .try_into()
        .ok()
}

/// The gossip topic of a federation.
pub fn topic(federation: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("huitong/{federation}/1"))
}

/// How long a QUIC handshake may take before the dial moves on to the member's TCP address
/// (no more than QUIC's idle timeout and the swarm's 10 s connection timeout allow).
const QUIC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each connection is pinged (libp2p's default is 15 s). QUIC keeps its
/// connections alive by itself; a ping per connection and side every 15 s was a large share of
/// an idle node's work with 200 members.
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// How often an idle QUIC connection sends a keep-alive (libp2p's default is 5 s). Each one is
/// a packet out and an acknowledgement back, woken, decrypted and timed on both sides: with 200
/// members that was most of an idle node's work. 15 s still refreshes a NAT's UDP mapping
/// (commonly 30 s or more) in time.
const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a QUIC connection may hear nothing before it is closed (libp2p's default is 10 s;
/// it must exceed [`QUIC_KEEP_ALIVE`] with room for a lost keep-alive). A peer that vanished
/// without closing is noticed this late; one that restarted, at the next packet sent to it
/// (libp2p derives QUIC's stateless-reset key from the node key, so the new process's reset
/// closes the old connection).
const QUIC_IDLE_TIMEOUT_MS: u32 = 40_000;

/// Builds the swarm for a node key; `on_reject` hears of every refused inbound sync request;
/// `relay_server` makes this node a circuit relay (the hub).
pub fn build_swarm(
    key: &SecretKey,
    idle: Duration,
    on_reject: Option<sync_codec::RejectHook>,
    relay_server: bool,
) -> Result<Swarm<Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(key))
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic_config(|mut c| {
            // On a loaded machine (a 200-node testnet on 2 cores) libp2p's 5 s was too short:
            // the dial fell back to TCP for most pairs.
            c.handshake_timeout = QUIC_HANDSHAKE_TIMEOUT;
            c.keep_alive_interval = QUIC_KEEP_ALIVE;
            c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            c
        })
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|k, relay_client| {
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(MAX_ENVELOPE_BYTES + 4096)
                .heartbeat_interval(Duration::from_millis(700))
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(k.clone()),
                gossip_config,
            )?;
            Ok(Behaviour {
                gate: gate::Behaviour::default(),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/huitong/1".into(),
                    k.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
                gossipsub,
                sync: request_response::Behaviour::with_codec(
                    sync_codec::Codec::new(on_reject),
                    [(
                        sync_codec::PROTOCOL,
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30))
                        .with_max_concurrent_streams(64),
                ),
                relay_client,
                relay: Toggle::from(relay_server.then(|| {
                    let mut r = relay::Behaviour::new(k.public().to_peer_id(), relay_config());
                    // Members reach the hub at its charter addresses: advertise the relay
                    // without waiting to learn an "external" address.
                    r.set_status(Some(relay::Status::Enable));
                    r
                })),
                stream: libp2p_stream::Behaviour::new(),
                limits: connection_limits::Behaviour::new(connection_limits()),
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// A connected peer, for `huitong peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    /// PeerId.
    pub peer_id: String,
    /// Member name from the charter.
    pub name: Option<String>,
    /// Member USCC.
    pub uscc: Option<String>,
    /// Member role.
    pub role: Option<String>,
}

/// Requests to the event loop.
#[derive(Debug)]
pub enum Command {
    /// Gossip a message to the federation.
    Gossip(Gossip),
    /// A new charter was stored: re-gate peers and gossip it.
    CharterChanged,
    /// List connected peers.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// The addresses the swarm listens on.
    Listeners(oneshot::Sender<Vec<String>>),
    /// Make sure there is a connection to a member (direct first, else through the hub).
    Connect(PeerId, oneshot::Sender<Result<Route, String>>),
    /// The IP address of a direct connection to a peer, if there is one.
    DirectIp(PeerId, oneshot::Sender<Option<std::net::IpAddr>>),
    /// Whether some peer is connected directly from this IP address.
    HasDirectIp(std::net::IpAddr, oneshot::Sender<bool>),
}

/// A cloneable handle to the event loop.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
}

impl Client {
    /// A handle and the receiving end for the event loop.
    pub fn channel() -> (Client, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (Client { tx }, rx)
    }

    /// Sends a command without waiting for a reply; returns false once the loop has stopped.
    pub async fn send(&self, c: Command) -> bool {
        self.tx.send(c).await.is_ok()
    }

    /// Gossips one of this node's own feed entries (anti-entropy carries it too, later).
    pub async fn publish(&self, entry: &huitong_protocol::feed::VerifiedEntry) -> bool {
        let msg = huitong_protocol::wire::Gossip::Entry(serde_bytes::ByteBuf::from(
            entry.envelope.to_bytes(),
        ));
        self.send(Command::Gossip(msg)).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Peers(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Connects to a member if not connected; says how it is reached.
    pub async fn connect(&self, peer: PeerId) -> Result<Route, String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Connect(peer, tx)).await {
            return Err("the node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the node is shutting down".into()))
    }

    /// Listening addresses.
    pub async fn listeners(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Listeners(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The IP address of a direct connection to `peer`; `None` when there is none (not
    /// connected, only relayed, or the node is stopping).
    pub async fn direct_ip(&self, peer: PeerId) -> Option<std::net::IpAddr> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::DirectIp(peer, tx)).await {
            return None;
        }
        rx.await.ok().flatten()
    }

    /// Whether a peer (only members pass the gate) holds a direct connection from `ip`.
    pub async fn has_direct_ip(&self, ip: std::net::IpAddr) -> bool {
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::HasDirectIp(ip, tx)).await {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_peer_ids_are_the_same_key() {
        let key = SecretKey::from_bytes([7; 32]).public();
        let peer = peer_id(&key).expect("an Ed25519 key");
        assert_eq!(node_id(&peer), Some(key));
        assert_eq!(node_id(&PeerId::random()), None);
    }

    #[test]
    fn peer_ids_are_built_as_libp2p_builds_them() {
        for seed in 0..32u8 {
            let secret = SecretKey::from_bytes([seed; 32]);
            let theirs = keypair(&secret).public().to_peer_id();
            assert_eq!(peer_id(&secret.public()), Some(theirs));
            assert_eq!(node_id(&theirs), Some(secret.public()));
            assert_eq!(ed25519_key_bytes(&theirs), Some(secret.public().0));
        }
        // The same 32 bytes under another key type's header (2, secp256k1) are no node key.
        let mut bytes = [0u8; 38];
        bytes[..6].copy_from_slice(&[0x00, 36, 0x08, 0x02, 0x12, 0x20]);
        bytes[6..].copy_from_slice(&SecretKey::from_bytes([1; 32]).public().0);
        let other = PeerId::from_bytes(&bytes).expect("an identity multihash");
        assert_eq!(ed25519_key_bytes(&other), None);
        assert_eq!(node_id(&other), None);
        // 32 bytes that are not a point have no PeerId.
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|b| NodeId::from_bytes(*b).is_err())
            .expect("some constant bytes are not a point");
        assert_eq!(peer_id(&NodeId(not_a_point)), None);
    }
}
