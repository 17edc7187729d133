//! The way into the network task: [`NetworkHandle`] turns each call into a [`Command`] with a
//! `oneshot` reply, sends it over a bounded channel, and waits with a deadline.
//!
//! Input is checked here, before it reaches the event loop, so a bad peer id or multiaddr is an
//! `Invalid` error with a message that says what was expected. Replies that depend on the network
//! (a dial, a DHT lookup) are completed by the event loop from swarm events; the deadline here
//! bounds how long a caller waits, whatever the swarm does.

use std::time::Duration;

use firma_ipc::IpcError;
use firma_ipc::types::{ConnectOutcome, DiscoveryState};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::ConnectedPeer;
use super::address_book::{p2p_suffix, without_p2p};
use crate::config::NetworkConfig;

/// How long a dial may take before the caller gets `Timeout` (the dial itself may still finish).
pub(crate) const DIAL_DEADLINE: Duration = Duration::from_secs(20);
/// A DHT lookup: Kademlia's own query timeout plus a margin.
const FIND_DEADLINE: Duration = Duration::from_secs(40);
/// Everything else only reads or changes the event loop's state.
const LOCAL_DEADLINE: Duration = Duration::from_secs(5);
/// Addresses accepted in one `add_addresses` call.
const MAX_ADDRS_PER_CALL: usize = 32;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, IpcError>>;

/// What a dial is aimed at, already parsed.
#[derive(Debug, Clone)]
pub(crate) enum DialTarget {
    /// A peer id: dialled over the addresses the node knows for it.
    Peer(PeerId),
    /// An address, with the peer id it must belong to when it ended in `/p2p/<id>`.
    Addr { addr: Multiaddr, peer: Option<PeerId> },
}

/// One request to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        target: DialTarget,
        reply: Reply<ConnectOutcome>,
    },
    Disconnect {
        peer: PeerId,
        reply: Reply<()>,
    },
    SetRedial {
        peer: PeerId,
        redial: bool,
        reply: Reply<()>,
    },
    SetBanned {
        peer: PeerId,
        banned: bool,
        reply: Reply<()>,
    },
    SetMdns {
        enabled: bool,
        reply: Reply<DiscoveryState>,
    },
    Bootstrap {
        reply: Reply<()>,
    },
    FindPeer {
        peer: PeerId,
        reply: Reply<Vec<String>>,
    },
    Connected {
        reply: Reply<Vec<ConnectedPeer>>,
    },
    ListenAddrs {
        reply: Reply<Vec<String>>,
    },
    Discovery {
        reply: Reply<DiscoveryState>,
    },
    Reload {
        cfg: Box<NetworkConfig>,
        reply: Reply<()>,
    },
    AddAddresses {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<()>,
    },
}

/// Cheap to clone; every clone talks to the same network task.
#[derive(Debug, Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

