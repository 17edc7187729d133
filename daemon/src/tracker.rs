//! The tracker turns the network's domain events into the three things that follow from them:
//! store writes (batched by the writer), numbered events for clients, and the live view.
//! RTT is rate-limited here so that a chatty ping neither floods clients nor the disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firma_ipc::event::Event;
use firma_ipc::types::DiscoveryState;
use tokio::sync::mpsc;

use crate::core::{Core, Counters, LiveConn, now_ms};
use crate::network::NetEvent;
use crate::store::StoreOp;

/// Last RTT reported per peer, so only meaningful changes go out.
struct RttGate {
    interval: Duration,
    last: HashMap<String, (Instant, u64)>,
}

impl RttGate {
    fn admit(&mut self, peer: &str, rtt_us: u64, now: Instant) -> bool {
        match self.last.get(peer) {
            Some((at, prev)) => {
                let moved = rtt_us.abs_diff(*prev) * 10 > *prev;
                if now.duration_since(*at) >= self.interval && moved {
                    self.last.insert(peer.to_owned(), (now, rtt_us));
                    true
                } else {
                    false
                }
            }
            None => {
                self.last.insert(peer.to_owned(), (now, rtt_us));
                true
            }
        }
    }
}

/// Runs until the network's event channel closes (the network task ended).
pub async fn run(core: Arc<Core>, mut events: mpsc::Receiver<NetEvent>, rtt_interval: Duration) {
    let mut gate = RttGate {
        interval: rtt_interval,
        last: HashMap::new(),
    };
    while let Some(ev) = events.recv().await {
        let at = now_ms();
        let (ops, event) = translate(&core, ev, at, &mut gate);
        for op in ops {
            if let Err(e) = core.writer.send(op).await {
                Counters::inc(&core.counters.store_errors);
                tracing::warn!(error = %e, "could not queue a store write");
            }
        }
        if let Some(event) = event {
            core.events.append(event, at);
        }
    }
}

fn translate(core: &Core, ev: NetEvent, at: u64, gate: &mut RttGate) -> (Vec<StoreOp>, Option<Event>) {
    match ev {
        NetEvent::Discovered { peer_id, addrs, source } => {
            let op = StoreOp::PeerSeen {
                peer_id: peer_id.clone(),
                addrs: addrs.iter().map(|a| (a.clone(), source)).collect(),
                at_ms: at,
            };
            (vec![op], Some(Event::PeerDiscovered { peer_id, addrs, source }))
        }
        NetEvent::Connected {
            peer_id,
            addr,
            direction,
        } => {
            Counters::inc(&core.counters.connections_opened);
            core.live().connected.insert(
                peer_id.clone(),
                LiveConn {
                    addr: addr.clone(),
                    direction,
                    rtt_us: None,
                },
            );
            // PeerConnected records an outbound address as dialable; an inbound one is the peer's
            // ephemeral port and is deliberately not kept as an address.
            let ops = vec![StoreOp::PeerConnected {
                peer_id: peer_id.clone(),
                addr: addr.clone(),
                direction,
                at_ms: at,
            }];
            (
                ops,
                Some(Event::PeerConnected {
                    peer_id,
                    addr,
                    direction,
                }),
            )
        }
        NetEvent::Disconnected { peer_id, reason } => {
            Counters::inc(&core.counters.connections_closed);
            core.live().connected.remove(&peer_id);
            gate.last.remove(&peer_id);
            let op = StoreOp::PeerDisconnected {
                peer_id: peer_id.clone(),
                reason: reason.clone(),
                at_ms: at,
            };
            (vec![op], Some(Event::PeerDisconnected { peer_id, reason }))
        }
        NetEvent::Identified {
            peer_id,
            agent,
            protocols,
            listen_addrs,
        } => {
            let op = StoreOp::PeerIdentified {
                peer_id: peer_id.clone(),
                agent: agent.clone(),
                protocols: protocols.clone(),
                listen_addrs,
                at_ms: at,
            };
            (
                vec![op],
                Some(Event::PeerIdentified {
                    peer_id,
                    agent,
                    protocols,
                }),
            )
        }
        NetEvent::Rtt { peer_id, rtt_us } => {
            if let Some(conn) = core.live().connected.get_mut(&peer_id) {
                conn.rtt_us = Some(rtt_us);
            }
            if gate.admit(&peer_id, rtt_us, Instant::now()) {
                (
                    vec![StoreOp::PeerRtt {
                        peer_id: peer_id.clone(),
                        rtt_us,
                    }],
                    Some(Event::PeerRtt { peer_id, rtt_us }),
                )
            } else {
                (Vec::new(), None)
            }
        }
        NetEvent::ListenAddrAdded { addr } => {
            let mut live = core.live();
            if !live.listen_addrs.contains(&addr) {
                live.listen_addrs.push(addr.clone());
            }
            (Vec::new(), Some(Event::ListenAddrAdded { addr }))
        }
        NetEvent::ListenAddrRemoved { addr } => {
            core.live().listen_addrs.retain(|a| *a != addr);
            (Vec::new(), Some(Event::ListenAddrRemoved { addr }))
        }
        NetEvent::DiscoveryChanged { state } => {
            core.live().discovery = Some(state);
            (Vec::new(), Some(Event::DiscoveryChanged { state }))
        }
        NetEvent::DialFailed { peer_id, error } => {
            Counters::inc(&core.counters.dial_failures);
            tracing::debug!(peer = peer_id.as_deref().unwrap_or("?"), %error, "dial failed");
            (Vec::new(), None)
        }
    }
}

/// The discovery state to report before the network said anything.
pub fn initial_discovery(mdns: bool, dht: bool) -> DiscoveryState {
    DiscoveryState {
        mdns_enabled: mdns,
        dht_enabled: dht,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_gate_reports_first_then_only_big_moves_after_the_interval() {
        let mut g = RttGate {
            interval: Duration::from_secs(5),
            last: HashMap::new(),
        };
        let t0 = Instant::now();
        assert!(g.admit("p", 1000, t0));
        assert!(!g.admit("p", 5000, t0 + Duration::from_secs(1)), "inside the interval");
        assert!(!g.admit("p", 1050, t0 + Duration::from_secs(6)), "a 5 % move is noise");
        assert!(g.admit("p", 1500, t0 + Duration::from_secs(6)));
    }
}
