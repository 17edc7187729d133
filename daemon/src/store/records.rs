//! The values kept in the store, archived with rkyv. Their archived layout IS the on-disk
//! format: changing a field here requires a new schema version and a migration step
//! (see `schema.rs`), because rkyv archives carry no field names.
//!
//! These types have their own copies of the wire enums (`Trust`, `AddrSource`, `Direction`) so
//! that a change to the control API can never silently change what is on disk.

use firma_ipc::types;
use rkyv::{Archive, Deserialize, Serialize};

/// How much the daemon trusts a peer, derived from what it knows (see `PeerRecord::refresh_trust`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Unknown,
    Known,
    Trusted,
}

/// How an address of a peer became known.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    Mdns,
    Dht,
    Identify,
    Manual,
    Connection,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One address of a peer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AddrRecord {
    pub addr: String,
    pub source: AddrSource,
    /// When a connection over this address last succeeded; addresses that never worked are
    /// the first evicted when a peer has too many.
    pub last_success_ms: Option<u64>,
    /// When this address was last reported by anyone; orders eviction among equals.
    pub last_seen_ms: u64,
}

/// Everything remembered about one peer (table `peers`, key: the peer id string).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub peer_id: String,
    /// At most `ops::MAX_ADDRS`.
    pub addrs: Vec<AddrRecord>,
    /// At most `ops::MAX_PROTOCOLS`, each at most `ops::MAX_TEXT` bytes.
    pub protocols: Vec<String>,
    /// The identify agent string, truncated to `ops::MAX_TEXT` bytes. Peer-supplied text.
    pub agent: Option<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub connect_count: u64,
    pub last_rtt_us: Option<u64>,
    pub trust: Trust,
    pub pinned: bool,
    pub banned: bool,
    /// Connected when the daemon last knew; survives a crash or a clean stop so that the next
    /// start redials it.
    pub was_connected: bool,
}

/// One connection (table `history`, key: big-endian u64 id, increasing).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub peer_id: String,
    pub addr: String,
    pub direction: Direction,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    pub close_reason: Option<String>,
}

/// One control-API call (table `audit`, key: big-endian u64 id, increasing).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub uid: u32,
    pub pid: Option<i32>,
    pub action: String,
    pub detail: String,
    pub result: String,
}

impl PeerRecord {
    /// A record for a peer first heard of at `at_ms`.
    pub fn new(peer_id: &str, at_ms: u64) -> Self {
        Self {
            peer_id: peer_id.to_owned(),
            addrs: Vec::new(),
            protocols: Vec::new(),
            agent: None,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
            connect_count: 0,
            last_rtt_us: None,
            trust: Trust::Unknown,
            pinned: false,
            banned: false,
            was_connected: false,
        }
    }

    /// Trusted if pinned, Known if ever connected, else Unknown. Called after every change.
    pub fn refresh_trust(&mut self) {
        self.trust = if self.pinned {
            Trust::Trusted
        } else if self.connect_count > 0 {
            Trust::Known
        } else {
            Trust::Unknown
        };
    }

    /// The control API's view of this peer; `connected` comes from the swarm, not the store.
    pub fn to_info(&self, connected: bool) -> types::PeerInfo {
        types::PeerInfo {
            peer_id: self.peer_id.clone(),
            connected,
            addrs: self
                .addrs
                .iter()
                .map(|a| types::PeerAddr {
                    addr: a.addr.clone(),
                    source: a.source.into(),
                    last_success_ms: a.last_success_ms,
                })
                .collect(),
            protocols: self.protocols.clone(),
            agent: self.agent.clone(),
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            connect_count: self.connect_count,
            last_rtt_us: self.last_rtt_us,
            trust: self.trust.into(),
            pinned: self.pinned,
            banned: self.banned,
        }
    }
}

impl From<Trust> for types::Trust {
    fn from(t: Trust) -> Self {
        match t {
            Trust::Unknown => types::Trust::Unknown,
            Trust::Known => types::Trust::Known,
            Trust::Trusted => types::Trust::Trusted,
        }
    }
}

impl From<AddrSource> for types::AddrSource {
    fn from(s: AddrSource) -> Self {
        match s {
            AddrSource::Mdns => types::AddrSource::Mdns,
            AddrSource::Dht => types::AddrSource::Dht,
            AddrSource::Identify => types::AddrSource::Identify,
            AddrSource::Manual => types::AddrSource::Manual,
            AddrSource::Connection => types::AddrSource::Connection,
        }
    }
}

impl From<types::AddrSource> for AddrSource {
    fn from(s: types::AddrSource) -> Self {
        match s {
            types::AddrSource::Mdns => AddrSource::Mdns,
            types::AddrSource::Dht => AddrSource::Dht,
            types::AddrSource::Identify => AddrSource::Identify,
            types::AddrSource::Manual => AddrSource::Manual,
            types::AddrSource::Connection => AddrSource::Connection,
        }
    }
}

impl From<Direction> for types::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Inbound => types::Direction::Inbound,
            Direction::Outbound => types::Direction::Outbound,
        }
    }
}

impl From<types::Direction> for Direction {
    fn from(d: types::Direction) -> Self {
        match d {
            types::Direction::Inbound => Direction::Inbound,
            types::Direction::Outbound => Direction::Outbound,
        }
    }
}

impl From<HistoryEntry> for types::ConnectionRecord {
    fn from(h: HistoryEntry) -> Self {
        types::ConnectionRecord {
            peer_id: h.peer_id,
            addr: h.addr,
            direction: h.direction.into(),
            opened_ms: h.opened_ms,
            closed_ms: h.closed_ms,
            close_reason: h.close_reason,
        }
    }
}

impl From<AuditEntry> for types::AuditRecord {
    fn from(a: AuditEntry) -> Self {
        types::AuditRecord {
            at_ms: a.at_ms,
            uid: a.uid,
            pid: a.pid,
            action: a.action,
            detail: a.detail,
            result: a.result,
        }
    }
}
