//! `/explorer`: upstream Firma-Sign's Peer Explorer socket, message for message, so that its
//! frontend client works against us unchanged.
//!
//! Client -> server: `subscribe` / `unsubscribe` `{peerId}`, `ping`; upstream's `join_group`,
//! `leave_group` and `message` get an `error` until groups exist. Server -> client: `connected`,
//! `subscribed`, `unsubscribed`, `peer:status` (to subscribers of that peer), `peer:discovered` and
//! `transport:status` (to everyone), `transfer:sent` (to subscribers of the recipient, when an
//! outgoing transfer reaches `sent`), `transfer:received` (to subscribers of the sender, when an
//! incoming one reaches `received`; its document count is asked of the daemon), `pong`, `error`.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use firma_ipc::event::Event;
use firma_ipc::transfer::{TransferDirection, TransferState};
use futures::SinkExt as _;
use rand::RngCore as _;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Grant;
use crate::daemon_link::{Published, ctx};
use crate::metrics::{GaugeGuard, inc};
use crate::state::{AppState, now_ms};
use crate::ws::{
    Beat, Heartbeat, Presence, admit, close_for_session_end, close_for_shutdown, is_ping, transport_status,
};
use crate::ws_split::{Inbound, Split, split};

/// Peers one client may follow at once.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Longest peer id accepted in a subscription (real ones are about 52 characters).
const MAX_PEER_ID: usize = 128;

pub async fn handler(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = match admit(&state, ws) {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let tasks = state.ws_tasks.clone();
    ws.on_upgrade(move |socket| tasks.track_future(run(socket, state, grant)))
}

/// What a client sent, as upstream's server reads it.
#[derive(Debug, PartialEq)]
enum Incoming {
    Subscribe(String),
    Unsubscribe(String),
    Ping,
    Unsupported(String),
    Unknown(String),
    Invalid,
}

fn parse(text: &str) -> Incoming {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Incoming::Invalid;
    };
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Incoming::Invalid;
    };
    let peer = || {
        v.get("peerId")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && p.len() <= MAX_PEER_ID)
            .map(str::to_owned)
    };
    match kind {
        "subscribe" => peer().map_or(Incoming::Invalid, Incoming::Subscribe),
        "unsubscribe" => peer().map_or(Incoming::Invalid, Incoming::Unsubscribe),
        "ping" => Incoming::Ping,
        "join_group" | "leave_group" | "message" => Incoming::Unsupported(kind.to_owned()),
        other => Incoming::Unknown(other.chars().take(64).collect()),
    }
}

/// The upstream message for a daemon event, and whether it goes to everyone (else to the peer's
/// subscribers only). `None` for events upstream has no message for.
fn translate(event: &Event, at_ms: u64) -> Option<(Value, bool)> {
    match event {
        Event::PeerConnected { peer_id, .. } => Some((
            json!({"type": "peer:status", "peerId": peer_id, "status": "online", "transport": "p2p", "timestamp": at_ms}),
            false,
        )),
        Event::PeerDisconnected { peer_id, .. } => Some((
            json!({"type": "peer:status", "peerId": peer_id, "status": "offline", "transport": "p2p", "timestamp": at_ms}),
            false,
        )),
        Event::PeerDiscovered { peer_id, addrs, source } => Some((
            json!({"type": "peer:discovered",
                   "peer": {"id": peer_id, "peerId": peer_id, "addresses": addrs, "source": source, "transport": "p2p"},
                   "timestamp": at_ms}),
            true,
        )),
        Event::TransferUpdated {
            id,
            direction: TransferDirection::Outgoing,
            state: TransferState::Sent,
            peer_id,
        } => Some((
            json!({"type": "transfer:sent", "transferId": id, "peerId": peer_id, "timestamp": at_ms}),
            false,
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
            false,
        )),
        _ => None,
    }
}

/// Documents in a transfer, for upstream's `transfer:received`; 0 if the daemon cannot say.
async fn document_count(state: &AppState, id: &str) -> usize {
    let link = &state.link;
    let Ok(c) = link.client() else { return 0 };
    link.finish(c.transfer(ctx(), id.to_owned()).await)
        .map_or(0, |t| t.documents.len())
}

struct Client {
    socket: Split,
    state: AppState,
    subscriptions: HashSet<String>,
}

