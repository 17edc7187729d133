//! What `/explorer` clients are told, computed once for all of them.
//!
//! One task (`ExplorerFeed::run`) follows the daemon link's broadcast and turns each event into
//! upstream's message, asking the daemon for what the message needs (the peer record behind
//! `peer:discovered`, the document count of `transfer:received`, the connection count of
//! `transport:status`). It publishes each message once on a bounded broadcast; every `/explorer`
//! client holds a receiver and only filters by its subscriptions. A thousand clients so cost one
//! daemon call per event, not a thousand, and a slow client falls behind alone.
//!
//! `transport:status` on `/explorer` uses upstream's values: `active` (daemon reachable, P2P
//! listening), `inactive` (reachable, no listen address), `connecting` (no answer from the daemon
//! yet since this process started), `error` (daemon unreachable; `details.error` says why), with
//! `details.connections` = peers with an open P2P connection. It is sent on connect, when the
//! daemon comes or goes, and (coalesced, at most once per `STATUS_MIN_INTERVAL`) when peers connect
//! or disconnect. `/ws` keeps its own `online | offline` values (see ws.rs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use firma_ipc::event::Event;
use firma_ipc::transfer::{TransferDirection, TransferFilter, TransferState};
use firma_ipc::types::{PeerInfo, Trust};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::daemon_link::{DaemonLink, Published, ctx};
use crate::state::now_ms;

/// Connection churn is summed up in one `transport:status` per this interval at most.
const STATUS_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Everyone,
    /// Clients subscribed to this peer.
    Subscribers(String),
}

#[derive(Debug)]
pub struct Outgoing {
    pub audience: Audience,
    pub json: Utf8Bytes,
}

/// Transfers exchanged with one peer, for `EnhancedPeer.transferHistory`.
#[derive(Debug, Default, Clone, Copy)]
struct PeerHistory {
    sent: u64,
    received: u64,
    last_ms: u64,
    bytes: u64,
}

pub struct ExplorerFeed {
    link: Arc<DaemonLink>,
    tx: broadcast::Sender<Arc<Outgoing>>,
}