impl NetworkHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, local_peer_id: PeerId) -> Self {
        Self {
            commands,
            local_peer_id,
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> String {
        self.local_peer_id.to_string()
    }

    /// Connects to a multiaddr (with or without `/p2p/<id>`) or to a peer id whose addresses are
    /// known. Resolves once connected (or already connected) or when the dial failed.
    pub async fn dial(&self, target: String) -> Result<ConnectOutcome, IpcError> {
        let target = parse_dial_target(&target, &self.local_peer_id)?;
        self.request("dial", DIAL_DEADLINE, |reply| Command::Dial { target, reply })
            .await
    }

    /// Closes every connection to the peer and stops redialling it.
    pub async fn disconnect(&self, peer_id: String) -> Result<(), IpcError> {
        let peer = parse_peer_id(&peer_id)?;
        self.request("disconnect", LOCAL_DEADLINE, |reply| Command::Disconnect {
            peer,
            reply,
        })
        .await
    }

    /// Pins (keeps connected, redialled whenever lost) or unpins a peer.
    pub async fn set_redial(&self, peer_id: String, redial: bool) -> Result<(), IpcError> {
        let peer = self.parse_remote_peer(&peer_id)?;
        self.request("set_redial", LOCAL_DEADLINE, |reply| Command::SetRedial {
            peer,
            redial,
            reply,
        })
        .await
    }

    /// Bans (closes its connections, refuses it both ways) or unbans a peer.
    pub async fn set_banned(&self, peer_id: String, banned: bool) -> Result<(), IpcError> {
        let peer = self.parse_remote_peer(&peer_id)?;
        self.request("set_banned", LOCAL_DEADLINE, |reply| Command::SetBanned {
            peer,
            banned,
            reply,
        })
        .await
    }

    pub async fn set_mdns(&self, enabled: bool) -> Result<DiscoveryState, IpcError> {
        self.request("set_mdns", LOCAL_DEADLINE, |reply| Command::SetMdns { enabled, reply })
            .await
    }

    /// Starts a Kademlia bootstrap; `Unavailable` when the DHT is off or no peer is known.
    pub async fn bootstrap(&self) -> Result<(), IpcError> {
        self.request("bootstrap", LOCAL_DEADLINE, |reply| Command::Bootstrap { reply })
            .await
    }

    /// Looks a peer up in the DHT and returns the addresses found for it.
    pub async fn find_peer(&self, peer_id: String) -> Result<Vec<String>, IpcError> {
        let peer = self.parse_remote_peer(&peer_id)?;
        self.request("find_peer", FIND_DEADLINE, |reply| Command::FindPeer { peer, reply })
            .await
    }

    pub async fn connected(&self) -> Result<Vec<ConnectedPeer>, IpcError> {
        self.request("connected", LOCAL_DEADLINE, |reply| Command::Connected { reply })
            .await
    }

    /// Every address the node listens on, each ending in `/p2p/<local id>`.
    pub async fn listen_addrs(&self) -> Result<Vec<String>, IpcError> {
        self.request("listen_addrs", LOCAL_DEADLINE, |reply| Command::ListenAddrs { reply })
            .await
    }

    pub async fn discovery(&self) -> Result<DiscoveryState, IpcError> {
        self.request("discovery", LOCAL_DEADLINE, |reply| Command::Discovery { reply })
            .await
    }

    /// Applies a reloaded configuration: bootstrap list, retry strategy, limits and mDNS take
    /// effect at once without dropping connections; other keys are logged as needing a restart.
    pub async fn reload(&self, cfg: NetworkConfig) -> Result<(), IpcError> {
        for (i, a) in cfg.bootstrap.iter().enumerate() {
            let addr = parse_multiaddr(a).map_err(|e| IpcError::invalid(format!("network.bootstrap[{i}]: {e}")))?;
            if p2p_suffix(&addr).is_none() {
                return Err(IpcError::invalid(format!(
                    "network.bootstrap[{i}]: `{a}` needs a /p2p/<peer id> suffix"
                )));
            }
        }
        let cfg = Box::new(cfg);
        self.request("reload", LOCAL_DEADLINE, |reply| Command::Reload { cfg, reply })
            .await
    }

    /// Remembers addresses for a peer (and gives them to the DHT when it is on).
    pub async fn add_addresses(&self, peer_id: String, addrs: Vec<String>) -> Result<(), IpcError> {
        let peer = self.parse_remote_peer(&peer_id)?;
        if addrs.len() > MAX_ADDRS_PER_CALL {
            return Err(IpcError::invalid(format!(
                "{} addresses given for {peer_id}; at most {MAX_ADDRS_PER_CALL} per call",
                addrs.len()
            )));
        }
        let mut parsed = Vec::with_capacity(addrs.len());
        for a in &addrs {
            let addr = parse_multiaddr(a)?;
            if let Some(other) = p2p_suffix(&addr)
                && other != peer
            {
                return Err(IpcError::invalid(format!(
                    "address `{a}` belongs to {other}, not to {peer_id}"
                )));
            }
            parsed.push(without_p2p(&addr));
        }
        self.request("add_addresses", LOCAL_DEADLINE, |reply| Command::AddAddresses {
            peer,
            addrs: parsed,
            reply,
        })
        .await
    }

    /// Sends one command and waits for its reply; the deadline covers a full command queue too.
    async fn request<T>(
        &self,
        what: &str,
        deadline: Duration,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, IpcError> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.commands.send(make(tx)).await.map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| IpcError::timeout(format!("network {what} did not finish within {}s", deadline.as_secs())))?
    }

