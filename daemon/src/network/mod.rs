//! The daemon's libp2p node.
//!
//! One task (`event_loop.rs`) owns the `Swarm`; nothing else touches it. Others talk to it through
//! a [`NetworkHandle`] (commands with `oneshot` replies over a bounded channel) and hear from it
//! through a bounded channel of [`NetEvent`]s. libp2p types stay inside this module: what leaves
//! it is strings and `firma_ipc` wire types.
//!
//! Files: `behaviour.rs` composes the libp2p behaviours; `event_loop.rs` runs the task,
//! `swarm_events.rs` translates swarm events, `commands.rs` answers the handle, `listen.rs` binds
//! the listeners before the network starts, `dial_ports.rs` picks the local port of TCP dials, `redial.rs` decides when lost peers are dialled again,
//! `address_book.rs` remembers where peers can be reached.
//!
//! Who is redialled when lost (by `network.retry`): pinned peers (seeds with `redial`, and
//! `set_redial(true)`) and peers this node dialled itself. A peer that only dialled us is left to
//! dial us again, so that a `disconnect` on one side is not undone at once by the other side.
//! `disconnect` and bans stop redialling; a connection that lasted under 30 s does not reset the
//! backoff (a peer that accepts and closes at once is not hammered).

mod address_book;
mod behaviour;
mod commands;
mod dial_ports;
mod event_loop;
mod handle;
mod listen;
mod redial;
mod swarm_events;
#[cfg(test)]
mod tests;

use firma_ipc::types::{AddrSource, Direction, DiscoveryState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use handle::NetworkHandle;

use crate::config::NetworkConfig;

/// Events buffered for a slow consumer; past this the network task waits (backpressure), it
/// never drops an event.
pub const EVENT_QUEUE: usize = 1024;
/// Commands waiting for the event loop; callers wait (within their deadline) when it is full.
const COMMAND_QUEUE: usize = 64;

/// A peer remembered by the store, handed to the network at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPeer {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Pinned: dialled at start and redialled whenever lost.
    pub redial: bool,
}

/// What happened on the network, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Discovered {
        peer_id: String,
        addrs: Vec<String>,
        source: AddrSource,
    },
    /// The FIRST connection to a peer opened (more connections to the same peer say nothing).
    Connected {
        peer_id: String,
        addr: String,
        direction: Direction,
    },
    /// The LAST connection to a peer closed. Never sent once shutdown has begun.
    Disconnected {
        peer_id: String,
        reason: Option<String>,
    },
    Identified {
        peer_id: String,
        agent: String,
        protocols: Vec<String>,
        listen_addrs: Vec<String>,
    },
    /// Every ping result; the consumer rate-limits.
    Rtt {
        peer_id: String,
        rtt_us: u64,
    },
    /// A full address including `/p2p/<local id>`. Other addresses in events have no `/p2p` part.
    ListenAddrAdded {
        addr: String,
    },
    ListenAddrRemoved {
        addr: String,
    },
    DiscoveryChanged {
        state: DiscoveryState,
    },
    DialFailed {
        peer_id: Option<String>,
        error: String,
    },
}

/// A peer with at least one open connection, as `NetworkHandle::connected` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedPeer {
    pub peer_id: String,
    /// The remote address of the oldest open connection.
    pub addr: String,
    pub direction: Direction,
    /// The latest ping round trip on any connection to the peer.
    pub rtt_us: Option<u64>,
}

/// A running network task and the ways to talk to it.
#[derive(Debug)]
pub struct Network {
    pub handle: NetworkHandle,
    pub events: mpsc::Receiver<NetEvent>,
    /// Ends after `shutdown` fires, with the peer ids that were connected at that moment.
    pub task: tokio::task::JoinHandle<Vec<String>>,
    /// Every address bound before `spawn` returned, each ending in `/p2p/<local id>`. Each was
    /// also sent as a `ListenAddrAdded` event, first in `events`.
    pub listen_addrs: Vec<String>,
    /// Opens and accepts raw protocol streams (the transfer engine's); cloneable.
    pub streams: StreamControl,
    /// Inbound streams of each protocol passed to `spawn` as `accept`, in that order.
    pub incoming: Incoming,
}

/// Inbound streams per accepted protocol; wrapped only because they do not implement `Debug`.
#[derive(Default)]
pub struct Incoming(pub Vec<libp2p_stream::IncomingStreams>);

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Incoming({} protocols)", self.0.len())
    }
}

/// libp2p-stream's handle, wrapped only because it does not implement `Debug`.
#[derive(Clone)]
pub struct StreamControl(pub libp2p_stream::Control);

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamControl")
    }
}

