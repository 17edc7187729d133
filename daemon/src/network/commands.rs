//! Answers to [`Command`]s. Each handler returns quickly: what needs the network (a dial, a DHT
//! lookup) parks its reply in a pending map for `swarm_events.rs` to complete.

use firma_ipc::IpcError;
use firma_ipc::types::{ConnectOutcome, DiscoveryState};
use libp2p::PeerId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};

use super::behaviour::{self, new_mdns};
use super::event_loop::{EventLoop, MAX_PENDING_FINDS};
use super::handle::{Command, DialTarget, Reply};
use super::swarm_events::dial_error_message;
use super::{ConnectedPeer, NetEvent};
use crate::config::NetworkConfig;

impl EventLoop {
    pub(super) async fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { target, reply } => self.dial(target, reply),
            Command::Disconnect { peer, reply } => {
                let _ = reply.send(self.disconnect(peer));
            }
            Command::SetRedial { peer, redial, reply } => {
                let _ = reply.send(self.set_redial(peer, redial));
            }
            Command::SetBanned { peer, banned, reply } => {
                self.set_banned(peer, banned);
                let _ = reply.send(Ok(()));
            }
            Command::SetMdns { enabled, reply } => {
                let result = self.set_mdns(enabled).await;
                let _ = reply.send(result);
            }
            Command::Bootstrap { reply } => {
                let _ = reply.send(self.bootstrap());
            }
            Command::FindPeer { peer, reply } => self.find_peer(peer, reply),
            Command::Connected { reply } => {
                let _ = reply.send(Ok(self.connected()));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(Ok(self.listen_addrs.iter().map(ToString::to_string).collect()));
            }
            Command::Discovery { reply } => {
                let _ = reply.send(Ok(self.discovery_state()));
            }
            Command::Reload { cfg, reply } => {
                let result = self.reload(*cfg).await;
                let _ = reply.send(result);
            }
            Command::AddAddresses { peer, addrs, reply } => {
                for addr in &addrs {
                    self.learn_address(peer, addr, true);
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn dial(&mut self, target: DialTarget, reply: Reply<ConnectOutcome>) {
        let peer = match &target {
            DialTarget::Peer(peer) => Some(*peer),
            DialTarget::Addr { peer, .. } => *peer,
        };
        if let Some(peer) = peer {
            if self.banned.contains(&peer) {
                let _ = reply.send(Err(IpcError::invalid(format!(
                    "peer {peer} is banned; unban it before dialling"
                ))));
                return;
            }
            if let Some(first) = self.peers.get(&peer).and_then(|p| p.conns.first()) {
                let outcome = ConnectOutcome {
                    peer_id: peer.to_string(),
                    addr: first.addr.to_string(),
                    already_connected: true,
                };
                let _ = reply.send(Ok(outcome));
                return;
            }
        }
        let opts = match target {
            DialTarget::Peer(peer) => DialOpts::peer_id(peer)
                .addresses(self.addresses.get(&peer))
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::Disconnected)
                .build(),
            DialTarget::Addr { addr, peer: Some(peer) } => {
                // Remember it first, so a later redial of this peer knows where to go.
                self.learn_address(peer, &addr, false);
                DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::Disconnected)
                    .build()
            }
            DialTarget::Addr { addr, peer: None } => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let connection_id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(connection_id, reply);
            }
            Err(e) => {
                let message = dial_error_message(&e);
                let error = match e {
                    libp2p::swarm::DialError::NoAddresses => IpcError::not_found(format!(
                        "no known address for peer {}; dial a full multiaddr instead",
                        peer.map(|p| p.to_string()).unwrap_or_default()
                    )),
                    _ => IpcError::unavailable(format!("dial failed: {message}")),
                };
                let _ = reply.send(Err(error));
            }
        }
    }

    fn disconnect(&mut self, peer: PeerId) -> Result<(), IpcError> {
        let was_kept = self.redial.contains(&peer);
        self.redial.forget(&peer);
        if self.swarm.is_connected(&peer) {
            self.closing.insert(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            return Ok(());
        }
        if was_kept {
            return Ok(());
        }
        Err(IpcError::not_found(format!("peer {peer} is not connected")))
    }

    fn set_redial(&mut self, peer: PeerId, redial: bool) -> Result<(), IpcError> {
        if !redial {
            self.redial.unpin(&peer);
            return Ok(());
        }
        if self.banned.contains(&peer) {
            return Err(IpcError::invalid(format!(
                "peer {peer} is banned; unban it before pinning"
            )));
        }
        self.redial.pin(peer);
        if !self.peers.contains_key(&peer) && !self.redial.is_scheduled(&peer) {
            self.dial_to_keep(peer);
        }
        Ok(())
    }

    fn set_banned(&mut self, peer: PeerId, banned: bool) {
        let behaviour = self.swarm.behaviour_mut();
        if banned {
            self.banned.insert(peer);
            self.redial.forget(&peer);
            if self.peers.contains_key(&peer) {
                self.closing.insert(peer);
            }
            // Closes its connections and refuses new ones, both ways.
            behaviour.banned.block_peer(peer);
            tracing::info!(peer_id = %peer, "peer banned");
        } else {
            self.banned.remove(&peer);
            behaviour.banned.unblock_peer(peer);
            tracing::info!(peer_id = %peer, "peer unbanned");
        }
    }

    pub(super) fn discovery_state(&self) -> DiscoveryState {
        let b = self.swarm.behaviour();
        DiscoveryState {
            mdns_enabled: b.mdns.is_enabled(),
            dht_enabled: b.kad.is_enabled(),
        }
    }

    async fn set_mdns(&mut self, enabled: bool) -> Result<DiscoveryState, IpcError> {
        if self.swarm.behaviour().mdns.is_enabled() == enabled {
            return Ok(self.discovery_state());
        }
        let mdns = if enabled {
            let m = new_mdns(self.local_peer_id)
                .map_err(|e| IpcError::unavailable(format!("mDNS could not start: {e}; is multicast available?")))?;
            Some(m)
        } else {
            None
        };
        // A fresh behaviour: mDNS holds no per-connection state, so nothing open is disturbed.
        self.swarm.behaviour_mut().mdns = mdns.into();
        let state = self.discovery_state();
        tracing::info!(enabled, "mDNS switched");
        self.emit(NetEvent::DiscoveryChanged { state }).await;
        Ok(state)
    }

    fn bootstrap(&mut self) -> Result<(), IpcError> {
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return Err(IpcError::unavailable(
                "the DHT is off; set network.dht = true and restart the daemon",
            ));
        };
        kad.bootstrap().map(|_| ()).map_err(|_| {
            IpcError::unavailable("no DHT peer is known yet; add network.bootstrap peers or connect to a peer first")
        })
    }

    fn find_peer(&mut self, peer: PeerId, reply: Reply<Vec<String>>) {
        if self.pending_finds.len() >= MAX_PENDING_FINDS {
            let _ = reply.send(Err(IpcError::unavailable(format!(
                "{MAX_PENDING_FINDS} DHT lookups are already running; try again shortly"
            ))));
            return;
        }
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            let _ = reply.send(Err(IpcError::unavailable(
                "the DHT is off; set network.dht = true and restart",
            )));
            return;
        };
        let id = kad.get_closest_peers(peer);
        self.pending_finds.insert(id, (peer, reply));
    }

    fn connected(&self) -> Vec<ConnectedPeer> {
        let mut list: Vec<ConnectedPeer> = self
            .peers
            .iter()
            .filter_map(|(peer, state)| {
                let first = state.conns.first()?;
                Some(ConnectedPeer {
                    peer_id: peer.to_string(),
                    addr: first.addr.to_string(),
                    direction: first.direction,
                    rtt_us: state.rtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                })
            })
            .collect();
        list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        list
    }

    /// Applies what can change at runtime without dropping a connection; the rest is logged.
    async fn reload(&mut self, cfg: NetworkConfig) -> Result<(), IpcError> {
        let old = std::mem::replace(&mut self.cfg, cfg.clone());
        if old.limits != cfg.limits {
            // Connection limits are read at each new connection; open ones are not re-checked.
            *self.swarm.behaviour_mut().limits.limits_mut() = behaviour::connection_limits(&cfg.limits);
            self.swarm.behaviour_mut().memory = behaviour::memory_limits(&cfg.limits);
            tracing::info!("network.limits reloaded");
        }
        if old.retry != cfg.retry {
            tracing::info!("network.retry reloaded (applies from each peer's next attempt)");
        }
        if old.mdns != cfg.mdns {
            self.set_mdns(cfg.mdns).await?;
        }
        if old.bootstrap != cfg.bootstrap {
            let added = self.add_bootstrap_peers(&cfg.bootstrap);
            tracing::info!(peers = added, "network.bootstrap reloaded");
            if added > 0 {
                self.start_bootstrap();
            }
        }
        for (key, changed) in [
            ("network.listen", old.listen != cfg.listen),
            ("network.dht", old.dht != cfg.dht),
            ("network.idle_timeout", old.idle_timeout != cfg.idle_timeout),
            ("network.ping_interval", old.ping_interval != cfg.ping_interval),
        ] {
            if changed {
                tracing::warn!("{key} changed; it takes effect when the daemon restarts");
            }
        }
        Ok(())
    }
}
