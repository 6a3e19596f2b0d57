//! The event loop that owns the Swarm: gossip in and out, anti-entropy, dialling members,
//! charter gating, and answering [`Command`]s. Gossip it does not judge itself (audit
//! checkpoints and omission reports) goes to the [`AuditGossip`] it was given, and so do the
//! checkpoint notes a peer's summary vouches for, unchecked (the audit watcher checks them on
//! its own task, [`AuditGossip::vouched_by`]).
//!
//! Anti-entropy: on every new connection and every `sync_interval_secs`, the node sends its
//! [`Summary`] to the peer; whoever learns that the other holds more of a feed asks for the
//! missing range. A feed is fetched from one peer at a time: one range request, and after a
//! long answer one more asked for at once ([`PIPELINE_AFTER`]), with at most
//! [`QUEUED_PER_FEED`] answers of the feed waiting for the ingest worker (with the queue full,
//! the next range is asked for as soon as one of them has been ingested). An answer is looked at
//! (without signatures) before it is queued: entries of another feed or seq are refused, and a
//! peer's junk never marks the feed as refused. Every summary also tells a node restored from a backup how far its own feed got
//! ([`Feeds::heard_own_head`]). Range responses are ingested by two threads of their own
//! ([`super::ingest`]: signatures checked, then applied), so verifying and indexing thousands
//! of entries never stalls the swarm (pings, gossip, other requests).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use huitong_protocol::codec::{self, MAX_ENVELOPE_BYTES, MAX_RESPONSE_BYTES};
use huitong_protocol::wire::{
    Gossip, Head, Summary, SyncRequest, SyncResponse, MAX_CHARTERS, MAX_RANGE_ENTRIES,
    MAX_SUMMARY_NOTES,
};
use huitong_protocol::{MemberStatus, NodeId};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{gossipsub, Multiaddr, PeerId, Swarm};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::ingest::{IngestDone, IngestJob};
use super::{gate, peer_id, AuditGossip, Behaviour, BehaviourEvent, Command, PeerInfo, Route};
use crate::feeds::{Feeds, Outcome};
use crate::state::NodeState;

/// Bytes of entries a range response carries at most.
const RANGE_RESPONSE_BYTES: usize = MAX_RESPONSE_BYTES - MAX_ENVELOPE_BYTES - 64 * 1024;

/// Jobs waiting for the ingest worker (range responses and gossiped entries).
const INGEST_QUEUE: usize = 64;
/// A range answer of at least this many entries makes the node ask for the next range at once,
/// before the answer is ingested (a short one means the gap is closed).
const PIPELINE_AFTER: u64 = 256;
/// Range requests in flight plus answers waiting for the ingest worker, per feed, beyond which
/// a long answer does not ask for the next range at once (the next one is asked for when an
/// answer has been ingested): one feed cannot fill the ingest queue. Three keep a long sync
/// busy: one answer applied, the next one's signatures checked, one on the way.
const QUEUED_PER_FEED: u32 = 3;
/// Peers a node sends its summary to on each anti-entropy tick, chosen at random among those
/// connected (all of them when there are no more), besides the hub. Each summary is answered
/// with the peer's, so a pair compares both ways; an entry gossip missed still spreads epidemically (every node
/// that gets it passes it on at its next tick), while the work per tick stays the same at 200
/// members as at 9 instead of growing with the square of the federation.
const SUMMARY_FANOUT: usize = 8;
/// The first anti-entropy tick (which dials the members still missing) comes this soon after
/// start, or after one sync interval if that is shorter.
const FIRST_TICK_AFTER: Duration = Duration::from_secs(3);
/// Gossiped entries of one peer waiting for the ingest worker at once; more are ignored
/// (gossipsub `Ignore`: anti-entropy fetches them later), so one peer cannot fill the queue.
const GOSSIP_QUEUED_PER_PEER: usize = 8;
/// Range requests of one peer being answered (read from the store) at once; more are refused
/// (each answer holds up to ~7.7 MiB). A node asks one peer for at most this many at once.
const ANSWERING_PER_PEER: usize = 8;

/// A digest of the checkpoint notes a summary vouches for that does not depend on their
/// order: the same notes reordered are the same summary (review s7, M2).
fn vouched_digest(notes: &[ByteBuf]) -> blake3::Hash {
    let mut hashes: Vec<[u8; 32]> = notes.iter().map(|n| *blake3::hash(n).as_bytes()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let mut h = blake3::Hasher::new();
    for n in &hashes {
        h.update(n);
    }
    h.finalize()
}

/// Gossipsub peer scores: a peer that forwards invalid messages (forged, malformed, oversize,
/// signed by the wrong key) loses score fast and is graylisted (its gossip ignored) until the penalty
/// decays; mesh-delivery penalties are off (members publish rarely, so an honest quiet peer
/// must not lose score), and so is IP colocation (members are admitted by the charter, and a
/// testnet runs them all on one address).
fn peer_score(topic: &gossipsub::IdentTopic) -> gossipsub::PeerScoreParams {
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // Squared count: two invalid messages put a peer below the gossip threshold (-10: no
        // gossip sent to it), four below publish (-50), five below graylist (-80: its gossip
        // ignored) — a peer must keep sending invalid messages, not slip once.
        invalid_message_deliveries_weight: -4.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(topic.hash(), topic_params);
    params
}

fn peer_score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        ..Default::default()
    }
}

