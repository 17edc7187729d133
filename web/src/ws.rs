//! `/ws`: the full event stream, resumable.
//!
//! On connect a client gets `{"type":"snapshot","seq":N,"instance":"..","status":{..},"peers":[..]}`
//! and then every event after N as `{"seq":M,"at_ms":..,"type":"peer_connected",..}`. With
//! `?since=N` (and optionally `&instance=I` from the snapshot) it gets exactly the events after N,
//! fetched from the daemon's retained window, then the live stream; when N has left the window, or
//! the daemon restarted, it gets `{"type":"resync","reason":..}` followed by a fresh snapshot. A
//! client that falls more than the queue behind gets `resync` with reason `lagged` and a snapshot.
//! While the daemon is away clients get `{"type":"transport:status","status":"offline"}`, and
//! `online` when it is back. `ping` (plain or `{"type":"ping"}`) is answered with `{"type":"pong"}`.
//!
//! Ordering: each client subscribes to the broadcast before asking the daemon for its snapshot or
//! catch-up, and drops broadcast events at or below what it already sent, so nothing is lost or
//! repeated between the two (see the invariant in `daemon_link`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use firma_ipc::service::MAX_EVENTS_BATCH;
use firma_ipc::types::PeerFilter;
use futures::SinkExt as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::auth::Grant;
use crate::config::MAX_BODY;
use crate::daemon_link::{Published, ctx, envelope_json};
use crate::error::ApiError;
use crate::metrics::{GaugeGuard, inc};
use crate::state::{AppState, now_ms};
use crate::ws_split::{Inbound, Sink, Split, split};

/// Close code 1012 "service restart": the client should reconnect (with `since`).
pub const CLOSE_RESTART: u16 = 1012;
/// Close code 1001 "going away": the server stops.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1008 "policy violation": the session the socket was opened under ended (logout,
/// revocation, expiry); reconnecting needs a new login.
pub const CLOSE_SESSION_ENDED: u16 = 1008;
/// A client that sends more than the server's largest write buffer's worth unread is cut off
/// instead of growing memory.
pub const MAX_WRITE_BUFFER: usize = 4 * MAX_BODY;

/// How long a close frame may wait for room in a client's socket: a client that stopped reading
/// gets none, and must not lengthen a reload.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_millis(250);
/// Most queued events written before one flush.
const MAX_BURST: usize = 256;
const READ_BUFFER: usize = 8 * 1024;
const WRITE_BUFFER: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    since: Option<u64>,
    /// The daemon instance the client's numbering belongs to (from its snapshot).
    instance: Option<String>,
}

/// Refuse an upgrade when the client limit is reached; apply the message caps otherwise.
pub fn admit(state: &AppState, ws: WebSocketUpgrade) -> Result<WebSocketUpgrade, ApiError> {
    if state.ws_total() as usize >= state.config.max_ws_clients {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!(
                "this server already has {} WebSocket clients",
                state.config.max_ws_clients
            ),
        ));
    }
    // Small buffers: clients send little, and every message is flushed as it is sent, so the
    // defaults (128 KiB each way per client) would only cost memory at a thousand clients.
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_BODY)
        .max_frame_size(MAX_BODY)
        .max_write_buffer_size(MAX_WRITE_BUFFER))
}