/// The client is gone or the server stops; either way the loop ends.
struct Stop {
    shutdown: bool,
}

impl Client {
    async fn send(&mut self, text: Utf8Bytes) -> Result<(), Stop> {
        self.socket
            .sink
            .send(Message::Text(text))
            .await
            .map_err(|_| Stop { shutdown: false })?;
        inc(&self.state.metrics.ws_messages_sent);
        Ok(())
    }

    async fn send_json(&mut self, v: Value) -> Result<(), Stop> {
        self.send(Utf8Bytes::from(v.to_string())).await
    }

    async fn error(&mut self, message: &str) -> Result<(), Stop> {
        self.send_json(json!({"type": "error", "error": message})).await
    }

    fn set_subscribed(&mut self, peer: String, on: bool) -> bool {
        let changed = if on {
            self.subscriptions.insert(peer)
        } else {
            self.subscriptions.remove(&peer)
        };
        if changed {
            let stat = &self.state.ws_stats.subscriptions;
            if on {
                stat.fetch_add(1, Ordering::Relaxed)
            } else {
                stat.fetch_sub(1, Ordering::Relaxed)
            };
        }
        changed
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Stop> {
        if is_ping(text) {
            return self.send_json(json!({"type": "pong", "timestamp": now_ms()})).await;
        }
        match parse(text) {
            Incoming::Subscribe(peer) => {
                if self.subscriptions.len() >= MAX_SUBSCRIPTIONS && !self.subscriptions.contains(&peer) {
                    return self
                        .error(&format!("Too many subscriptions (at most {MAX_SUBSCRIPTIONS})"))
                        .await;
                }
                self.set_subscribed(peer.clone(), true);
                self.send_json(json!({"type": "subscribed", "peerId": peer})).await
            }
            Incoming::Unsubscribe(peer) => {
                self.set_subscribed(peer.clone(), false);
                self.send_json(json!({"type": "unsubscribed", "peerId": peer})).await
            }
            Incoming::Ping => self.send_json(json!({"type": "pong", "timestamp": now_ms()})).await,
            Incoming::Unsupported(kind) => self.error(&format!("{kind} is not supported yet")).await,
            Incoming::Unknown(kind) => self.error(&format!("Unknown message type: {kind}")).await,
            Incoming::Invalid => self.error("Invalid message format").await,
        }
    }

    async fn on_published(&mut self, p: &Published) -> Result<(), Stop> {
        match p {
            Published::Event { event, .. } => {
                let Some((mut msg, to_all)) = translate(event, now_ms()) else {
                    return Ok(());
                };
                if to_all || event.peer_id().is_some_and(|id| self.subscriptions.contains(id)) {
                    if let Event::TransferUpdated { id, .. } = event
                        && msg["type"] == "transfer:received"
                    {
                        msg["transfer"]["documentCount"] = document_count(&self.state, id).await.into();
                    }
                    self.send_json(msg).await?;
                }
                Ok(())
            }
            Published::Daemon { online } => self.send(transport_status(*online)).await,
            Published::Resync { .. } => Ok(()),
        }
    }

    async fn serve(&mut self) -> Result<(), Stop> {
        let mut rx = self.state.link.subscribe();
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let client_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        self.send_json(json!({"type": "connected", "clientId": format!("client-{client_id}"), "timestamp": now_ms()}))
            .await?;
        self.send(transport_status(self.state.link.status().online)).await?;
        let shutdown = self.state.shutdown.token().clone();
        let mut beat = Heartbeat::new(self.state.config.ws_ping_interval);
        let mut ticker = tokio::time::interval(self.state.config.ws_ping_interval / 2);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop { shutdown: true }),
                msg = self.socket.recv() => {
                    beat.heard();
                    match msg {
                        Inbound::Text(t) => self.on_text(t.as_str()).await?,
                        Inbound::Binary => self.error("Invalid message format").await?,
                        Inbound::Control => {}
                        Inbound::Gone => return Err(Stop { shutdown: false }),
                    }
                }
                p = rx.recv() => match p {
                    Ok(p) => self.on_published(&p).await?,
                    Err(RecvError::Lagged(missed)) => {
                        inc(&self.state.metrics.ws_lagged);
                        rx = rx.resubscribe();
                        self.error(&format!("Lagged: {missed} events were dropped; reload peer state")).await?;
                    }
                    Err(RecvError::Closed) => return Err(Stop { shutdown: true }),
                },
                _ = ticker.tick() => match beat.tick() {
                    Beat::Quiet => {}
                    Beat::Ping => self.socket.sink.send(Message::Ping(Default::default())).await.map_err(|_| Stop { shutdown: false })?,
                    Beat::Dead => return Err(Stop { shutdown: false }),
                },
            }
        }
    }
}

