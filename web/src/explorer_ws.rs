//! `/explorer`: upstream Firma-Sign's Peer Explorer socket, message for message, so that its
//! frontend client works against us unchanged.
//!
//! Client -> server: `subscribe` / `unsubscribe` `{peerId}`, `ping`, `join_group` / `leave_group`
//! `{groupId}` and `message {groupId, content}` (explorer_groups.rs). Server -> client: `connected`,
//! `subscribed`, `unsubscribed`, `joined_group`, `left_group`, `message:sent`, `message:received`,
//! `pong`, `error`, and what the feed (explorer_feed.rs) publishes: `peer:status`, `transfer:sent`
//! and `transfer:received` to subscribers of that peer, `peer:discovered` (an `EnhancedPeer`) and
//! `transport:status` (upstream's `active | inactive | error | connecting`) to everyone.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use futures::SinkExt as _;
use rand::RngCore as _;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Grant;
use crate::explorer_feed::{Audience, Outgoing};
use crate::explorer_groups::{MAX_CONTENT, MAX_GROUP_ID, Membership};
use crate::metrics::{GaugeGuard, inc};
use crate::state::{AppState, now_ms};
use crate::ws::{Beat, Heartbeat, Presence, admit, close_for_session_end, close_for_shutdown, finish_close, is_ping};
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
    JoinGroup(String),
    LeaveGroup(String),
    GroupMessage {
        group: String,
        content: String,
    },
    /// A `message` to a peer: there is no P2P message protocol to carry it.
    PeerMessage,
    Unknown(String),
    Invalid,
    /// Well-formed, but a field is over its bound (the text says which).
    TooLarge(String),
}

fn parse(text: &str) -> Incoming {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Incoming::Invalid;
    };
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Incoming::Invalid;
    };
    let field = |name: &str| v.get(name).and_then(Value::as_str).filter(|p| !p.is_empty());
    let peer = || field("peerId").filter(|p| p.len() <= MAX_PEER_ID).map(str::to_owned);
    let group = || match field("groupId") {
        None => Err(Incoming::Invalid),
        Some(g) if g.len() > MAX_GROUP_ID => Err(Incoming::TooLarge(format!("groupId is over {MAX_GROUP_ID} bytes"))),
        Some(g) => Ok(g.to_owned()),
    };
    match kind {
        "subscribe" => peer().map_or(Incoming::Invalid, Incoming::Subscribe),
        "unsubscribe" => peer().map_or(Incoming::Invalid, Incoming::Unsubscribe),
        "ping" => Incoming::Ping,
        "join_group" => group().map_or_else(|e| e, Incoming::JoinGroup),
        "leave_group" => group().map_or_else(|e| e, Incoming::LeaveGroup),
        "message" => {
            let content = v.get("content").and_then(Value::as_str).unwrap_or_default();
            if content.len() > MAX_CONTENT {
                return Incoming::TooLarge(format!("content is over {MAX_CONTENT} bytes"));
            }
            if field("groupId").is_some() {
                return group().map_or_else(
                    |e| e,
                    |group| Incoming::GroupMessage {
                        group,
                        content: content.to_owned(),
                    },
                );
            }
            if field("peerId").is_some() {
                return Incoming::PeerMessage;
            }
            Incoming::Invalid
        }
        other => Incoming::Unknown(other.chars().take(64).collect()),
    }
}

struct Client {
    socket: Split,
    state: AppState,
    client_id: String,
    subscriptions: HashSet<String>,
    groups: Membership,
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
            Incoming::JoinGroup(group) => match self.groups.join(&group) {
                Ok(()) => self.send_json(json!({"type": "joined_group", "groupId": group})).await,
                Err(e) => self.error(&e).await,
            },
            Incoming::LeaveGroup(group) => {
                self.groups.leave(&group);
                self.send_json(json!({"type": "left_group", "groupId": group})).await
            }
            Incoming::GroupMessage { group, content } => match self.groups.send(&group, &content, &self.client_id) {
                Ok(sent) => self.send_json(sent).await,
                Err(e) => self.error(&e).await,
            },
            Incoming::PeerMessage => {
                self.error(
                    "Failed to send message: firma-transportd has no P2P message protocol; join a group \
                     (join_group) and send the message with its groupId to reach that group's members here",
                )
                .await
            }
            Incoming::Unknown(kind) => self.error(&format!("Unknown message type: {kind}")).await,
            Incoming::Invalid => self.error("Invalid message format").await,
            Incoming::TooLarge(what) => self.error(&format!("Invalid message format: {what}")).await,
        }
    }

    async fn on_feed(&mut self, out: &Outgoing) -> Result<(), Stop> {
        let to_me = match &out.audience {
            Audience::Everyone => true,
            Audience::Subscribers(peer) => self.subscriptions.contains(peer),
        };
        if to_me {
            self.send(out.json.clone()).await?;
        }
        Ok(())
    }

    async fn serve(&mut self) -> Result<(), Stop> {
        let mut rx = self.state.explorer.subscribe();
        self.send_json(json!({"type": "connected", "clientId": self.client_id, "timestamp": now_ms()}))
            .await?;
        let status = self.state.explorer.transport_status().await;
        self.send(status).await?;
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
                Some(text) = self.groups.inbox.recv() => self.send(text).await?,
                p = rx.recv() => match p {
                    Ok(out) => self.on_feed(&out).await?,
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
    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let client_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut client = Client {
        socket: split(socket),
        state: state.clone(),
        client_id: format!("client-{client_id}"),
        subscriptions: HashSet::new(),
        groups: Membership::new(state.groups.clone()),
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
    match end {
        Err(Stop { shutdown: true }) => close_for_shutdown(&mut client.socket.sink, &state).await,
        _ if session_ended => close_for_session_end(&mut client.socket.sink).await,
        _ => finish_close(&mut client.socket.sink).await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
            Incoming::JoinGroup("g".into())
        );
        assert_eq!(
            parse(r#"{"type":"leave_group","groupId":"g"}"#),
            Incoming::LeaveGroup("g".into())
        );
        assert_eq!(
            parse(r#"{"type":"message","groupId":"g","content":"hi"}"#),
            Incoming::GroupMessage {
                group: "g".into(),
                content: "hi".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"message","peerId":"12D3","content":"hi"}"#),
            Incoming::PeerMessage
        );
        let long = "x".repeat(MAX_GROUP_ID + 1);
        assert!(matches!(
            parse(&json!({"type": "join_group", "groupId": long}).to_string()),
            Incoming::TooLarge(_)
        ));
        let big = "x".repeat(MAX_CONTENT + 1);
        assert!(matches!(
            parse(&json!({"type": "message", "groupId": "g", "content": big}).to_string()),
            Incoming::TooLarge(_)
        ));
        assert_eq!(parse(r#"{"type":"join_group"}"#), Incoming::Invalid);
        assert_eq!(parse(r#"{"type":"dance"}"#), Incoming::Unknown("dance".into()));
        assert_eq!(parse("not json"), Incoming::Invalid);
        assert_eq!(parse(r#"{"type":"subscribe"}"#), Incoming::Invalid);
    }
}