pub async fn handler(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = match admit(&state, ws) {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let tasks = state.ws_tasks.clone();
    ws.on_upgrade(move |socket| tasks.track_future(run(socket, state, q, grant)))
}

/// The message that tells a `/ws` client whether the daemon is reachable: `online | offline`
/// (`/explorer` speaks upstream's values instead, see explorer_feed.rs).
pub fn transport_status(online: bool) -> Utf8Bytes {
    let status = if online { "online" } else { "offline" };
    Utf8Bytes::from(
        json!({"type": "transport:status", "transport": "p2p", "status": status, "timestamp": now_ms()}).to_string(),
    )
}

/// Close the socket with a code that says why: 1012 on reload (come back), 1001 on stop.
pub async fn close_for_shutdown(socket: &mut Sink, state: &AppState) {
    let (code, reason) = if state.shutdown.is_reload() {
        (CLOSE_RESTART, "service restart")
    } else {
        (CLOSE_GOING_AWAY, "server stopping")
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Close the socket because its session ended.
pub async fn close_for_session_end(socket: &mut Sink) {
    let frame = CloseFrame {
        code: CLOSE_SESSION_ENDED,
        reason: Utf8Bytes::from_static("session ended"),
    };
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// End a session the client ended (or broke): complete the close handshake. When the client sent
/// a close frame, tungstenite has queued the answering one, and only a write or flush sends it;
/// without this the client never gets it and sees 1006 instead of its own normal close.
pub async fn finish_close(socket: &mut Sink) {
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.close()).await;
}

/// Heartbeat bookkeeping shared by both sockets.
pub struct Heartbeat {
    last_heard: Instant,
    interval: Duration,
}

pub enum Beat {
    Quiet,
    Ping,
    Dead,
}

impl Heartbeat {
    pub fn new(interval: Duration) -> Self {
        Self {
            last_heard: Instant::now(),
            interval,
        }
    }
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }
    /// On each tick: ping a client idle for an interval; give up on one silent for two.
    pub fn tick(&self) -> Beat {
        let idle = self.last_heard.elapsed();
        if idle >= self.interval * 2 {
            Beat::Dead
        } else if idle >= self.interval {
            Beat::Ping
        } else {
            Beat::Quiet
        }
    }
}

/// Whether a client's text message is a heartbeat ping (`ping` or `{"type":"ping"}`).
pub fn is_ping(text: &str) -> bool {
    let t = text.trim();
    t == "ping" || serde_json::from_str::<serde_json::Value>(t).is_ok_and(|v| v["type"] == "ping")
}

/// Registers a client in the `/api/info` statistics for as long as it lives.
pub struct Presence {
    state: AppState,
    at: u64,
}

impl Presence {
    pub fn new(state: &AppState) -> Self {
        let at = now_ms();
        state.ws_stats.connected_at_sum_ms.fetch_add(at, Ordering::Relaxed);
        Self {
            state: state.clone(),
            at,
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.state
            .ws_stats
            .connected_at_sum_ms
            .fetch_sub(self.at, Ordering::Relaxed);
    }
}

/// Why a client's session ended.
enum End {
    Shutdown,
    Gone,
    SessionEnded,
}

struct Client {
    socket: Split,
    state: AppState,
    /// The newest seq this client has (snapshot or event); `None` until it has a snapshot.
    last: Option<u64>,
    /// A `since` (and instance) asked while the daemon was away: honoured when it returns.
    resume: Option<(u64, Option<String>)>,
}

impl Client {
    async fn send(&mut self, text: Utf8Bytes) -> Result<(), End> {
        self.socket
            .sink
            .send(Message::Text(text))
            .await
            .map_err(|_| End::Gone)?;
        inc(&self.state.metrics.ws_messages_sent);
        Ok(())
    }

    async fn send_json(&mut self, v: serde_json::Value) -> Result<(), End> {
        self.send(Utf8Bytes::from(v.to_string())).await
    }

    /// Send a fresh snapshot; when the daemon is unreachable, say so and wait for it to return.
    async fn snapshot(&mut self) -> Result<(), End> {
        let link = &self.state.link;
        let taken = async {
            let c = link.client()?;
            let status = link.finish(c.status(ctx()).await)?;
            let peers = link.finish(c.peers(ctx(), PeerFilter::Known).await)?;
            Ok::<_, ApiError>((status, peers))
        }
        .await;
        match taken {
            Ok((status, peers)) => {
                let instance = link.status().instance.map(|i| i.to_string());
                let head = status.event_head;
                self.last = Some(head);
                self.send_json(
                    json!({"type": "snapshot", "seq": head, "instance": instance, "status": status, "peers": peers}),
                )
                .await
            }
            Err(_) => {
                self.last = None;
                self.send(transport_status(false)).await
            }
        }
    }

    async fn resync(&mut self, reason: &str) -> Result<(), End> {
        self.send_json(json!({"type": "resync", "reason": reason, "seq": self.last}))
            .await?;
        self.snapshot().await
    }

    /// Send exactly the events after `since` from the daemon's window, or resync when it cannot.
    async fn catch_up(&mut self, since: u64, instance: Option<&str>) -> Result<(), End> {
        let link = self.state.link.clone();
        let current = link.status().instance.map(|i| i.to_string());
        if instance.is_some_and(|i| Some(i) != current.as_deref()) {
            return self.resync("daemon_restarted").await;
        }
        self.last = Some(since);
        loop {
            let after = self.last.unwrap_or(since);
            let batch = match link.client() {
                Ok(c) => link.finish(c.events(ctx(), after, MAX_EVENTS_BATCH, 0).await),
                Err(e) => Err(e),
            };
            let batch = match batch {
                Ok(b) => b,
                Err(_) => {
                    self.last = None;
                    return self.send(transport_status(false)).await;
                }
            };
            if batch.resync {
                return self.resync("window").await;
            }
            let Some(newest) = batch.events.last().map(|e| e.seq) else {
                return Ok(());
            };
            for env in &batch.events {
                if env.seq > after {
                    self.send(envelope_json(env)).await?;
                }
            }
            self.last = Some(newest);
            if newest >= batch.head {
                return Ok(());
            }
        }
    }

    async fn on_published(&mut self, p: &Published) -> Result<(), End> {
        match p {
            Published::Event { seq, json, .. } => {
                if self.last.is_some_and(|l| *seq > l) {
                    // Buffered only; the receive loop flushes after the burst.
                    self.socket
                        .sink
                        .feed(Message::Text(json.clone()))
                        .await
                        .map_err(|_| End::Gone)?;
                    inc(&self.state.metrics.ws_messages_sent);
                    self.last = Some(*seq);
                }
                Ok(())
            }
            Published::Resync { reason } => {
                if self.last.is_some() {
                    self.resync(reason).await
                } else {
                    Ok(())
                }
            }
            Published::Daemon { online } => {
                self.send(transport_status(*online)).await?;
                if !*online || self.last.is_some() {
                    return Ok(());
                }
                match self.resume.take() {
                    Some((since, instance)) => self.catch_up(since, instance.as_deref()).await,
                    None => self.snapshot().await,
                }
            }
        }
    }

    async fn on_recv(
        &mut self,
        p: Result<Arc<Published>, RecvError>,
        rx: &mut broadcast::Receiver<Arc<Published>>,
    ) -> Result<(), End> {
        match p {
            Ok(p) => self.on_published(&p).await,
            Err(RecvError::Lagged(missed)) => {
                inc(&self.state.metrics.ws_lagged);
                tracing::debug!(missed, "a /ws client fell behind; resyncing it");
                // Skip what is still queued: the snapshot supersedes it.
                *rx = rx.resubscribe();
                if self.last.is_some() {
                    self.resync("lagged").await
                } else {
                    Ok(())
                }
            }
            Err(RecvError::Closed) => Err(End::Shutdown),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        if is_ping(text) {
            return self.send_json(json!({"type": "pong"})).await;
        }
        self.send_json(json!({"type": "error", "error": "this socket only answers ping; events flow one way"}))
            .await
    }

    async fn serve(&mut self, q: WsQuery) -> Result<(), End> {
        let mut rx = self.state.link.subscribe();
        if !self.state.link.status().online {
            self.resume = q.since.map(|since| (since, q.instance.clone()));
            self.send(transport_status(false)).await?;
        } else if let Some(since) = q.since {
            self.catch_up(since, q.instance.as_deref()).await?;
        } else {
            self.snapshot().await?;
        }
        let shutdown = self.state.shutdown.token().clone();
        let mut beat = Heartbeat::new(self.state.config.ws_ping_interval);
        let mut ticker = tokio::time::interval(self.state.config.ws_ping_interval / 2);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                msg = self.socket.recv() => {
                    beat.heard();
                    match msg {
                        Inbound::Text(t) => self.on_text(t.as_str()).await?,
                        Inbound::Binary => {
                            self.send_json(json!({"type": "error", "error": "binary messages are not supported"})).await?
                        }
                        Inbound::Control => {}
                        Inbound::Gone => return Err(End::Gone),
                    }
                }
                p = rx.recv() => {
                    self.on_recv(p, &mut rx).await?;
                    // Take what else is queued already, then flush once: a burst of events costs
                    // one write instead of one per event.
                    for _ in 0..MAX_BURST {
                        let more = match rx.try_recv() {
                            Ok(p) => Ok(p),
                            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                            Err(TryRecvError::Closed) => Err(RecvError::Closed),
                            Err(TryRecvError::Empty) => break,
                        };
                        self.on_recv(more, &mut rx).await?;
                    }
                    self.socket.sink.flush().await.map_err(|_| End::Gone)?;
                }
                _ = ticker.tick() => match beat.tick() {
                    Beat::Quiet => {}
                    Beat::Ping => self.socket.sink.send(Message::Ping(Default::default())).await.map_err(|_| End::Gone)?,
                    Beat::Dead => return Err(End::Gone),
                },
            }
        }
    }
}

async fn run(socket: WebSocket, state: AppState, q: WsQuery, grant: Grant) {
    let _gauge = GaugeGuard::new(&state.metrics.ws_clients);
    let _presence = Presence::new(&state);
    let mut client = Client {
        socket: split(socket),
        state: state.clone(),
        last: None,
        resume: None,
    };
    // Shutdown also interrupts a send stuck on a client that stopped reading, so one stalled
    // client cannot hold a reload up until the drain deadline.
    let shutdown = state.shutdown.token().clone();
    let end = tokio::select! {
        end = client.serve(q) => end,
        _ = shutdown.cancelled() => Err(End::Shutdown),
        _ = grant.ended() => Err(End::SessionEnded),
    };
    match end {
        Err(End::Shutdown) => close_for_shutdown(&mut client.socket.sink, &state).await,
        Err(End::SessionEnded) => close_for_session_end(&mut client.socket.sink).await,
        _ => finish_close(&mut client.socket.sink).await,
    }
}