async fn run(socket: WebSocket, state: AppState, grant: Grant) {
    let _gauge = GaugeGuard::new(&state.metrics.explorer_clients);
    let _presence = Presence::new(&state);
    let mut client = Client {
        socket: split(socket),
        state: state.clone(),
        subscriptions: HashSet::new(),
    };
    // Shutdown also interrupts a send stuck on a client that stopped reading (see ws.rs).
    let shutdown = state.shutdown.token().clone();
    let mut session_ended = false;
    let end = tokio::select! {
        end = client.serve() => end,
        _ = shutdown.cancelled() => Err(Stop { shutdown: true }),
        _ = grant.ended() => {
            session_ended = true;
            Err(Stop { shutdown: false })
        }
    };
    let held = client.subscriptions.len() as u64;
    state.ws_stats.subscriptions.fetch_sub(held, Ordering::Relaxed);
    if let Err(Stop { shutdown: true }) = end {
        close_for_shutdown(&mut client.socket.sink, &state).await;
    } else if session_ended {
        close_for_session_end(&mut client.socket.sink).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use firma_ipc::types::{AddrSource, Direction};

    #[test]
    fn parses_upstream_messages() {
        assert_eq!(
            parse(r#"{"type":"subscribe","peerId":"12D3"}"#),
            Incoming::Subscribe("12D3".into())
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","peerId":"12D3"}"#),
            Incoming::Unsubscribe("12D3".into())
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Incoming::Ping);
        assert_eq!(
            parse(r#"{"type":"join_group","groupId":"g"}"#),
            Incoming::Unsupported("join_group".into())
        );
        assert_eq!(parse(r#"{"type":"dance"}"#), Incoming::Unknown("dance".into()));
        assert_eq!(parse("not json"), Incoming::Invalid);
        assert_eq!(parse(r#"{"type":"subscribe"}"#), Incoming::Invalid);
    }

    #[test]
    fn translates_events_to_upstream_shapes() {
        let ev = Event::PeerConnected {
            peer_id: "p1".into(),
            addr: "/ip4/1".into(),
            direction: Direction::Outbound,
        };
        let (msg, all) = translate(&ev, 5).unwrap();
        assert!(!all);
        assert_eq!(
            msg,
            json!({"type":"peer:status","peerId":"p1","status":"online","transport":"p2p","timestamp":5})
        );
        let ev = Event::PeerDiscovered {
            peer_id: "p2".into(),
            addrs: vec!["/ip4/2".into()],
            source: AddrSource::Mdns,
        };
        let (msg, all) = translate(&ev, 6).unwrap();
        assert!(all);
        assert_eq!(msg["type"], "peer:discovered");
        assert_eq!(msg["peer"]["peerId"], "p2");
        assert!(translate(&Event::ListenAddrAdded { addr: "a".into() }, 1).is_none());
        let update = |id: &str, direction, state, peer: &str| Event::TransferUpdated {
            id: id.into(),
            direction,
            state,
            peer_id: peer.into(),
        };
        let (msg, all) = translate(&update("t1", TransferDirection::Outgoing, TransferState::Sent, "p3"), 7).unwrap();
        assert!(!all);
        assert_eq!(
            msg,
            json!({"type":"transfer:sent","transferId":"t1","peerId":"p3","timestamp":7})
        );
        let received = update("t2", TransferDirection::Incoming, TransferState::Received, "p4");
        let (msg, _) = translate(&received, 8).unwrap();
        assert_eq!(msg["type"], "transfer:received");
        assert_eq!(msg["transfer"]["transferId"], "t2");
        assert_eq!(msg["transfer"]["peerId"], "p4");
        let sending = update("t3", TransferDirection::Outgoing, TransferState::Sending, "p5");
        assert!(translate(&sending, 9).is_none());
    }
}
