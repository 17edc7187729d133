//! Binding the listeners before the network starts, so an operator learns at start, not later,
//! that an address cannot be used. A daemon started as root binds only the privileged ports
//! (below `ip_unprivileged_port_start`) before it drops root and the rest after, as the account
//! that will dial from them (see `dial_ports.rs`).
//!
//! libp2p's TCP listener sets SO_REUSEPORT, so a second daemon could silently share a port with
//! the first. A fixed port is therefore probed first with a plain socket (no SO_REUSEPORT), which
//! fails when anyone holds it. QUIC is probed the same way because its bind error reaches us
//! wrapped so deeply that "address in use" can no longer be told apart from other failures.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use anyhow::anyhow;
use futures::StreamExt as _;
use libp2p::Multiaddr;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use tokio::time::Instant;

use super::event_loop::{EventLoop, ListenerState};

/// How long each listener may take to report its first address.
const BIND_DEADLINE: Duration = Duration::from_secs(5);

/// Where the kernel's unprivileged ports start (`net.ipv4.ip_unprivileged_port_start`, which
/// also governs IPv6); 1024 when it cannot be read.
pub(super) fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The TCP or UDP port binding `addr` needs privilege for (root or CAP_NET_BIND_SERVICE), if any.
pub(super) fn privileged_port(addr: &Multiaddr, unprivileged_start: u16) -> Option<u16> {
    let port = match probe_addr(addr)? {
        Probe::Tcp(s) | Probe::Udp(s) => s.port(),
    };
    (port < unprivileged_start).then_some(port)
}

/// True for `/ip4|ip6/<ip>/tcp/<port>`.
pub(super) fn is_tcp(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::Tcp(_)))
}

/// `network.listen` parsed; an entry that is no multiaddr is an error naming it.
pub(super) fn parse_listen(listen: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    listen
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse().map_err(|e| {
                anyhow!("network.listen[{i}]: `{text}` is not a multiaddr ({e}); e.g. /ip4/0.0.0.0/tcp/9092")
            })
        })
        .collect()
}

impl EventLoop {
    /// Starts a listener on every address. The sockets are bound here, synchronously, so a caller
    /// may do this before dropping root; [`EventLoop::wait_listeners`] then waits for them.
    pub(super) fn start_listeners(
        &mut self,
        addrs: &[Multiaddr],
        dev: bool,
    ) -> anyhow::Result<Vec<(ListenerId, Multiaddr)>> {
        let mut started = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let id = match self.listen_once(addr) {
                Ok(id) => id,
                Err(e) if dev && is_addr_in_use(&e) => {
                    let free = with_port_zero(addr);
                    tracing::warn!(taken = %addr, instead = %free, "listen port is taken; dev mode picks a free one");
                    self.listen_once(&free).map_err(|e| listen_error(&free, &e))?
                }
                Err(e) => return Err(listen_error(addr, &e)),
            };
            self.listeners.insert(id, ListenerState::Pending);
            started.push((id, addr.clone()));
        }
        Ok(started)
    }

    /// Waits until each listener is bound or has failed. Returns the addresses bound so far (an
    /// unspecified IP yields one per interface).
    pub(super) async fn wait_listeners(&mut self, waiting: &[(ListenerId, Multiaddr)]) -> anyhow::Result<Vec<String>> {
        for (id, addr) in waiting {
            let deadline = Instant::now() + BIND_DEADLINE;
            loop {
                match self.listeners.get(id) {
                    Some(ListenerState::Bound) => break,
                    Some(ListenerState::Failed(why)) => {
                        return Err(anyhow!("cannot listen on {addr}: {why}; check network.listen"));
                    }
                    Some(ListenerState::Pending) | None => {}
                }
                match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                    Ok(event) => self.on_swarm_event(event).await,
                    Err(_) => {
                        return Err(anyhow!(
                            "listening on {addr} reported no address within {}s; check that the interface exists and network.listen is right",
                            BIND_DEADLINE.as_secs()
                        ));
                    }
                }
            }
        }
        Ok(self.listen_addrs.iter().map(ToString::to_string).collect())
    }

    fn listen_once(&mut self, addr: &Multiaddr) -> Result<ListenerId, io::Error> {
        // Dropped at once: the probe only proves nobody else holds the port.
        match probe_addr(addr) {
            Some(Probe::Tcp(socket)) => drop(TcpListener::bind(socket)?),
            Some(Probe::Udp(socket)) => drop(UdpSocket::bind(socket)?),
            None => {}
        }
        self.swarm.listen_on(addr.clone()).map_err(|e| match e {
            libp2p::TransportError::MultiaddrNotSupported(a) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{a} is not supported; use /ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1"),
            ),
            libp2p::TransportError::Other(e) => e,
        })
    }
}