/// A range answer read from the store off the swarm's task, waiting to be sent.
struct Answer {
    peer: PeerId,
    channel: request_response::ResponseChannel<SyncResponse>,
    response: SyncResponse,
}

/// The event loop.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    state: Arc<NodeState>,
    audit: Arc<dyn AuditGossip>,
    commands: mpsc::Receiver<Command>,
    topic: gossipsub::IdentTopic,
    members: HashMap<PeerId, NodeId>,
    /// Range requests in flight: the feed, the peer asked and the first seq asked for.
    ranges: HashMap<OutboundRequestId, (NodeId, PeerId, u64)>,
    /// Peers with range requests held back (at most [`ANSWERING_PER_PEER`] in flight to one
    /// peer): a summary is sent to them when one of their ranges is done.
    deferred: HashSet<PeerId>,
    /// Per feed, range requests in flight plus range answers waiting for the ingest worker
    /// (a feed is fetched by one peer at a time; see [`PIPELINE_AFTER`]).
    inflight: HashMap<NodeId, u32>,
    /// Per feed, the next range (peer and first seq) after a long answer that came while
    /// [`QUEUED_PER_FEED`] were already queued: asked for as soon as one of them has been
    /// ingested, so a long sync never drains its pipeline every few ranges.
    held_back: HashMap<NodeId, (PeerId, u64)>,
    bootstrap: Vec<Multiaddr>,
    interval: Duration,
    ingest: mpsc::Sender<IngestJob>,
    ingested: mpsc::Receiver<IngestDone>,
    /// Gossiped entries per peer waiting for the ingest worker.
    gossip_queued: HashMap<PeerId, usize>,
    /// Range answers per peer being read from the store.
    answering: HashMap<PeerId, usize>,
    answers: mpsc::Sender<Answer>,
    answered: mpsc::Receiver<Answer>,
    /// Sync requests per peer.
    limiter: super::rate::Limiter,
    /// Open connections per peer: whether each goes through a relay, and the peer's IP address
    /// on a direct one.
    connections: HashMap<PeerId, HashMap<ConnectionId, (bool, Option<std::net::IpAddr>)>>,
    /// `connect` callers waiting for a dial.
    pending: HashMap<PeerId, Vec<oneshot::Sender<Result<Route, String>>>>,
    /// Relay reservations (circuit listeners) by hub.
    circuits: HashMap<ListenerId, PeerId>,
    /// The feeds, for work a new charter causes (the ingest worker holds its own handle).
    feeds: Arc<Feeds>,
    /// Feeds whose entry after the head (held at the first number) was refused under the
    /// charter version (the second): not fetched again until one of them changes.
    refused: HashMap<NodeId, (u64, u64)>,
    /// Per connected peer, a digest of the checkpoint notes its last summary vouched for that
    /// all reached the audit watcher (not handed over again until they change; in any order,
    /// [`vouched_digest`]).
    vouched_seen: HashMap<PeerId, blake3::Hash>,
}

impl EventLoop {
    /// Creates the loop; call [`EventLoop::run`] to drive it. `audit` judges the checkpoint
    /// and omission gossip.
    pub fn new(
        mut swarm: Swarm<Behaviour>,
        feeds: Arc<Feeds>,
        audit: Arc<dyn AuditGossip>,
        commands: mpsc::Receiver<Command>,
        bootstrap: Vec<Multiaddr>,
    ) -> Self {
        let state = feeds.state().clone();
        let topic = super::topic(&state.config.federation.name);
        let interval = Duration::from_secs(state.config.network.sync_interval_secs);
        let (ingest, jobs) = mpsc::channel(INGEST_QUEUE);
        let (done, ingested) = mpsc::channel(INGEST_QUEUE);
        if let Err(e) = swarm
            .behaviour_mut()
            .gossipsub
            .with_peer_score(peer_score(&topic), peer_score_thresholds())
        {
            warn!(error = %e, "gossipsub peer scoring not enabled");
        }
        let (answers, answered) = mpsc::channel(INGEST_QUEUE);
        if let Err(e) = super::ingest::spawn(feeds.clone(), jobs, done) {
            // `run` sees the closed channel and stops the node with an error.
            warn!(error = %e, "cannot start the ingest worker");
        }
        let mut this = Self {
            swarm,
            state,
            audit,
            commands,
            topic,
            members: HashMap::new(),
            ranges: HashMap::new(),
            deferred: HashSet::new(),
            inflight: HashMap::new(),
            held_back: HashMap::new(),
            bootstrap,
            interval,
            feeds,
            refused: HashMap::new(),
            vouched_seen: HashMap::new(),
            ingest,
            ingested,
            gossip_queued: HashMap::new(),
            answering: HashMap::new(),
            answers,
            answered,
            limiter: super::rate::Limiter::default(),
            connections: HashMap::new(),
            pending: HashMap::new(),
            circuits: HashMap::new(),
        };
        if let Err(e) = this.swarm.behaviour_mut().gossipsub.subscribe(&this.topic) {
            warn!(error = %e, "cannot subscribe to the federation topic");
        }
        this.refresh_members();
        this
    }

