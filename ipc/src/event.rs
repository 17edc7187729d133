//! The daemon's event stream. Every event gets the next sequence number from the daemon's
//! event log; clients long-poll with the last number they saw and get exactly what followed.

use serde::{Deserialize, Serialize};

use crate::transfer::{TransferDirection, TransferState};
use crate::types::{AddrSource, Direction, DiscoveryState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Strictly increasing by one for each event of a daemon's lifetime.
    pub seq: u64,
    pub at_ms: u64,
    pub event: Event,
}

/// Something that happened. Internally tagged so that its JSON form reads `{"type": "peer_connected", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    PeerDiscovered {
        peer_id: String,
        addrs: Vec<String>,
        source: AddrSource,
    },
    PeerConnected {
        peer_id: String,
        addr: String,
        direction: Direction,
    },
    PeerDisconnected {
        peer_id: String,
        reason: Option<String>,
    },
    PeerIdentified {
        peer_id: String,
        agent: String,
        protocols: Vec<String>,
    },
    /// Sent at most once per peer per rate-limit window, and only when the RTT moved noticeably.
    PeerRtt {
        peer_id: String,
        rtt_us: u64,
    },
    /// Pin, ban or trust of a peer changed.
    PeerUpdated {
        peer_id: String,
        pinned: bool,
        banned: bool,
    },
    ListenAddrAdded {
        addr: String,
    },
    ListenAddrRemoved {
        addr: String,
    },
    DiscoveryChanged {
        state: DiscoveryState,
    },
    /// A transfer was created or changed state.
    TransferUpdated {
        id: String,
        direction: TransferDirection,
        state: TransferState,
        peer_id: String,
    },
    /// Bytes moved; sent at most a few times a second per transfer.
    TransferProgress {
        id: String,
        bytes_done: u64,
        bytes_total: u64,
        rate_bps: u64,
    },
}

impl Event {
    /// The peer this event is about, if any; used by subscribers that follow one peer.
    pub fn peer_id(&self) -> Option<&str> {
        match self {
            Event::PeerDiscovered { peer_id, .. }
            | Event::PeerConnected { peer_id, .. }
            | Event::PeerDisconnected { peer_id, .. }
            | Event::PeerIdentified { peer_id, .. }
            | Event::PeerRtt { peer_id, .. }
            | Event::PeerUpdated { peer_id, .. }
            | Event::TransferUpdated { peer_id, .. } => Some(peer_id),
            Event::ListenAddrAdded { .. }
            | Event::ListenAddrRemoved { .. }
            | Event::DiscoveryChanged { .. }
            | Event::TransferProgress { .. } => None,
        }
    }
}

/// The answer to one `events` long poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Events with `seq > after`, oldest first, at most `max`.
    pub events: Vec<EventEnvelope>,
    /// The newest sequence number the daemon has handed out.
    pub head: u64,
    /// True when `after` is older than the retained window, or newer than `head` (the daemon
    /// restarted and numbering began again): the client must take a fresh snapshot (status,
    /// peers) and continue from `head`.
    pub resync: bool,
    /// Random per daemon start, so a client can tell a restarted daemon from the one it knew.
    pub instance: u64,
}
