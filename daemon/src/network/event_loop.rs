//! The task that owns the `Swarm`. It waits on four things at once: shutdown (checked first),
//! a command from a [`super::NetworkHandle`], the next swarm event, and the next redial deadline.
//! Nothing in the loop awaits the network: replies that need the network (dials, DHT lookups)
//! wait in `pending_dials` / `pending_finds` until the swarm event that completes them arrives.
//! The only await on something outside is sending a [`NetEvent`] into the bounded channel, which
//! is the backpressure the consumer asked for (and it still gives way to shutdown).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use firma_ipc::types::{ConnectOutcome, Direction};
use futures::StreamExt as _;
use libp2p::core::transport::ListenerId;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, kad};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::address_book::{AddressBook, p2p_suffix, without_p2p};
use super::behaviour::Behaviour;
use super::handle::{Command, Reply};
use super::redial::{RedialTable, Scheduled};
use super::{NetEvent, SeedPeer};
use crate::config::NetworkConfig;

/// How long shutdown waits for connections to close politely.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A session shorter than this does not reset a peer's redial backoff.
pub(super) const STABLE_CONNECTION: Duration = Duration::from_secs(30);
/// DHT lookups in flight at once; more are refused rather than queued.
pub(super) const MAX_PENDING_FINDS: usize = 32;

/// One open connection.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    pub(super) id: ConnectionId,
    pub(super) addr: Multiaddr,
    pub(super) direction: Direction,
}

/// A connected peer: its connections, oldest first, and its latest round trip.
#[derive(Debug)]
pub(super) struct PeerConns {
    pub(super) conns: Vec<Conn>,
    pub(super) rtt: Option<Duration>,
    /// When the first connection of this session opened.
    pub(super) since: Instant,
    /// Redial attempts made before this session, put back if it does not last (see
    /// [`STABLE_CONNECTION`]).
    pub(super) prior_attempts: u32,
    /// We dialled it at least once during this session: we wanted it, so losing it is redialled.
    /// A peer that only dialled us is left to redial us itself; otherwise a `disconnect` on one
    /// side would be undone at once by the other side's redial.
    pub(super) dialled: bool,
}

/// How a listener asked for at start is doing.
#[derive(Debug, Clone)]
pub(super) enum ListenerState {
    Pending,
    Bound,
    Failed(String),
}

