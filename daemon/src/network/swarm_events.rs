//! Translation of swarm events into [`NetEvent`]s and bookkeeping (connections, addresses,
//! redials, pending replies). Every libp2p type ends here; only strings go out.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use firma_ipc::IpcError;
use firma_ipc::types::{AddrSource, ConnectOutcome, Direction};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, kad, mdns, ping};
use tokio::time::Instant;

use super::NetEvent;
use super::address_book::{with_p2p, without_p2p};
use super::behaviour::{BehaviourEvent, KAD_PROTOCOL};
use super::event_loop::{Conn, EventLoop, ListenerState, PeerConns, STABLE_CONNECTION};

/// Limits on what a peer's identify message may put into our events and address book.
const MAX_AGENT_CHARS: usize = 256;
const MAX_PROTOCOLS: usize = 64;
/// Addresses taken from one identify message or one discovery report.
const MAX_PEER_ADDRS: usize = 16;

impl EventLoop {
    pub(super) async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.on_established(peer_id, connection_id, &endpoint, num_established.get())
                    .await;
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let reason = cause.map(|c| c.to_string());
                self.on_closed(peer_id, connection_id, num_established, reason).await;
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.on_dial_error(connection_id, peer_id, &error).await;
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                peer_id,
                ..
            } => {
                tracing::debug!(from = %send_back_addr, peer_id = ?peer_id, "inbound connection refused or failed: {error}");
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                let full = with_p2p(&address, self.local_peer_id);
                tracing::info!(addr = %full, "listening");
                self.listeners.insert(listener_id, ListenerState::Bound);
                if !self.listen_addrs.contains(&full) {
                    self.listen_addrs.push(full.clone());
                }
                self.emit(NetEvent::ListenAddrAdded { addr: full.to_string() }).await;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.remove_listen_addr(&address).await,
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                let why = match &reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(listener = ?listener_id, "listener closed: {why}");
                self.listeners.insert(listener_id, ListenerState::Failed(why));
                for address in addresses {
                    self.remove_listen_addr(&address).await;
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(listener = ?listener_id, "listener error: {error}");
                if let Some(state) = self.listeners.get_mut(&listener_id)
                    && matches!(state, ListenerState::Pending)
                {
                    *state = ListenerState::Failed(error.to_string());
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
    }

    async fn remove_listen_addr(&mut self, address: &Multiaddr) {
        let full = with_p2p(address, self.local_peer_id);
        let before = self.listen_addrs.len();
        self.listen_addrs.retain(|a| *a != full);
        if self.listen_addrs.len() != before {
            tracing::info!(addr = %full, "no longer listening");
            self.emit(NetEvent::ListenAddrRemoved { addr: full.to_string() }).await;
        }
    }

    async fn on_established(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: u32,
    ) {
        // Addresses leave this module without /p2p: the peer id travels next to them.
        let addr = without_p2p(endpoint.get_remote_address());
        let direction = if endpoint.is_dialer() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        if let Some(reply) = self.pending_dials.remove(&connection_id) {
            let outcome = ConnectOutcome {
                peer_id: peer.to_string(),
                addr: addr.to_string(),
                already_connected: false,
            };
            let _ = reply.send(Ok(outcome));
        }
        let entry = match self.peers.entry(peer) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(PeerConns {
                conns: Vec::new(),
                rtt: None,
                since: Instant::now(),
                prior_attempts: self.redial.connected(&peer),
                dialled: false,
            }),
        };
        entry.conns.push(Conn {
            id: connection_id,
            addr: addr.clone(),
            direction,
        });
        entry.dialled |= direction == Direction::Outbound;
        if endpoint.is_dialer() {
            // An address we reached is worth remembering; an inbound one is usually an ephemeral port.
            self.learn_address(peer, &addr, false);
        }
        if num_established == 1 {
            tracing::info!(peer_id = %peer, %addr, ?direction, "peer connected");
            self.emit(NetEvent::Connected {
                peer_id: peer.to_string(),
                addr: addr.to_string(),
                direction,
            })
            .await;
        }
    }

    async fn on_closed(&mut self, peer: PeerId, connection_id: ConnectionId, remaining: u32, reason: Option<String>) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.conns.retain(|c| c.id != connection_id);
        }
        if remaining > 0 {
            return;
        }
        let on_purpose = self.closing.remove(&peer);
        let Some(session) = self.peers.remove(&peer) else {
            return;
        };
        tracing::info!(peer_id = %peer, reason = reason.as_deref().unwrap_or("closed"), "peer disconnected");
        if self.is_stopping() {
            return;
        }
        // A peer we dialled (or pinned) is worth keeping, unless we closed it ourselves or banned it.
        if !on_purpose && !self.banned.contains(&peer) && (session.dialled || self.redial.is_pinned(&peer)) {
            if session.since.elapsed() < STABLE_CONNECTION {
                self.redial.restore_attempts(peer, session.prior_attempts);
            }
            self.schedule_redial(peer);
        }
        self.emit(NetEvent::Disconnected {
            peer_id: peer.to_string(),
            reason,
        })
        .await;
    }

    async fn on_dial_error(&mut self, connection_id: ConnectionId, peer: Option<PeerId>, error: &DialError) {
        let message = dial_error_message(error);
        tracing::debug!(peer_id = ?peer, "dial failed: {message}");
        if let Some(reply) = self.pending_dials.remove(&connection_id) {
            let _ = reply.send(Err(IpcError::unavailable(format!("dial failed: {message}"))));
        }
        if let Some(peer) = peer
            && self.redial.contains(&peer)
            && !self.peers.contains_key(&peer)
        {
            self.schedule_redial(peer);
        }
        self.emit(NetEvent::DialFailed {
            peer_id: peer.map(|p| p.to_string()),
            error: message,
        })
        .await;
    }

    async fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info).await;
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => {
                    if let Some(entry) = self.peers.get_mut(&peer) {
                        entry.rtt = Some(rtt);
                    }
                    let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                    self.emit(NetEvent::Rtt {
                        peer_id: peer.to_string(),
                        rtt_us,
                    })
                    .await;
                }
                Err(e) => tracing::debug!(peer_id = %peer, "ping failed: {e}"),
            },
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addrs) in group_by_peer(list) {
                    self.on_discovered(peer, addrs, AddrSource::Mdns).await;
                    // Like upstream Firma-Sign: a peer found on the local network is connected at
                    // once, and kept (redialled with the retry strategy) while mDNS still sees it:
                    // a first dial can lose a race with the other side's interface coming up.
                    self.dial_to_keep(peer);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(list)) => {
                // Gone from the local network: stop redialling it unless an operator pinned it.
                for (peer, _) in list {
                    if !self.redial.is_pinned(&peer) && !self.swarm.is_connected(&peer) {
                        self.redial.forget(&peer);
                    }
                }
            }
            BehaviourEvent::Kad(event) => self.on_kad_event(event).await,
            // libp2p-stream reports nothing: its streams go straight to the transfer engine.
            BehaviourEvent::Stream(()) => {}
            BehaviourEvent::Banned(never) | BehaviourEvent::Limits(never) | BehaviourEvent::Memory(never) => {
                match never {}
            }
        }
    }

    async fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
        let listen_addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(MAX_PEER_ADDRS).collect();
        for addr in &listen_addrs {
            // Only DHT servers belong in the routing table.
            self.learn_address(peer, addr, speaks_kad);
        }
        let agent: String = info.agent_version.chars().take(MAX_AGENT_CHARS).collect();
        let protocols = info
            .protocols
            .iter()
            .take(MAX_PROTOCOLS)
            .map(ToString::to_string)
            .collect();
        tracing::debug!(peer_id = %peer, %agent, "peer identified");
        self.emit(NetEvent::Identified {
            peer_id: peer.to_string(),
            agent,
            protocols,
            listen_addrs: listen_addrs.iter().map(|a| without_p2p(a).to_string()).collect(),
        })
        .await;
    }

    async fn on_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, source: AddrSource) {
        if peer == self.local_peer_id || self.banned.contains(&peer) {
            return;
        }
        let addrs: Vec<Multiaddr> = addrs.into_iter().take(MAX_PEER_ADDRS).collect();
        for addr in &addrs {
            self.learn_address(peer, addr, false);
        }
        let addrs = addrs.iter().map(|a| without_p2p(a).to_string()).collect();
        self.emit(NetEvent::Discovered {
            peer_id: peer.to_string(),
            addrs,
            source,
        })
        .await;
    }

    async fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            } => {
                self.on_discovered(peer, addresses.into_vec(), AddrSource::Dht).await;
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::GetClosestPeers(result) => {
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    self.on_closest_peers(id, peers, step.last).await;
                }
                kad::QueryResult::Bootstrap(Ok(_)) if step.last => {
                    tracing::info!("DHT bootstrap finished")
                }
                kad::QueryResult::Bootstrap(Err(e)) => tracing::warn!("DHT bootstrap failed: {e}"),
                _ => {}
            },
            _ => {}
        }
    }

    /// Completes a `find_peer` with the addresses found for its target (and those we knew).
    async fn on_closest_peers(&mut self, id: kad::QueryId, peers: Vec<kad::PeerInfo>, last: bool) {
        let Some((target, _)) = self.pending_finds.get(&id) else {
            return;
        };
        let target = *target;
        let found: Vec<Multiaddr> = peers
            .into_iter()
            .filter(|p| p.peer_id == target)
            .flat_map(|p| p.addrs)
            .collect();
        if !found.is_empty() {
            self.on_discovered(target, found, AddrSource::Dht).await;
        }
        if !last {
            return;
        }
        let Some((_, reply)) = self.pending_finds.remove(&id) else {
            return;
        };
        let mut known: Vec<String> = self.addresses.get(&target).iter().map(ToString::to_string).collect();
        if let Some(conns) = self.peers.get(&target) {
            for c in &conns.conns {
                let a = c.addr.to_string();
                if !known.contains(&a) {
                    known.push(a);
                }
            }
        }
        let answer = if known.is_empty() {
            Err(IpcError::not_found(format!("peer {target} was not found in the DHT")))
        } else {
            Ok(known)
        };
        let _ = reply.send(answer);
    }
}

fn group_by_peer(list: Vec<(PeerId, Multiaddr)>) -> HashMap<PeerId, Vec<Multiaddr>> {
    let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    for (peer, addr) in list {
        by_peer.entry(peer).or_default().push(addr);
    }
    by_peer
}

/// A dial error as one readable line, with the per-address reasons when there were several.
pub(super) fn dial_error_message(error: &DialError) -> String {
    match error {
        DialError::Transport(errors) => {
            let parts: Vec<String> = errors
                .iter()
                .map(|(addr, e)| format!("{addr}: {}", error_chain(e)))
                .collect();
            format!("no address could be reached ({})", parts.join("; "))
        }
        DialError::NoAddresses => "no known address for the peer; give a multiaddr or add addresses first".to_owned(),
        DialError::Denied { cause } => format!("refused by local policy ({cause})"),
        other => error_chain(other),
    }
}

/// An error with its sources, so "connection refused" is not hidden behind "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}