impl ExplorerFeed {
    /// `queue` bounds how far one client may fall behind before it is told it lagged.
    pub fn new(link: Arc<DaemonLink>, queue: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(queue.max(16));
        Arc::new(Self { link, tx })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Outgoing>> {
        self.tx.subscribe()
    }

    /// `transport:status` as of now (what a client gets right after `connected`).
    pub async fn transport_status(&self) -> Utf8Bytes {
        let link = &self.link;
        let st = link.status();
        let (status, details) = if !st.online {
            let status = if st.attempts == 0 { "connecting" } else { "error" };
            (status, json!({"connections": 0, "error": st.detail}))
        } else {
            let asked = async {
                let c = link.client()?;
                link.finish(c.status(ctx()).await)
            };
            match asked.await {
                Ok(s) => {
                    let status = if s.listen_addrs.is_empty() {
                        "inactive"
                    } else {
                        "active"
                    };
                    (
                        status,
                        json!({"connections": s.connected_peers, "listenAddrs": s.listen_addrs}),
                    )
                }
                Err(e) => ("error", json!({"connections": 0, "error": e.message})),
            }
        };
        Utf8Bytes::from(
            json!({"type": "transport:status", "transport": "p2p", "status": status, "details": details,
                   "timestamp": now_ms()})
            .to_string(),
        )
    }

    fn publish(&self, audience: Audience, json: Utf8Bytes) {
        // No receiver (no client) is not an error.
        let _ = self.tx.send(Arc::new(Outgoing { audience, json }));
    }

    async fn publish_status(&self) {
        let status = self.transport_status().await;
        self.publish(Audience::Everyone, status);
    }

    /// Follow the daemon link until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut rx = self.link.subscribe();
        let mut history: Option<HashMap<String, PeerHistory>> = None;
        let mut status_due: Option<Instant> = None;
        let mut last_status = Instant::now();
        loop {
            let due = status_due;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                    status_due = None;
                    last_status = Instant::now();
                    self.publish_status().await;
                }
                p = rx.recv() => match p {
                    Ok(p) => match &*p {
                        Published::Event { event, .. } => {
                            if matches!(event, Event::PeerConnected { .. } | Event::PeerDisconnected { .. }) {
                                status_due.get_or_insert(last_status + STATUS_MIN_INTERVAL);
                            }
                            if matches!(event, Event::TransferUpdated { .. }) {
                                history = None;
                            }
                            self.on_event(event, &mut history).await;
                        }
                        Published::Daemon { .. } | Published::Resync { .. } => {
                            history = None;
                            last_status = Instant::now();
                            self.publish_status().await;
                        }
                    },
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "the explorer feed fell behind the daemon's events");
                        rx = rx.resubscribe();
                        history = None;
                        status_due.get_or_insert_with(Instant::now);
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    async fn on_event(&self, event: &Event, history: &mut Option<HashMap<String, PeerHistory>>) {
        let Some((mut msg, audience)) = translate(event, now_ms()) else {
            return;
        };
        match event {
            Event::PeerDiscovered { peer_id, addrs, .. } => {
                let info = self.peer(peer_id).await;
                if history.is_none() {
                    *history = self.history().await;
                }
                let h = history
                    .as_ref()
                    .and_then(|h| h.get(peer_id).copied())
                    .unwrap_or_default();
                msg["peer"] = enhanced_peer(peer_id, addrs, info.as_ref(), h);
            }
            Event::TransferUpdated { id, .. } if msg["type"] == "transfer:received" => {
                msg["transfer"]["documentCount"] = self.document_count(id).await.into();
            }
            _ => {}
        }
        self.publish(audience, Utf8Bytes::from(msg.to_string()));
    }

    async fn peer(&self, peer_id: &str) -> Option<PeerInfo> {
        let c = self.link.client().ok()?;
        self.link.finish(c.peer(ctx(), peer_id.to_owned()).await).ok()
    }

    /// Transfers per peer, from the daemon's list (kept until a transfer changes).
    async fn history(&self) -> Option<HashMap<String, PeerHistory>> {
        let c = self.link.client().ok()?;
        let all = self.link.finish(c.transfers(ctx(), TransferFilter::All).await).ok()?;
        let mut by_peer: HashMap<String, PeerHistory> = HashMap::new();
        for t in all {
            let h = by_peer.entry(t.peer_id).or_default();
            match t.direction {
                TransferDirection::Outgoing => h.sent += 1,
                TransferDirection::Incoming => h.received += 1,
            }
            h.last_ms = h.last_ms.max(t.created_ms);
            h.bytes += t.bytes_total;
        }
        Some(by_peer)
    }

    /// Documents in a transfer, for upstream's `transfer:received`; 0 if the daemon cannot say.
    async fn document_count(&self, id: &str) -> usize {
        let Ok(c) = self.link.client() else { return 0 };
        self.link
            .finish(c.transfer(ctx(), id.to_owned()).await)
            .map_or(0, |t| t.documents.len())
    }
}

/// Milliseconds since the epoch as RFC 3339 (upstream's `Date` fields travel as such strings).
fn iso(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Upstream's `EnhancedPeer` for a discovered peer: what the daemon knows of it, and empty or
/// absent fields for what it cannot know (names, e-mail and other identifiers, organisation).
fn enhanced_peer(peer_id: &str, discovered: &[String], info: Option<&PeerInfo>, h: PeerHistory) -> Value {
    let mut addresses: Vec<String> = discovered.to_vec();
    if let Some(i) = info {
        for a in &i.addrs {
            if !addresses.contains(&a.addr) {
                addresses.push(a.addr.clone());
            }
        }
    }
    let connected = info.is_some_and(|i| i.connected);
    let link_status = if connected {
        "connected"
    } else if addresses.is_empty() {
        "offline"
    } else {
        "available"
    };
    // Known = this node has completed a Noise handshake with the peer, which proves it holds the
    // key behind the PeerId; Trusted = an operator pinned it.
    let trust = match info.map(|i| i.trust) {
        Some(Trust::Trusted) => "trusted",
        Some(Trust::Known) => "identity_verified",
        Some(Trust::Unknown) | None => "unverified",
    };
    let mut p2p = json!({
        "status": link_status,
        "addresses": addresses,
        "verified": info.is_some_and(|i| i.trust != Trust::Unknown),
    });
    if let Some(rtt) = info.and_then(|i| i.last_rtt_us) {
        p2p["latency"] = json!(rtt as f64 / 1000.0);
    }
    // A peer the store has no record of yet was seen just now, by this discovery.
    let last_seen = info.map_or_else(now_ms, |i| i.last_seen_ms);
    p2p["lastSeen"] = iso(last_seen).into();
    let display_name = info
        .and_then(|i| i.agent.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| short_id(peer_id));
    let mut history = json!({"sent": h.sent, "received": h.received, "totalBytes": h.bytes});
    if h.last_ms > 0 {
        history["lastTransfer"] = iso(h.last_ms).into();
    }
    json!({
        // Kept from before the EnhancedPeer shape, for clients that read them.
        "id": peer_id,
        "addresses": discovered,
        "transport": "p2p",
        "peerId": peer_id,
        "displayName": display_name,
        "identifiers": {"p2p": peer_id},
        "transports": {"p2p": p2p},
        "availableTransports": if addresses.is_empty() { json!([]) } else { json!(["p2p"]) },
        "status": if connected { "online" } else { "offline" },
        "trustLevel": trust,
        "transferHistory": history,
        "capabilities": {
            // What the peer accepts is its own setting and not announced: 0 says unknown.
            "maxFileSize": 0,
            // Every libp2p connection is Noise-encrypted end to end.
            "supportsEncryption": true,
            // firma-transportd has no P2P message protocol (messages stay on this server's groups).
            "supportsMessaging": false,
            "supportedTransports": ["p2p"],
        },
        "metadata": {},
    })
}

/// `12D3KooW…abcdef`: a PeerId short enough for a list.
fn short_id(peer_id: &str) -> String {
    let n = peer_id.chars().count();
    if n <= 16 {
        return peer_id.to_owned();
    }
    let head: String = peer_id.chars().take(8).collect();
    let tail: String = peer_id.chars().skip(n - 6).collect();
    format!("{head}…{tail}")
}

/// The upstream message for a daemon event and who gets it; `None` for events upstream has no
/// message for. `peer:discovered` is completed by the feed with the peer record.
fn translate(event: &Event, at_ms: u64) -> Option<(Value, Audience)> {
    let to_peer = |p: &str| Audience::Subscribers(p.to_owned());
    match event {
        Event::PeerConnected { peer_id, .. } => Some((
            json!({"type": "peer:status", "peerId": peer_id, "status": "online", "transport": "p2p", "timestamp": at_ms}),
            to_peer(peer_id),
        )),
        Event::PeerDisconnected { peer_id, .. } => Some((
            json!({"type": "peer:status", "peerId": peer_id, "status": "offline", "transport": "p2p", "timestamp": at_ms}),
            to_peer(peer_id),
        )),
        Event::PeerDiscovered { peer_id, .. } => Some((
            json!({"type": "peer:discovered", "peer": {"peerId": peer_id}, "timestamp": at_ms}),
            Audience::Everyone,
        )),
        Event::TransferUpdated {
            id,
            direction: TransferDirection::Outgoing,
            state: TransferState::Sent,
            peer_id,
        } => Some((
            json!({"type": "transfer:sent", "transferId": id, "peerId": peer_id, "timestamp": at_ms}),
            to_peer(peer_id),
        )),
        Event::TransferUpdated {
            id,
            direction: TransferDirection::Incoming,
            state: TransferState::Received,
            peer_id,
        } => Some((
            json!({"type": "transfer:received",
                   "transfer": {"transferId": id, "peerId": peer_id, "documentCount": 0, "transport": "p2p"},
                   "timestamp": at_ms}),
            to_peer(peer_id),
        )),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use firma_ipc::types::{AddrSource, Direction, PeerAddr};

    #[test]
    fn translates_events_to_upstream_shapes() {
        let ev = Event::PeerConnected {
            peer_id: "p1".into(),
            addr: "/ip4/1".into(),
            direction: Direction::Outbound,
        };
        let (msg, to) = translate(&ev, 5).unwrap();
        assert_eq!(to, Audience::Subscribers("p1".into()));
        assert_eq!(
            msg,
            json!({"type":"peer:status","peerId":"p1","status":"online","transport":"p2p","timestamp":5})
        );
        let ev = Event::PeerDiscovered {
            peer_id: "p2".into(),
            addrs: vec!["/ip4/2".into()],
            source: AddrSource::Mdns,
        };
        let (msg, to) = translate(&ev, 6).unwrap();
        assert_eq!(to, Audience::Everyone);
        assert_eq!(msg["type"], "peer:discovered");
        assert!(translate(&Event::ListenAddrAdded { addr: "a".into() }, 1).is_none());
        let update = |id: &str, direction, state, peer: &str| Event::TransferUpdated {
            id: id.into(),
            direction,
            state,
            peer_id: peer.into(),
        };
        let (msg, _) = translate(&update("t1", TransferDirection::Outgoing, TransferState::Sent, "p3"), 7).unwrap();
        assert_eq!(
            msg,
            json!({"type":"transfer:sent","transferId":"t1","peerId":"p3","timestamp":7})
        );
        let received = update("t2", TransferDirection::Incoming, TransferState::Received, "p4");
        let (msg, to) = translate(&received, 8).unwrap();
        assert_eq!(to, Audience::Subscribers("p4".into()));
        assert_eq!(msg["transfer"]["transferId"], "t2");
        let sending = update("t3", TransferDirection::Outgoing, TransferState::Sending, "p5");
        assert!(translate(&sending, 9).is_none());
    }

    #[test]
    fn enhanced_peer_fills_what_the_daemon_knows() {
        let info = PeerInfo {
            peer_id: "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz".into(),
            connected: true,
            addrs: vec![PeerAddr {
                addr: "/ip4/127.0.0.1/tcp/2".into(),
                source: AddrSource::Identify,
                last_success_ms: Some(1),
            }],
            protocols: vec![],
            agent: None,
            first_seen_ms: 1,
            last_seen_ms: 1_764_201_600_000,
            connect_count: 1,
            last_rtt_us: Some(1500),
            trust: Trust::Known,
            pinned: false,
            banned: false,
        };
        let h = PeerHistory {
            sent: 2,
            received: 1,
            last_ms: 1_764_201_600_000,
            bytes: 10,
        };
        let p = enhanced_peer(&info.peer_id, &["/ip4/127.0.0.1/tcp/1".into()], Some(&info), h);
        assert_eq!(p["peerId"], info.peer_id.as_str());
        assert_eq!(p["displayName"], "12D3KooW…UvWxYz");
        assert_eq!(p["identifiers"], json!({"p2p": info.peer_id}));
        assert_eq!(p["status"], "online");
        assert_eq!(p["trustLevel"], "identity_verified");
        let t = &p["transports"]["p2p"];
        assert_eq!(t["status"], "connected");
        assert_eq!(t["latency"], 1.5);
        assert_eq!(t["addresses"].as_array().unwrap().len(), 2);
        assert_eq!(t["lastSeen"], "2025-11-27T00:00:00.000Z");
        assert_eq!(
            p["transferHistory"],
            json!({"sent": 2, "received": 1, "totalBytes": 10, "lastTransfer": "2025-11-27T00:00:00.000Z"})
        );
        assert_eq!(p["availableTransports"], json!(["p2p"]));
        let unknown = enhanced_peer("p", &[], None, PeerHistory::default());
        assert_eq!(unknown["status"], "offline");
        assert_eq!(unknown["trustLevel"], "unverified");
        assert_eq!(unknown["transports"]["p2p"]["status"], "offline");
        assert!(unknown["transferHistory"].get("lastTransfer").is_none());
    }
}