    /// Runs until `shutdown` is cancelled. Cancel-safe: stopping drops in-flight requests,
    /// which anti-entropy repeats after the next start.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), super::NetError> {
        for addr in std::mem::take(&mut self.bootstrap) {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap address");
            }
        }
        self.dial_members(false);
        // The first tick soon after start: this node has dialled its share of the members; the
        // tick dials the rest that have not dialled it meanwhile (a restarted node's peers
        // with lower ids dial it only at their own tick).
        let first = self.interval.min(FIRST_TICK_AFTER);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.anti_entropy_tick(),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                done = self.ingested.recv() => match done {
                    Some(d) => self.on_ingested(d),
                    None => return Err(super::NetError::WorkerStopped("ingest worker")),
                },
                Some(a) = self.answered.recv() => self.on_answered(a),
            }
        }
        info!("network stopped");
        Ok(())
    }

    /// The peers this node talks to: the charter's *active* members. A suspended or removed
    /// member is disconnected and refused at the gate (issue #10, point 2); its earlier entries
    /// stay and reach everyone through the other members. A read-only member may stay connected
    /// (and dial in) to read, but is not dialled and its feed entries are refused.
    fn refresh_members(&mut self) {
        let me = self.state.id();
        let (members, readers) = self.state.with_charter(|c| {
            let mut members = HashMap::new();
            let mut readers = HashSet::new();
            for m in c
                .iter()
                .flat_map(|c| &c.members)
                .filter(|m| m.node_key != me)
            {
                let Some(p) = peer_id(&m.node_key) else {
                    continue;
                };
                match m.status {
                    MemberStatus::Active => {
                        members.insert(p, m.node_key);
                    }
                    MemberStatus::ReadOnly => {
                        readers.insert(p);
                    }
                    MemberStatus::Suspended => {}
                }
            }
            (members, readers)
        });
        self.members = members;
        let allowed: HashSet<PeerId> = self.members.keys().copied().chain(readers).collect();
        self.swarm.behaviour_mut().gate.set_allowed(allowed.clone());
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in connected {
            if !allowed.contains(&p) {
                warn!(target: "huitong::audit", peer = %p, "disconnecting peer no longer a member of the charter that may connect");
                let _ = self.swarm.disconnect_peer_id(p);
            }
        }
    }

    /// Every sync interval: dial the members still missing, and send the summary to
    /// [`SUMMARY_FANOUT`] random connected peers and to the hub — it holds every entry that got
    /// out (restore catch-up relies on that), as it did when every peer was summarised.
    fn anti_entropy_tick(&mut self) {
        self.dial_members(true);
        let hub = self
            .state
            .hub_key()
            .and_then(|k| peer_id(&k))
            .filter(|h| self.swarm.is_connected(h));
        let others: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .copied()
            .filter(|p| Some(*p) != hub)
            .collect();
        let mut targets = summary_targets(others, &mut rand::rng());
        targets.extend(hub);
        for p in targets {
            self.send_summary(p);
        }
    }

    /// Dials the active members this node is not connected to, one address at a time in the
    /// charter's order (QUIC first, TCP only if it fails: dialling both at once made two
    /// connections per pair). With `all` false, only members whose peer id sorts after this
    /// node's are dialled (and the hub), unless this node publishes no address (then nobody can
    /// dial it): when a federation starts, each pair then makes one connection instead of two
    /// crossing ones. The first tick, [`FIRST_TICK_AFTER`] later, dials everyone still missing.
    fn dial_members(&mut self, all: bool) {
        let me = self.state.id();
        let local = *self.swarm.local_peer_id();
        // (peer, its addresses, whether it is the hub); whether this node publishes addresses.
        type Target = (PeerId, Vec<Multiaddr>, bool);
        let (targets, reachable): (Vec<Target>, bool) = self.state.with_charter(|c| {
            let Some(c) = c else {
                return (Vec::new(), false);
            };
            let reachable = c
                .members
                .iter()
                .any(|m| m.node_key == me && !m.addresses.is_empty());
            let targets = c
                .members
                .iter()
                .filter(|m| m.node_key != me && m.status == MemberStatus::Active)
                .filter_map(|m| {
                    let p = peer_id(&m.node_key)?;
                    let addrs = m.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                    Some((p, addrs, m.role == huitong_protocol::Role::Hub))
                })
                .collect();
            (targets, reachable)
        });
        for (peer, addrs, is_hub) in targets {
            if self.swarm.is_connected(&peer) || addrs.is_empty() {
                continue;
            }
            if !all && reachable && peer < local && !is_hub {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "dial failed");
            }
        }
    }

    fn summary(&self) -> Summary {
        let heads = self
            .state
            .store
            .heads()
            .unwrap_or_default()
            .into_iter()
            .map(|(feed, h)| Head { feed, seq: h.seq })
            .collect();
        Summary {
            charter_version: self.state.charter_version(),
            heads,
            audit: self
                .audit
                .vouched()
                .into_iter()
                .map(ByteBuf::from)
                .collect(),
        }
    }

    /// A peer's summary: fetch what it holds and this node lacks, and check the checkpoint
    /// notes it vouches for.
    fn on_summary(&mut self, peer: PeerId, theirs: &Summary) {
        self.pull_missing(peer, theirs);
        self.check_vouched(peer, &theirs.audit);
    }

    /// Hands the checkpoint notes a peer vouches for to the audit watcher, unchecked (the
    /// watcher verifies them off this task), unless they are the same notes, in any order, as
    /// the last ones from that peer that all reached it.
    fn check_vouched(&mut self, peer: PeerId, notes: &[ByteBuf]) {
        let notes = &notes[..notes.len().min(MAX_SUMMARY_NOTES)];
        if notes.is_empty() {
            return;
        }
        let digest = vouched_digest(notes);
        if self.vouched_seen.get(&peer) == Some(&digest) {
            return;
        }
        let Some(from) = super::node_id(&peer) else {
            debug!(%peer, "summary notes from a peer without an Ed25519 key ignored");
            return;
        };
        if self
            .audit
            .vouched_by(from, notes.iter().map(|n| n.to_vec()).collect())
        {
            self.vouched_seen.insert(peer, digest);
        }
    }

    fn send_summary(&mut self, peer: PeerId) {
        let s = self.summary();
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest::Summary(s));
    }

    /// Asks `peer` for whatever its summary shows that this node lacks.
    fn pull_missing(&mut self, peer: PeerId, theirs: &Summary) {
        let (latest, first) = self.state.with_history(|h| (h.version(), h.first()));
        if theirs.charter_version > latest {
            self.request_charters(peer, latest + 1);
        } else if first > 1 && theirs.charter_version >= first {
            // Started from a later version: fill in the earlier ones, which old entries name.
            let from = self.earlier_charters_from();
            self.request_charters(peer, from);
        }
        // A node restored from a backup learns how far its own feed got from its peers.
        if let Some(from) = self.members.get(&peer).copied() {
            let me = self.state.id();
            let seq = theirs
                .heads
                .iter()
                .find(|h| h.feed == me)
                .map_or(0, |h| h.seq);
            self.feeds.heard_own_head(from, seq);
        }
        // Feeds of keys some charter version lists as a member (an old key's feed stays part
        // of the history); a peer may advertise any key (issue #10, point 2). A suspended,
        // read-only member's feed is fetched too: its entries up to the closure stand.
        let members: HashSet<NodeId> = self.state.with_history(|h| {
            theirs
                .heads
                .iter()
                .map(|head| head.feed)
                .filter(|k| h.ever_member(k))
                .collect()
        });
        let me_feed = self.state.id();
        let mut seen = HashSet::new();
        for h in theirs
            .heads
            .iter()
            .filter(|h| members.contains(&h.feed) && seen.insert(h.feed))
        {
            let have = self.state.store.head(&h.feed).map(|h| h.seq).unwrap_or(0);
            let version = self.state.charter_version();
            if self.refused.get(&h.feed) == Some(&(have, version)) {
                continue;
            }
            if h.feed == me_feed && self.own_claim_ignored(peer) {
                // A peer that did not serve what it claimed of this node's feed is not asked
                // for it again while catching up: it cannot keep the feed's one request busy.
                continue;
            }
            if h.seq > have {
                self.request_range(peer, h.feed, have + 1);
            }
        }
    }

    fn request_range(&mut self, peer: PeerId, feed: NodeId, from: u64) {
        if self.inflight.contains_key(&feed) {
            return;
        }
        self.send_range(peer, feed, from);
    }

    /// Asks `peer` for `feed` from `from` (the feed counts as in flight until the answer has
    /// been ingested).
    fn send_range(&mut self, peer: PeerId, feed: NodeId, from: u64) {
        if self.ranges.values().filter(|(_, p, _)| *p == peer).count() >= ANSWERING_PER_PEER {
            // The peer answers at most that many at once: ask again when one is done.
            self.deferred.insert(peer);
            return;
        }
        *self.inflight.entry(feed).or_default() += 1;
        let id = self.swarm.behaviour_mut().sync.send_request(
            &peer,
            SyncRequest::Range {
                feed,
                from,
                limit: MAX_RANGE_ENTRIES,
            },
        );
        self.ranges.insert(id, (feed, peer, from));
    }

    /// One range request or ingest of `feed` is over; returns whether none is left.
    fn inflight_done(&mut self, feed: &NodeId) -> bool {
        match self.inflight.get_mut(feed) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.inflight.remove(feed);
                true
            }
        }
    }

    /// One range request to `peer` is done: if others were held back, ask for its summary
    /// again (its answer requests what is still missing).
    fn range_done(&mut self, peer: PeerId) {
        if self.deferred.remove(&peer) {
            self.send_summary(peer);
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Gossip(g) => {
                let bytes = codec::encode(&g);
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes)
                {
                    // Anti-entropy delivers it anyway.
                    debug!(error = %e, "gossip publish failed");
                }
            }
            Command::CharterChanged => {
                self.on_new_charter();
                if let Ok(Some(bytes)) = self.state.charter_envelope() {
                    self.on_command(Command::Gossip(Gossip::Charter(ByteBuf::from(bytes))));
                }
            }
            Command::Peers(reply) => {
                let peers = self.peers();
                let _ = reply.send(peers);
            }
            Command::Listeners(reply) => {
                let l = self.swarm.listeners().map(|a| a.to_string()).collect();
                let _ = reply.send(l);
            }
            Command::Connect(peer, reply) => self.connect(peer, reply),
            Command::DirectIp(peer, reply) => {
                let ip = self.connections.get(&peer).and_then(|c| {
                    c.values()
                        .find_map(|(relayed, ip)| if *relayed { None } else { *ip })
                });
                let _ = reply.send(ip);
            }
            Command::HasDirectIp(ip, reply) => {
                let found = self
                    .connections
                    .values()
                    .flat_map(|c| c.values())
                    .any(|(relayed, at)| !relayed && *at == Some(ip));
                let _ = reply.send(found);
            }
        }
    }

    /// How `peer` is reached now, if connected.
    fn route(&self, peer: &PeerId) -> Option<Route> {
        let conns = self.connections.get(peer).filter(|c| !c.is_empty())?;
        Some(if conns.values().any(|(relayed, _)| !relayed) {
            Route::Direct
        } else {
            Route::Relayed
        })
    }

    /// Charter addresses of members, optionally only hubs.
    fn member_addrs(&self, only_hubs: bool) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let me = self.state.id();
        self.state.with_charter(|c| {
            let Some(c) = c else { return Vec::new() };
            c.members
                .iter()
                .filter(|m| m.node_key != me)
                .filter(|m| !only_hubs || m.role == huitong_protocol::Role::Hub)
                .filter_map(|m| {
                    let p = peer_id(&m.node_key)?;
                    Some((
                        p,
                        m.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    ))
                })
                .collect()
        })
    }

    fn connect(&mut self, peer: PeerId, reply: oneshot::Sender<Result<Route, String>>) {
        if let Some(route) = self.route(&peer) {
            let _ = reply.send(Ok(route));
            return;
        }
        if !self.members.contains_key(&peer) {
            let _ = reply.send(Err(format!("{peer} is not a member of the federation")));
            return;
        }
        let mut addrs: Vec<Multiaddr> = self
            .member_addrs(false)
            .into_iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, a)| a)
            .unwrap_or_default();
        for (hub, hub_addrs) in self.member_addrs(true) {
            if hub == peer {
                continue;
            }
            for a in hub_addrs {
                addrs.push(
                    a.with(Protocol::P2p(hub))
                        .with(Protocol::P2pCircuit)
                        .with(Protocol::P2p(peer)),
                );
            }
        }
        if addrs.is_empty() {
            let _ = reply.send(Err(format!(
                "no address is known for {peer} and there is no hub to relay through; check the charter's addresses"
            )));
            return;
        }
        // Direct addresses come first; one at a time, so the relay is used only as a fallback.
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "dial not started (perhaps already dialling)");
        }
        self.pending.entry(peer).or_default().push(reply);
    }

    /// Reserves a relay slot on `peer` if it is a hub (and this node is not the relay itself).
    fn reserve_on_if_hub(&mut self, peer: PeerId) {
        if self.swarm.behaviour().relay.is_enabled() || self.circuits.values().any(|h| *h == peer) {
            return;
        }
        let Some((_, addrs)) = self
            .member_addrs(true)
            .into_iter()
            .find(|(p, _)| *p == peer)
        else {
            return;
        };
        if let Some(a) = addrs.into_iter().next() {
            let circuit = a.with(Protocol::P2p(peer)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    debug!(%circuit, "reserving a relay slot on the hub");
                    self.circuits.insert(id, peer);
                }
                Err(e) => debug!(%circuit, error = %e, "cannot listen through the hub"),
            }
        }
    }

    fn answer_pending(&mut self, peer: &PeerId, result: Result<Route, String>) {
        for reply in self.pending.remove(peer).unwrap_or_default() {
            let _ = reply.send(result.clone());
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        self.swarm
            .connected_peers()
            .map(|p| {
                let member = self.members.get(p).and_then(|k| {
                    self.state
                        .with_charter(|c| c.and_then(|c| c.member(k).cloned()))
                });
                PeerInfo {
                    peer_id: p.to_string(),
                    name: member.as_ref().map(|m| m.name.clone()),
                    uscc: member.as_ref().map(|m| m.uscc.to_string()),
                    role: member.as_ref().map(|m| m.role.as_str().to_owned()),
                }
            })
            .collect()
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                // A relay tells its clients where to reach it: the hub's own (non-circuit)
                // listening addresses are the ones members dial.
                if self.swarm.behaviour().relay.is_enabled()
                    && !address.iter().any(|p| p == Protocol::P2pCircuit)
                {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), relayed, "connected");
                let ip = endpoint.get_remote_address().iter().find_map(|p| match p {
                    Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                    Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                    _ => None,
                });
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, (relayed, ip));
                if let Some(route) = self.route(&peer_id) {
                    self.answer_pending(&peer_id, Ok(route));
                }
                if num_established.get() == 1 {
                    self.send_summary(peer_id);
                }
                if !relayed {
                    self.reserve_on_if_hub(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.vouched_seen.remove(&peer_id);
                    debug!(peer = %peer_id, "disconnected");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if self.route(&peer).is_none() => {
                self.answer_pending(
                    &peer,
                    Err(format!(
                        "cannot reach the provider directly or through the hub: {error}"
                    )),
                );
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                if let Some(hub) = self.circuits.remove(&listener_id) {
                    debug!(%hub, "relay reservation closed; renewed on the next connection");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gate(gate::Refused { peer, .. })) => {
                self.state.refused_peer(peer.to_string());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync(e),
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let acceptance = match codec::decode::<Gossip>(&message.data, MAX_ENVELOPE_BYTES + 4096) {
            Err(e) => {
                let label = match e {
                    codec::DecodeError::TooLarge { .. } => "oversize",
                    _ => "malformed",
                };
                warn!(target: "huitong::audit", peer = %source, reason = label, error = %e, "refused gossip message");
                self.state.reject(label);
                Reject
            }
            Ok(Gossip::Entry(bytes)) => {
                // Judged by the ingest worker; validation is reported when it is done.
                let queued = self.gossip_queued.entry(source).or_default();
                if *queued >= GOSSIP_QUEUED_PER_PEER {
                    debug!(peer = %source, "gossip from this peer is queued already; anti-entropy fetches the rest");
                    Ignore
                } else {
                    let job = IngestJob::Gossip {
                        source,
                        id: id.clone(),
                        bytes: bytes.into_vec(),
                    };
                    match self.ingest.try_send(job) {
                        Ok(()) => {
                            *queued += 1;
                            return;
                        }
                        Err(e) => {
                            debug!(error = %e, "ingest queue full; anti-entropy fetches the entry");
                            Ignore
                        }
                    }
                }
            }
            Ok(Gossip::Charter(bytes)) => self.on_charter(source, &bytes, Accept, Ignore),
            Ok(Gossip::Checkpoint(note)) => self
                .audit
                .checkpoint(super::node_id(&source), note.into_vec()),
            Ok(Gossip::Omission(entry)) => self.audit.omission(&source, &entry),
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }

    /// Offers a charter from `peer`; a version that does not follow the ones held makes this
    /// node ask `peer` for the versions in between.
    fn on_charter<T>(&mut self, peer: PeerId, bytes: &[u8], accepted: T, other: T) -> T {
        use crate::charter::{Accepted, OfferError};
        match self.state.offer_charter(bytes) {
            Ok(Accepted::Latest(_)) => {
                self.on_new_charter();
                accepted
            }
            Ok(Accepted::Earlier(_)) | Err(OfferError::Held(_)) => other,
            Err(OfferError::Gap {
                offered, latest, ..
            }) => {
                let from = if offered > latest {
                    latest + 1
                } else {
                    self.earlier_charters_from()
                };
                self.request_charters(peer, from);
                other
            }
            Err(OfferError::Equivocation(_)) => other,
            Err(e) => {
                warn!(target: "huitong::audit", %peer, error = %e, "refused charter");
                self.state.reject("charter");
                other
            }
        }
    }

    /// A new latest charter: re-gate and dial the members, and drop (off this task) entries
    /// this node took past a feed closure.
    fn on_new_charter(&mut self) {
        self.refresh_members();
        self.dial_members(true);
        // Any closure held, not only this version's: versions may arrive together.
        if !self.state.with_history(|h| h.closures().next().is_some()) {
            return;
        }
        let feeds = self.feeds.clone();
        tokio::task::spawn_blocking(move || match feeds.enforce_closures() {
            Ok(0) => {}
            Ok(n) => info!(
                dropped = n,
                "entries past a feed closure dropped; views rebuilt"
            ),
            Err(e) => error!(error = %e, "cannot drop the entries past a feed closure"),
        });
    }

    /// Offers charters received together, in whatever order lets each follow the versions held
    /// (newer ones oldest first, earlier ones newest first).
    fn on_charters(&mut self, peer: PeerId, envelopes: Vec<ByteBuf>) {
        let mut left: Vec<ByteBuf> = envelopes.into_iter().take(MAX_CHARTERS).collect();
        while !left.is_empty() {
            let before = left.len();
            let mut rest = Vec::new();
            for bytes in left {
                use crate::charter::{Accepted, OfferError};
                match self.state.offer_charter(&bytes) {
                    Ok(Accepted::Latest(_)) => self.on_new_charter(),
                    Ok(Accepted::Earlier(_)) | Err(OfferError::Held(_)) => {}
                    Err(OfferError::Gap { .. }) => rest.push(bytes),
                    Err(OfferError::Equivocation(_)) => {}
                    Err(e) => {
                        warn!(target: "huitong::audit", %peer, error = %e, "refused charter");
                        self.state.reject("charter");
                    }
                }
            }
            if rest.len() == before {
                break;
            }
            left = rest;
        }
    }

    /// Where to start asking for the versions before the earliest held.
    fn earlier_charters_from(&self) -> u64 {
        let first = self.state.with_history(|h| h.first());
        first.saturating_sub(MAX_CHARTERS as u64).max(1)
    }

    fn request_charters(&mut self, peer: PeerId, from: u64) {
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest::Charters { from });
    }

    fn on_sync(&mut self, e: request_response::Event<SyncRequest, SyncResponse>) {
        use request_response::{Event, Message};
        match e {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if let Err(wait) = self.limiter.check(peer) {
                    self.state.reject("sync_rate");
                    debug!(%peer, ?wait, "sync request over the peer's rate");
                    let _ = self.swarm.behaviour_mut().sync.send_response(
                        channel,
                        SyncResponse::Refused(format!(
                            "too many sync requests from this peer; retry in {} ms",
                            wait.as_millis()
                        )),
                    );
                    return;
                }
                if let Some(response) = self.answer(peer, request, channel) {
                    let (channel, response) = response;
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_response(peer, request_id, response),
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "sync request failed");
                if let Some((feed, peer, from)) = self.ranges.remove(&request_id) {
                    self.inflight_done(&feed);
                    self.held_back.remove(&feed);
                    self.own_range_failed(peer, feed, from);
                    self.range_done(peer);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound sync failure");
            }
            _ => {}
        }
    }

    /// `peer`, asked for `feed` from seq `from`, answered with no entries or with something
    /// other than those entries: if it is this node's own feed, what the peer claimed of it
    /// from `from` on is not backed (a restored node stops waiting for it). An answer that
    /// brought entries already held (gossip was faster) proves nothing.
    fn own_range_unbacked(&self, peer: PeerId, feed: NodeId, from: u64) {
        if feed != self.state.id() {
            return;
        }
        if let Some(member) = self.members.get(&peer) {
            self.feeds.own_range_unbacked(*member, from);
        }
    }

    /// A range request of `feed` from `from` to `peer` failed or was not answered with entries:
    /// counted against the peer's claims if it is this node's own feed.
    fn own_range_failed(&self, peer: PeerId, feed: NodeId, from: u64) {
        if feed != self.state.id() {
            return;
        }
        if let Some(member) = self.members.get(&peer) {
            self.feeds.own_range_failed(*member, from);
        }
    }

    /// Whether `peer`'s claims on this node's own feed are ignored while it catches up.
    fn own_claim_ignored(&self, peer: PeerId) -> bool {
        self.members
            .get(&peer)
            .is_some_and(|m| self.feeds.own_claim_ignored(m))
    }

    fn on_ingested(&mut self, done: IngestDone) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        match done {
            IngestDone::Range {
                peer,
                feed,
                from,
                stored,
                refused,
                mismatch,
            } => {
                let idle = self.inflight_done(&feed);
                let held_back = self.held_back.remove(&feed);
                if mismatch {
                    self.own_range_unbacked(peer, feed, from);
                }
                if refused {
                    // The entry after the head is refused until the charter changes: do not
                    // fetch (and verify) it again from every peer that advertises it.
                    let have = self.state.store.head(&feed).map(|h| h.seq).unwrap_or(0);
                    self.refused
                        .insert(feed, (have, self.state.charter_version()));
                }
                if let (Some((next_peer, next)), true) = (held_back, !refused && !mismatch) {
                    // A later answer of the feed was long: ask for the range after it now
                    // that a place in the queue is free (also after an answer gossip had
                    // already brought: nothing stored, nothing wrong).
                    self.send_range(next_peer, feed, next);
                } else if stored > 0 && idle {
                    // The peer may hold more than one response carries: ask until nothing
                    // is new (unless the next range was asked for already).
                    let have = self.state.store.head(&feed).map(|h| h.seq).unwrap_or(0);
                    if let Some(next) = have.checked_add(1) {
                        self.request_range(peer, feed, next);
                    }
                }
                self.range_done(peer);
            }
            IngestDone::Gossip {
                source,
                id,
                outcome,
            } => {
                if let Some(n) = self.gossip_queued.get_mut(&source) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.gossip_queued.remove(&source);
                    }
                }
                let acceptance = match outcome {
                    Ok(Outcome::Stored) => Accept,
                    Ok(Outcome::Duplicate) => Ignore,
                    Ok(Outcome::Gap { feed, have }) => {
                        if let Some(next) = have.checked_add(1) {
                            self.request_range(source, feed, next);
                        }
                        Ignore
                    }
                    // Penalise the forwarder only for what is invalid whatever this node
                    // holds; forks and refusals that depend on this node's charter or chain
                    // (honest peers may see them differently for a while) are ignored.
                    Ok(Outcome::Rejected(
                        "bad_signature" | "wrong_signer" | "malformed" | "oversize",
                    )) => Reject,
                    Ok(Outcome::Fork) | Ok(Outcome::Rejected(_)) => Ignore,
                    Err(e) => {
                        warn!(error = %e, "store error while ingesting gossip");
                        Ignore
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
        }
    }

    fn on_answered(&mut self, a: Answer) {
        if let Some(n) = self.answering.get_mut(&a.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.answering.remove(&a.peer);
            }
        }
        // The peer may have gone: nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(a.channel, a.response);
    }

    /// The response to a sync request, or `None` when it is being read from the store off this
    /// task (range answers: sent by [`Self::on_answered`]).
    fn answer(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: request_response::ResponseChannel<SyncResponse>,
    ) -> Option<(
        request_response::ResponseChannel<SyncResponse>,
        SyncResponse,
    )> {
        let response = match request {
            SyncRequest::Summary(theirs) => {
                self.on_summary(peer, &theirs);
                SyncResponse::Summary(self.summary())
            }
            SyncRequest::Range { feed, from, limit } => {
                let answering = self.answering.entry(peer).or_default();
                if *answering >= ANSWERING_PER_PEER {
                    self.state.reject("sync_busy");
                    SyncResponse::Refused(format!(
                        "{ANSWERING_PER_PEER} range requests of this peer are being answered; ask again when they are"
                    ))
                } else {
                    *answering += 1;
                    let limit = limit.min(MAX_RANGE_ENTRIES);
                    let (state, answers) = (self.state.clone(), self.answers.clone());
                    tokio::task::spawn_blocking(move || {
                        let response =
                            match state.store.range(&feed, from, limit, RANGE_RESPONSE_BYTES) {
                                Ok(v) => SyncResponse::Entries(
                                    v.into_iter().map(ByteBuf::from).collect(),
                                ),
                                Err(e) => SyncResponse::Refused(e.to_string()),
                            };
                        // The loop is gone only when the node is stopping.
                        let _ = answers.blocking_send(Answer {
                            peer,
                            channel,
                            response,
                        });
                    });
                    return None;
                }
            }
            SyncRequest::Charters { from } => SyncResponse::Charters(
                self.state
                    .store
                    .charters_from(from.max(1), MAX_CHARTERS)
                    .unwrap_or_default()
                    .into_iter()
                    .map(ByteBuf::from)
                    .collect(),
            ),
        };
        Some((channel, response))
    }

    fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: SyncResponse) {
        // Whatever the answer, a range request is over: a peer that answers a range with
        // something else must not leave the feed marked in flight (never asked for again).
        let range = self.ranges.remove(&id).map(|(feed, _, from)| (feed, from));
        if let Some((feed, from)) = range {
            if !matches!(response, SyncResponse::Entries(_)) {
                self.inflight_done(&feed);
                self.held_back.remove(&feed);
                // Not the entries asked for (a refusal, another kind of answer): a failed
                // request, so a peer answering so for ever cannot hold a catch-up open.
                self.own_range_failed(peer, feed, from);
                self.range_done(peer);
            }
        }
        match response {
            SyncResponse::Summary(theirs) => self.on_summary(peer, &theirs),
            SyncResponse::Entries(entries) => {
                let Some((feed, from)) = range else {
                    return;
                };
                if entries.is_empty() || !answers(&entries, &feed, from) {
                    if !entries.is_empty() {
                        warn!(target: "huitong::audit", %peer, %feed, from, "a range answer does not hold the entries asked for; it is dropped");
                        self.state.reject("range_mismatch");
                    }
                    self.inflight_done(&feed);
                    self.held_back.remove(&feed);
                    self.own_range_unbacked(peer, feed, from);
                    self.range_done(peer);
                    return;
                }
                if feed == self.state.id() {
                    if let Some(member) = self.members.get(&peer) {
                        self.feeds.own_range_served(member);
                    }
                }
                let n = entries.len() as u64;
                // `feed` stays in `inflight` until the worker is done with it.
                let job = IngestJob::Range {
                    peer,
                    feed,
                    from,
                    entries: entries.into_iter().map(ByteBuf::into_vec).collect(),
                };
                match self.ingest.try_send(job) {
                    Ok(()) => {
                        // The answer's ingest takes over from the request.
                        let queued = self.inflight.get(&feed).copied().unwrap_or(0);
                        if let (true, Some(next)) = (n >= PIPELINE_AFTER, from.checked_add(n)) {
                            // A long answer: the peer likely holds more. Ask for the next
                            // range now, so fetching it overlaps ingesting this one (answers
                            // arrive, and are ingested, in order: this one is queued first);
                            // with the queue full, as soon as an answer has been ingested.
                            if queued < QUEUED_PER_FEED {
                                self.send_range(peer, feed, next);
                            } else {
                                self.held_back.insert(feed, (peer, next));
                            }
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "ingest queue full; the next anti-entropy round retries");
                        self.inflight_done(&feed);
                        self.held_back.remove(&feed);
                        self.range_done(peer);
                    }
                }
            }
            SyncResponse::Charters(envelopes) => self.on_charters(peer, envelopes),
            SyncResponse::Refused(reason) => {
                debug!(%peer, %reason, "peer refused a sync request");
            }
        }
    }
}