pub(crate) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
    /// The configuration in force (replaced by reload), read for the retry strategy and to tell
    /// what a reload changed.
    pub(super) cfg: NetworkConfig,
    pub(super) local_peer_id: PeerId,
    pub(super) peers: HashMap<PeerId, PeerConns>,
    pub(super) banned: HashSet<PeerId>,
    pub(super) addresses: AddressBook,
    pub(super) redial: RedialTable,
    /// Peers we are disconnecting on purpose: their loss is not redialled. Bounded by the
    /// number of connected peers (an entry is removed when the last connection closes).
    pub(super) closing: HashSet<PeerId>,
    /// Dials asked through the handle, by the connection id the swarm will report. Bounded by
    /// `max_pending_outgoing`: the swarm refuses dials past it synchronously.
    pub(super) pending_dials: HashMap<ConnectionId, Reply<ConnectOutcome>>,
    pub(super) pending_finds: HashMap<kad::QueryId, (PeerId, Reply<Vec<String>>)>,
    /// Current listen addresses, each with `/p2p/<local id>`.
    pub(super) listen_addrs: Vec<Multiaddr>,
    pub(super) listeners: HashMap<ListenerId, ListenerState>,
    /// Set once the consumer dropped its receiver, so the loss is logged once.
    events_closed: bool,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        cfg: NetworkConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let local_peer_id = *swarm.local_peer_id();
        Self {
            swarm,
            commands,
            events,
            shutdown,
            cfg,
            local_peer_id,
            peers: HashMap::new(),
            banned: HashSet::new(),
            addresses: AddressBook::default(),
            redial: RedialTable::default(),
            closing: HashSet::new(),
            pending_dials: HashMap::new(),
            pending_finds: HashMap::new(),
            listen_addrs: Vec::new(),
            listeners: HashMap::new(),
            events_closed: false,
        }
    }

    /// Runs until the shutdown token fires; returns the peers that were connected then.
    pub(super) async fn run(mut self) -> Vec<String> {
        let mut commands_open = true;
        loop {
            // Shutdown is checked first; the branches below are polled in random order so that
            // neither a burst of commands nor a burst of swarm events starves the other.
            if self.shutdown.is_cancelled() {
                break;
            }
            let next_redial = self.redial.next_due();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command).await,
                    // Every handle is gone; the swarm keeps running until shutdown.
                    None => commands_open = false,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                () = sleep_until_opt(next_redial) => self.redial_due_peers(),
            }
        }
        self.close_politely().await
    }

    /// Records who is connected, then closes every connection, waiting at most [`CLOSE_GRACE`].
    /// Nothing is emitted from here on: the daemon keeps "was connected" for the next start.
    async fn close_politely(mut self) -> Vec<String> {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in &connected {
            // Err only means it was not connected any more.
            let _ = self.swarm.disconnect_peer_id(*peer);
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        while self.swarm.connected_peers().next().is_some() {
            if tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .is_err()
            {
                tracing::debug!("some connections did not close within {CLOSE_GRACE:?}; dropping them");
                break;
            }
        }
        tracing::info!(peers = connected.len(), "network stopped");
        connected.iter().map(PeerId::to_string).collect()
    }

    /// Sends an event, waiting while the channel is full; gives way to shutdown.
    pub(super) async fn emit(&mut self, event: NetEvent) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let sent = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return,
            sent = self.events.send(event) => sent,
        };
        if sent.is_err() && !self.events_closed {
            self.events_closed = true;
            tracing::warn!("the network event receiver was dropped; network events are no longer delivered");
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Bans given at start (from the store).
    pub(super) fn apply_bans(&mut self, banned: &[String]) {
        for s in banned {
            match s.parse::<PeerId>() {
                Ok(peer) => {
                    self.banned.insert(peer);
                    self.swarm.behaviour_mut().banned.block_peer(peer);
                }
                Err(e) => {
                    tracing::warn!(peer_id = %s, "ignoring a banned peer id that does not parse: {e}")
                }
            }
        }
    }

    /// Seeds and bootstrap peers: remember their addresses, dial pinned seeds now, and start a
    /// DHT bootstrap when there is a bootstrap list.
    pub(super) fn start_peers(&mut self, seeds: &[SeedPeer], bootstrap: &[String]) {
        for seed in seeds {
            let peer = match seed.peer_id.parse::<PeerId>() {
                Ok(p) if p != self.local_peer_id => p,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(peer_id = %seed.peer_id, "ignoring a stored peer whose id does not parse: {e}");
                    continue;
                }
            };
            for a in &seed.addrs {
                match a.parse::<Multiaddr>() {
                    Ok(addr) => self.learn_address(peer, &addr, true),
                    Err(e) => {
                        tracing::warn!(peer_id = %peer, addr = %a, "ignoring a stored address: {e}")
                    }
                }
            }
            if seed.redial && !self.banned.contains(&peer) {
                self.redial.pin(peer);
                self.dial_to_keep(peer);
            }
        }
        if self.add_bootstrap_peers(bootstrap) > 0 {
            self.start_bootstrap();
        }
    }

    /// Adds `/p2p`-terminated bootstrap addresses to the DHT; returns how many were added.
    pub(super) fn add_bootstrap_peers(&mut self, bootstrap: &[String]) -> usize {
        let mut added = 0;
        for a in bootstrap {
            let Ok(addr) = a.parse::<Multiaddr>() else {
                tracing::warn!(addr = %a, "ignoring a bootstrap address that does not parse");
                continue;
            };
            let Some(peer) = p2p_suffix(&addr) else {
                tracing::warn!(addr = %a, "ignoring a bootstrap address without /p2p/<peer id>");
                continue;
            };
            if peer == self.local_peer_id {
                continue;
            }
            self.learn_address(peer, &addr, true);
            added += 1;
        }
        added
    }

    pub(super) fn start_bootstrap(&mut self) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            match kad.bootstrap() {
                Ok(id) => tracing::info!(query = ?id, "DHT bootstrap started"),
                Err(e) => tracing::warn!("DHT bootstrap not started: {e}"),
            }
        }
    }

    /// Remembers an address of a peer: our address book, the swarm's behaviours, and (when
    /// `to_dht`) the DHT routing table. A pinned peer that had been given up on is dialled again.
    pub(super) fn learn_address(&mut self, peer: PeerId, addr: &Multiaddr, to_dht: bool) {
        if peer == self.local_peer_id {
            return;
        }
        let addr = without_p2p(addr);
        let peers = &self.peers;
        let redial = &self.redial;
        let new = self
            .addresses
            .add(peer, &addr, |p| peers.contains_key(p) || redial.is_pinned(p));
        if !new {
            return;
        }
        self.swarm.add_peer_address(peer, addr.clone());
        if to_dht && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            kad.add_address(&peer, addr);
        }
        if !self.swarm.is_connected(&peer) && !self.banned.contains(&peer) && self.redial.rearm(&peer) {
            self.dial_to_keep(peer);
        }
    }

    /// Dials a peer we keep (pinned or lost), counting the attempt; a dial that cannot even
    /// start schedules the next one.
    pub(super) fn dial_to_keep(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) || self.banned.contains(&peer) || self.is_stopping() {
            return;
        }
        self.redial.note_attempt(&peer);
        let opts = DialOpts::peer_id(peer)
            .addresses(self.addresses.get(&peer))
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => tracing::debug!(peer_id = %peer, "redialling"),
            // Already being dialled: that dial's outcome drives the next step.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                tracing::debug!(peer_id = %peer, "redial could not start: {e}");
                self.schedule_redial(peer);
            }
        }
    }

    /// Plans the next attempt for a peer we keep, by the retry strategy in force.
    pub(super) fn schedule_redial(&mut self, peer: PeerId) {
        if self.banned.contains(&peer) || self.is_stopping() {
            return;
        }
        let unit: f64 = rand::random();
        match self.redial.schedule(peer, &self.cfg.retry, Instant::now(), unit) {
            Scheduled::At(at) => {
                tracing::debug!(peer_id = %peer, in_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64, "redial scheduled");
            }
            Scheduled::GaveUp => tracing::info!(
                peer_id = %peer,
                "giving up redialling after network.retry.max_attempts attempts; a new address or a dial brings it back"
            ),
            Scheduled::Full => {
                tracing::warn!(peer_id = %peer, "redial table full; this lost peer is not redialled")
            }
        }
    }

    fn redial_due_peers(&mut self) {
        for peer in self.redial.take_due(Instant::now()) {
            self.dial_to_keep(peer);
        }
    }
}

/// Sleeps until `deadline`, or forever without one (that `select!` branch then never fires).
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
