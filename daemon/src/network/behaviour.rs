//! The composition of libp2p behaviours and the swarm built around it. No logic lives here: the
//! event loop decides what to do with what these behaviours report.
//!
//! Field order matters: the swarm asks behaviours in declaration order whether to accept a
//! connection, so the ban list and the limits refuse before anyone else spends work on it.

use libp2p::core::{Transport as _, upgrade};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify, identity::Keypair, kad, mdns,
    memory_connection_limits, noise, ping, tcp, yamux,
};

use super::dial_ports::DialPorts;
use crate::config::{LimitsConfig, NetworkConfig};

/// The identify protocol, as every libp2p implementation (js-libp2p included) speaks it.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";
/// The public Kademlia protocol, shared with upstream js-libp2p nodes.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
/// How long one DHT lookup may run; the handle's deadline is a little longer.
pub(crate) const KAD_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What this node tells peers it runs (identify's agent string).
pub(crate) fn agent_version() -> String {
    format!("firma-transportd/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) banned: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    /// Replaced wholesale on reload: it has no per-connection state, so nothing is dropped.
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    /// Switched at runtime by replacing the inner value (mDNS keeps no per-connection state).
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Off when `network.dht` is false; changing that needs a restart.
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// Raw streams for the transfer engine (transfer/): it opens and accepts them through the
    /// `Control` handed out by `spawn`, so the swarm task never carries document bytes itself.
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// Builds the swarm: QUIC, TCP (nodelay) with Noise and Yamux, DNS resolution of `/dns4`, `/dns6`
/// and `/dnsaddr` addresses through the system's resolver, and the behaviours above. With
/// `fresh_tcp_dial_ports`, TCP dials do not reuse the listen port (see `dial_ports.rs`).
pub(crate) fn build_swarm(
    keypair: Keypair,
    cfg: &NetworkConfig,
    fresh_tcp_dial_ports: bool,
) -> anyhow::Result<Swarm<Behaviour>> {
    let dns_config = system_resolver();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let tcp = DialPorts {
                inner: tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
                fresh: fresh_tcp_dial_ports,
            };
            Ok(tcp
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| anyhow::anyhow!("setting up the TCP transport with Noise and Yamux: {e}"))?
        .with_dns_config(dns_config.0, dns_config.1)
        .with_behaviour(|key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
            let local = key.public().to_peer_id();
            Ok(Behaviour {
                banned: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(connection_limits(&cfg.limits)),
                memory: memory_limits(&cfg.limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(agent_version()),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(cfg.ping_interval)),
                mdns: if cfg.mdns { Some(new_mdns(local)?) } else { None }.into(),
                kad: if cfg.dht { Some(new_kad(local)) } else { None }.into(),
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| anyhow::anyhow!("setting up the libp2p behaviours: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_timeout))
        .build();
    Ok(swarm)
}

/// The system's resolver settings (`/etc/resolv.conf`; hosts from `/etc/hosts`). Without a
/// readable resolv.conf the daemon still starts: names in `/etc/hosts` resolve, others fail at
/// dial time with a resolver error, and nothing is ever sent to a resolver nobody configured
/// (hickory's own default would be a public one).
fn system_resolver() -> (libp2p::dns::ResolverConfig, libp2p::dns::ResolverOpts) {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok(conf) => conf,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot read the system's DNS settings (/etc/resolv.conf); /dns4, /dns6 and /dnsaddr addresses resolve only from /etc/hosts until it exists and the daemon restarts"
            );
            (
                libp2p::dns::ResolverConfig::from_name_servers(Vec::new()),
                libp2p::dns::ResolverOpts::default(),
            )
        }
    }
}

/// Every limit of `LimitsConfig`; none is left unlimited.
pub(crate) fn connection_limits(l: &LimitsConfig) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(l.max_pending_incoming))
        .with_max_pending_outgoing(Some(l.max_pending_outgoing))
        .with_max_established_incoming(Some(l.max_established_incoming))
        .with_max_established_outgoing(Some(l.max_established_outgoing))
        .with_max_established(Some(l.max_established_total))
        .with_max_established_per_peer(Some(l.max_established_per_peer))
}

pub(crate) fn memory_limits(l: &LimitsConfig) -> memory_connection_limits::Behaviour {
    let bytes = l.max_memory_mib.saturating_mul(1024 * 1024);
    memory_connection_limits::Behaviour::with_max_bytes(usize::try_from(bytes).unwrap_or(usize::MAX))
}

pub(crate) fn new_mdns(local: PeerId) -> std::io::Result<mdns::tokio::Behaviour> {
    mdns::tokio::Behaviour::new(mdns::Config::default(), local)
}

fn new_kad(local: PeerId) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut cfg = kad::Config::new(KAD_PROTOCOL);
    // Disjoint paths: one lookup cannot be steered entirely by a single group of colluding peers.
    cfg.disjoint_query_paths(true);
    cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
    let mut kad = kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), cfg);
    // Server mode from the start: a daemon on a LAN often has no confirmed external address,
    // and js-libp2p peers only add servers to their routing tables.
    kad.set_mode(Some(kad::Mode::Server));
    kad
}