    /// A peer id that is not this node's own.
    fn parse_remote_peer(&self, s: &str) -> Result<PeerId, IpcError> {
        let peer = parse_peer_id(s)?;
        if peer == self.local_peer_id {
            return Err(IpcError::invalid(format!("{s} is this node's own peer id")));
        }
        Ok(peer)
    }
}

fn gone() -> IpcError {
    IpcError::unavailable("the network task is not running (the daemon is shutting down or the swarm stopped)")
}

pub(crate) fn parse_peer_id(s: &str) -> Result<PeerId, IpcError> {
    s.trim().parse::<PeerId>().map_err(|e| {
        IpcError::invalid(format!(
            "`{s}` is not a peer id ({e}); expected a base58 id such as 12D3KooW..."
        ))
    })
}

fn parse_multiaddr(s: &str) -> Result<Multiaddr, IpcError> {
    s.trim().parse::<Multiaddr>().map_err(|e| {
        IpcError::invalid(format!(
            "`{s}` is not a multiaddr ({e}); expected e.g. /ip4/192.0.2.7/tcp/9092/p2p/12D3KooW..."
        ))
    })
}

/// A multiaddr (anything starting with `/`) or a bare peer id.
pub(crate) fn parse_dial_target(s: &str, local: &PeerId) -> Result<DialTarget, IpcError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(IpcError::invalid("empty dial target; give a multiaddr or a peer id"));
    }
    let target = if s.starts_with('/') {
        let addr = parse_multiaddr(s)?;
        let peer = p2p_suffix(&addr);
        let addr = without_p2p(&addr);
        if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
            return Err(IpcError::invalid(format!(
                "`{s}` has a /p2p/ part before its end; relayed addresses are not supported"
            )));
        }
        match (addr.is_empty(), peer) {
            (true, Some(peer)) => DialTarget::Peer(peer),
            (true, None) => {
                return Err(IpcError::invalid("empty multiaddr; give e.g. /ip4/192.0.2.7/tcp/9092"));
            }
            (false, peer) => DialTarget::Addr { addr, peer },
        }
    } else {
        DialTarget::Peer(parse_peer_id(s)?)
    };
    let peer = match &target {
        DialTarget::Peer(p) => Some(p),
        DialTarget::Addr { peer, .. } => peer.as_ref(),
    };
    if peer == Some(local) {
        return Err(IpcError::invalid(format!(
            "`{s}` is this node itself; dial another peer"
        )));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firma_ipc::ErrorCode;

    #[test]
    fn dial_targets_parse_or_say_why_not() {
        let local = PeerId::random();
        let other = PeerId::random();
        assert!(matches!(parse_dial_target(&other.to_string(), &local), Ok(DialTarget::Peer(p)) if p == other));
        assert!(matches!(
            parse_dial_target(&format!("/ip4/127.0.0.1/tcp/1/p2p/{other}"), &local),
            Ok(DialTarget::Addr { peer: Some(p), .. }) if p == other
        ));
        assert!(matches!(
            parse_dial_target("/ip4/127.0.0.1/tcp/1", &local),
            Ok(DialTarget::Addr { peer: None, .. })
        ));
        assert!(matches!(
            parse_dial_target(&format!("/p2p/{other}"), &local),
            Ok(DialTarget::Peer(_))
        ));
        for bad in [
            "",
            "hello",
            "/ip4/1.2.3/tcp/1",
            "/ip4/127.0.0.1/tcp/x",
            &local.to_string(),
        ] {
            let err = parse_dial_target(bad, &local).err().map(|e| e.code);
            assert_eq!(err, Some(ErrorCode::Invalid), "{bad:?}");
        }
    }
}