/// A built swarm that neither listens nor dials yet: [`prepare`] makes it, [`Starting::start`]
/// runs it. In between, the daemon drops root; listeners that need privilege are bound before.
pub struct Starting {
    event_loop: event_loop::EventLoop,
    local_peer_id: libp2p::PeerId,
    command_tx: mpsc::Sender<handle::Command>,
    event_rx: mpsc::Receiver<NetEvent>,
    streams: StreamControl,
    incoming: Incoming,
    dev: bool,
    bootstrap: Vec<String>,
    /// Listen addresses not yet started; the privileged ones leave first.
    unbound: Vec<libp2p::Multiaddr>,
    started: Vec<(libp2p::core::transport::ListenerId, libp2p::Multiaddr)>,
}

/// Builds the swarm and registers the `accept` protocols; binds and dials nothing.
///
/// `drops_root`: the daemon will drop root before [`Starting::start`]. Then a TCP listener on a
/// privileged port makes TCP dials use fresh ports (`dial_ports.rs`), which is logged.
///
/// With `dev`, a listen port that is taken is replaced by a free one (logged); otherwise a
/// listener that cannot be bound is an error naming the address and the fix.
pub fn prepare(
    keypair: libp2p::identity::Keypair,
    cfg: &NetworkConfig,
    dev: bool,
    drops_root: bool,
    shutdown: CancellationToken,
    accept: &[libp2p::StreamProtocol],
) -> anyhow::Result<Starting> {
    let local_peer_id = keypair.public().to_peer_id();
    let unbound = listen::parse_listen(&cfg.listen)?;
    let start = listen::unprivileged_port_start();
    let privileged_tcp: Vec<String> = unbound
        .iter()
        .filter(|a| listen::is_tcp(a) && listen::privileged_port(a, start).is_some())
        .map(ToString::to_string)
        .collect();
    let fresh_tcp_dial_ports = drops_root && !privileged_tcp.is_empty();
    if fresh_tcp_dial_ports {
        tracing::warn!(
            listen = ?privileged_tcp,
            "a TCP listen port below {start} is bound as root before the drop, so outgoing TCP connections use fresh ports and TCP hole punching is off (QUIC is unaffected). To keep it, listen on a port of {start} or above (and redirect the low port to it, e.g. with nftables)"
        );
    }
    let swarm = behaviour::build_swarm(keypair, cfg, fresh_tcp_dial_ports)?;
    let mut streams = StreamControl(swarm.behaviour().stream.new_control());
    // Registered before anything listens or dials: a peer that reconnects the instant we are
    // up and opens a transfer stream must not be told we lack the protocol (it would fall
    // back to the legacy one).
    let incoming = accept
        .iter()
        .map(|p| {
            streams
                .0
                .accept(p.clone())
                .map_err(|_| anyhow::anyhow!("protocol {p} is registered twice"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let event_loop = event_loop::EventLoop::new(swarm, command_rx, event_tx, cfg.clone(), shutdown);
    Ok(Starting {
        event_loop,
        local_peer_id,
        command_tx,
        event_rx,
        streams,
        incoming: Incoming(incoming),
        dev,
        bootstrap: cfg.bootstrap.clone(),
        unbound,
        started: Vec::new(),
    })
}

impl Starting {
    /// Binds the listeners whose port needs privilege, now (call it while still root). The
    /// others are bound by [`Starting::start`], as the account that will also dial from them.
    pub fn bind_privileged(&mut self) -> anyhow::Result<()> {
        let start = listen::unprivileged_port_start();
        let (privileged, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unbound)
            .into_iter()
            .partition(|a| listen::privileged_port(a, start).is_some());
        self.unbound = rest;
        let started = self.event_loop.start_listeners(&privileged, self.dev)?;
        self.started.extend(started);
        Ok(())
    }

    /// Binds the remaining listeners, waits until every one is up, applies bans and seeds, and
    /// spawns the event loop.
    pub async fn start(mut self, seeds: Vec<SeedPeer>, banned: Vec<String>) -> anyhow::Result<Network> {
        let rest = std::mem::take(&mut self.unbound);
        let started = self.event_loop.start_listeners(&rest, self.dev)?;
        self.started.extend(started);
        let listen_addrs = self.event_loop.wait_listeners(&self.started).await?;
        self.event_loop.apply_bans(&banned);
        self.event_loop.start_peers(&seeds, &self.bootstrap);
        let task = tokio::spawn(self.event_loop.run());
        tracing::info!(peer_id = %self.local_peer_id, addrs = ?listen_addrs, "network started");
        Ok(Network {
            handle: NetworkHandle::new(self.command_tx, self.local_peer_id),
            events: self.event_rx,
            task,
            listen_addrs,
            streams: self.streams,
            incoming: self.incoming,
        })
    }
}

/// [`prepare`] and [`Starting::start`] in one, for a process that keeps its privileges.
pub async fn spawn(
    keypair: libp2p::identity::Keypair,
    cfg: &NetworkConfig,
    dev: bool,
    seeds: Vec<SeedPeer>,
    banned: Vec<String>,
    shutdown: CancellationToken,
    accept: &[libp2p::StreamProtocol],
) -> anyhow::Result<Network> {
    prepare(keypair, cfg, dev, false, shutdown, accept)?
        .start(seeds, banned)
        .await
}