/// Whether a range answer of `feed` from seq `from` looks like what was asked, by its first and
/// last entries (read without signatures; the ingest worker checks every entry in full).
fn answers(entries: &[ByteBuf], feed: &NodeId, from: u64) -> bool {
    use huitong_protocol::feed::Position;
    let at = |i: usize| entries.get(i).and_then(|b| Position::peek(b).ok());
    let last = entries.len().saturating_sub(1);
    let expected = |seq: Option<u64>| seq.map(|seq| Position { feed: *feed, seq });
    at(0) == expected(Some(from)) && at(last) == expected(from.checked_add(last as u64))
}

/// The peers of one anti-entropy tick: [`SUMMARY_FANOUT`] of `connected` at random.
fn summary_targets(connected: Vec<PeerId>, rng: &mut impl rand::Rng) -> Vec<PeerId> {
    use rand::seq::IndexedRandom;
    if connected.len() <= SUMMARY_FANOUT {
        return connected;
    }
    connected
        .choose_multiple(rng, SUMMARY_FANOUT)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tick_summarises_to_a_bounded_random_set_of_peers() {
        let few: Vec<PeerId> = (0..SUMMARY_FANOUT).map(|_| PeerId::random()).collect();
        assert_eq!(summary_targets(few.clone(), &mut rand::rng()), few);
        let many: Vec<PeerId> = (0..199).map(|_| PeerId::random()).collect();
        let mut reached = HashSet::new();
        for _ in 0..200 {
            let t = summary_targets(many.clone(), &mut rand::rng());
            assert_eq!(t.len(), SUMMARY_FANOUT);
            assert_eq!(
                t.iter().collect::<HashSet<_>>().len(),
                SUMMARY_FANOUT,
                "no peer twice"
            );
            assert!(t.iter().all(|p| many.contains(p)));
            reached.extend(t);
        }
        // 200 ticks of 8 out of 199: a given peer is left out of all of them with probability
        // (1 − 8/199)^200 ≈ 3e-4 (0.05 peers on average), so nine or more left out means the
        // choice is not uniform.
        assert!(reached.len() > 190, "only {} peers reached", reached.len());
    }

    /// Review s7, M2: reordering the notes of a summary made it new, so the same notes were
    /// handed to the watcher (and checked) again.
    #[test]
    fn the_vouched_digest_ignores_the_order() {
        let notes: Vec<ByteBuf> = (0..9u8).map(|i| ByteBuf::from(vec![i; 40])).collect();
        let mut reordered = notes.clone();
        reordered.reverse();
        assert_eq!(vouched_digest(&notes), vouched_digest(&reordered));
        assert_ne!(vouched_digest(&notes), vouched_digest(&notes[1..]));
    }
}
