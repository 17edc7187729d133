//! Addresses we know for each peer, so that a peer id alone can be dialled.
//!
//! The swarm keeps no address book of its own (`Swarm::add_peer_address` only tells the
//! behaviours), and with the DHT off nothing else would remember where a seed, a pinned peer or an
//! mDNS neighbour can be reached. Bounded per peer and in total, because peers feed it.

use std::collections::{HashMap, VecDeque};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Addresses kept per peer; the newest win (a peer that moved is reached at its new address).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers remembered. Past this, a peer that is not in `keep` is forgotten to make room.
const MAX_PEERS: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct AddressBook {
    peers: HashMap<PeerId, VecDeque<Multiaddr>>,
}

impl AddressBook {
    /// Remembers `addr` (without any `/p2p` suffix) for `peer`. Returns true when it was new.
    /// `keep` says which peers must not be evicted to make room (pinned, connected).
    pub(crate) fn add(&mut self, peer: PeerId, addr: &Multiaddr, keep: impl Fn(&PeerId) -> bool) -> bool {
        let addr = without_p2p(addr);
        if addr.is_empty() {
            return false;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            let victim = self.peers.keys().find(|p| !keep(p)).copied();
            match victim {
                Some(v) => {
                    self.peers.remove(&v);
                }
                None => return false,
            }
        }
        let list = self.peers.entry(peer).or_default();
        if let Some(pos) = list.iter().position(|a| *a == addr) {
            // Seen again: move it to the front so it is tried first and evicted last.
            if let Some(a) = list.remove(pos) {
                list.push_front(a);
            }
            return false;
        }
        list.push_front(addr);
        list.truncate(MAX_ADDRS_PER_PEER);
        true
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The address without a trailing `/p2p/<id>`: that is how libp2p wants dial addresses.
pub(crate) fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// The peer id at the end of an address, if it has one.
pub(crate) fn p2p_suffix(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// `addr` with `/p2p/<peer>` appended (once).
pub(crate) fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    without_p2p(addr).with(Protocol::P2p(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_addresses_and_strips_p2p() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        for port in 1..=10u16 {
            let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(book.add(peer, &a, |_| false));
        }
        let got = book.get(&peer);
        assert_eq!(got.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(got[0].to_string(), "/ip4/127.0.0.1/tcp/10");
        let again: Multiaddr = "/ip4/127.0.0.1/tcp/5".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!book.add(peer, &again, |_| false));
        assert_eq!(book.get(&peer)[0], again);
    }
}
