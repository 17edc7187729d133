//! Wire types of the control API. Plain serde data: peer ids and multiaddrs are strings,
//! times are milliseconds since the Unix epoch, durations are microseconds.
//!
//! Fields added in later API versions carry `#[serde(default)]` so that older peers of the
//! socket still decode (the codec writes maps with field names, not positional arrays).

use serde::{Deserialize, Serialize};

/// Answer to the `hello` handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub api_version: u32,
    pub daemon_version: String,
    pub peer_id: String,
    /// What the daemon decided this connection may do, from its peer credentials.
    pub role: Role,
}

/// Who is on the other end of a control connection, decided from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The web tier's account: reads, connects, pins and transfers; no ban, no config, no shutdown.
    Web,
    /// Root, the daemon's own uid, or a member of the control group: everything.
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreHealth {
    Healthy,
    /// Something stored failed validation or a write failed; writes are refused until an operator acts.
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub health: StoreHealth,
    /// Why the store is unhealthy, and what to do about it.
    pub detail: Option<String>,
    pub map_size_bytes: u64,
    pub used_bytes: u64,
    /// Bytes free to the daemon on the file system holding the store (and, in the default
    /// layout, the received documents); `None` when it could not be read.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub version: String,
    pub api_version: u32,
    pub uptime_ms: u64,
    pub listen_addrs: Vec<String>,
    pub connected_peers: u32,
    pub known_peers: u32,
    pub pinned_peers: u32,
    pub discovery: DiscoveryState,
    pub store: StoreStatus,
    /// The sequence number of the newest event; a snapshot taken with this status is consistent with it.
    pub event_head: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerFilter {
    /// Peers with at least one open connection.
    Connected,
    /// Every peer the store knows.
    Known,
    Pinned,
}

/// How an address of a peer became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrSource {
    Mdns,
    Dht,
    Identify,
    /// Given by an operator (`connect`, bootstrap list, pin).
    Manual,
    /// Seen as the remote address of a connection.
    Connection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    pub addr: String,
    pub source: AddrSource,
    /// When a connection over this address last succeeded.
    pub last_success_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    Unknown,
    Known,
    Trusted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub connected: bool,
    pub addrs: Vec<PeerAddr>,
    pub protocols: Vec<String>,
    pub agent: Option<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub connect_count: u64,
    pub last_rtt_us: Option<u64>,
    pub trust: Trust,
    pub pinned: bool,
    pub banned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOutcome {
    pub peer_id: String,
    /// The address the connection was established over.
    pub addr: String,
    /// True when the peer was already connected and nothing was dialled.
    pub already_connected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryState {
    pub mdns_enabled: bool,
    pub dht_enabled: bool,
}

/// A change to discovery asked by an operator; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryChange {
    pub mdns: Option<bool>,
    /// Start a Kademlia bootstrap now.
    pub bootstrap_now: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One closed or still-open connection, as kept in the connection history table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub peer_id: String,
    pub addr: String,
    pub direction: Direction,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    pub close_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only this peer's connections.
    pub peer_id: Option<String>,
    /// At most this many records, newest first (the daemon caps it).
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyNode {
    pub peer_id: String,
    /// True for the daemon's own node.
    pub local: bool,
    pub connected: bool,
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEdge {
    pub from: String,
    pub to: String,
    pub rtt_us: Option<u64>,
}

/// The daemon's local view of the network: itself, the peers it knows, and its live connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub nodes: Vec<TopologyNode>,
    pub edges: Vec<TopologyEdge>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Prometheus-style name, e.g. `firma_connections_opened_total`.
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics: Vec<Metric>,
}

/// One control-API call, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub uid: u32,
    pub pid: Option<i32>,
    /// The method called, or `connect-refused` for a connection turned away by its credentials.
    pub action: String,
    /// The arguments that matter for accountability (peer id, address), never secrets.
    pub detail: String,
    /// `ok`, or the error code.
    pub result: String,
}