fn listen_error(addr: &Multiaddr, e: &io::Error) -> anyhow::Error {
    let fix = if is_addr_in_use(e) {
        "another process holds that port; stop it, choose another port in network.listen, or use dev mode for a free port"
    } else if e.kind() == io::ErrorKind::PermissionDenied {
        "ports below 1024 need the daemon to start as root (it binds them before dropping privileges) or CAP_NET_BIND_SERVICE"
    } else if e.kind() == io::ErrorKind::AddrNotAvailable {
        "that IP is not assigned to any interface of this machine; check network.listen"
    } else {
        "check network.listen"
    };
    anyhow!("cannot listen on {addr}: {e}; {fix}")
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

/// What to probe for `/ip4|ip6/<ip>/tcp/<port>` or `/ip4|ip6/<ip>/udp/<port>/quic-v1` with a
/// fixed port; nothing for port 0 or other shapes (libp2p reports those itself).
fn probe_addr(addr: &Multiaddr) -> Option<Probe> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match (it.next()?, it.next(), it.next()) {
        (Protocol::Tcp(port), None, None) if port != 0 => Some(Probe::Tcp(SocketAddr::new(ip, port))),
        (Protocol::Udp(port), Some(Protocol::QuicV1), None) if port != 0 => Some(Probe::Udp(SocketAddr::new(ip, port))),
        _ => None,
    }
}

/// The same address with its TCP or UDP port replaced by 0 (any free port).
fn with_port_zero(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(0),
            Protocol::Udp(_) => Protocol::Udp(0),
            other => other,
        })
        .collect()
}

/// True when the error (or one it wraps) is EADDRINUSE. libp2p wraps transport errors in
/// `io::Error::other`, whose `source()` skips the wrapped error itself, so look inside too.
fn is_addr_in_use(e: &io::Error) -> bool {
    fn walk(e: &(dyn std::error::Error + 'static), depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::AddrInUse {
                return true;
            }
            if let Some(inner) = io.get_ref()
                && walk(inner, depth + 1)
            {
                return true;
            }
        }
        e.source().is_some_and(|s| walk(s, depth + 1))
    }
    walk(e, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_and_probe_address() {
        let a: Multiaddr = "/ip4/127.0.0.1/udp/9092/quic-v1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(with_port_zero(&a).to_string(), "/ip4/127.0.0.1/udp/0/quic-v1");
        let socket: SocketAddr = "127.0.0.1:9092".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe_addr(&a), Some(Probe::Udp(socket)));
        let t: Multiaddr = "/ip4/127.0.0.1/tcp/9092".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe_addr(&t), Some(Probe::Tcp(socket)));
        let zero: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe_addr(&zero), None);
        assert_eq!(privileged_port(&zero, 1024), None);
        assert_eq!(privileged_port(&t, 1024), None);
        assert_eq!(privileged_port(&t, 10_000), Some(9092));
        let web: Multiaddr = "/ip6/::/tcp/443".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(privileged_port(&web, 1024), Some(443));
        assert!(is_tcp(&web) && !is_tcp(&a));
    }

    #[test]
    fn addr_in_use_is_found_inside_wrapping() {
        let inner = io::Error::new(io::ErrorKind::AddrInUse, "taken");
        let wrapped = io::Error::other(inner);
        assert!(is_addr_in_use(&wrapped));
        assert!(!is_addr_in_use(&io::Error::other("something else")));
    }
}
