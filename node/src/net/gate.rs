//! Connection gating by charter: a peer whose key is not in the current charter is refused
//! when its connection is established, and the refusal is logged with its PeerId.
//!
//! The allowed set is replaced by the event loop whenever a new charter is accepted; connected
//! peers that drop out of the charter are disconnected there.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tracing::warn;

/// A peer was refused.
#[derive(Debug)]
pub struct Refused {
    /// The refused peer.
    pub peer: PeerId,
    /// Its address.
    pub addr: Multiaddr,
}

/// The error handed to the swarm for a refused connection.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not a member of the federation charter")]
pub struct NotAMember(PeerId);

/// The gate behaviour.
#[derive(Default)]
pub struct Behaviour {
    allowed: HashSet<PeerId>,
    events: VecDeque<Refused>,
}

impl Behaviour {
    /// Replaces the set of allowed peers.
    pub fn set_allowed(&mut self, allowed: HashSet<PeerId>) {
        self.allowed = allowed;
    }

    /// Whether a peer is allowed.
    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        self.allowed.contains(peer)
    }

    fn check(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        if self.allowed.contains(&peer) {
            return Ok(dummy::ConnectionHandler);
        }
        warn!(target: "huitong::audit", %peer, %addr, "refused connection: peer key is not in the charter");
        if self.events.len() < 1024 {
            self.events.push_back(Refused {
                peer,
                addr: addr.clone(),
            });
        }
        Err(ConnectionDenied::new(NotAMember(peer)))
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Refused;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, remote_addr)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, addr)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(e)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ToSwarm::GenerateEvent(e)),
            None => Poll::Pending,
        }
    }
}
