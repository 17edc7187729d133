//! The web tier's one link to the daemon.
//!
//! One task (`DaemonLink::run`) owns the connection: it connects (with backoff, forever), publishes
//! the shared `ControlClient` for REST handlers, and is the only follower of the daemon's `events`
//! long poll. Every event is serialised once and sent on a bounded `broadcast` channel; each
//! WebSocket client holds a receiver, so a slow client falls behind alone (it gets `Lagged` and is
//! resynced) and memory stays bounded by the channel's capacity whatever the number of clients.
//!
//! Invariant the WebSocket handlers rely on: an event is published only after the daemon has
//! numbered it, so a client that subscribes first and then asks the daemon for a snapshot (or a
//! catch-up) sees every later event on its receiver.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use firma_ipc::client::{self, Backoff, ConnectError};
use firma_ipc::event::{Event, EventEnvelope};
use firma_ipc::service::MAX_EVENTS_BATCH;
use firma_ipc::types::Role;
use firma_ipc::{ControlClient, IpcError};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::{WebMetrics, inc};

/// The name this process gives the daemon in `hello` (it shows in the daemon's audit log).
pub const CLIENT_NAME: &str = "firma-web";
/// How long one `events` long poll may wait; well under the daemon's cap.
const POLL_WAIT_MS: u32 = 25_000;
/// Deadline of one long poll: longer than the wait, as the service contract asks.
const POLL_DEADLINE: Duration = Duration::from_secs(35);

/// What the follower hands to every WebSocket client.
#[derive(Debug)]
pub enum Published {
    /// A daemon event; `json` is the flattened envelope `{"seq":N,"at_ms":..,"type":..,..}`, built once.
    Event { seq: u64, event: Event, json: Utf8Bytes },
    /// The numbering the clients hold is void (the daemon restarted, or the follower fell out of the
    /// daemon's window): take a fresh snapshot.
    Resync { reason: &'static str },
    /// The daemon's control socket stopped or started answering.
    Daemon { online: bool },
}

/// Reachability of the daemon, for `/health` and for clients that connect while it is away.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub online: bool,
    /// Why the daemon is unreachable (names the socket), or empty while online.
    pub detail: String,
    /// Connection attempts so far; startup waits for the first one to finish.
    pub attempts: u64,
    /// The daemon's per-start random instance, while online.
    pub instance: Option<u64>,
}

/// Where the follower stands in one daemon instance's numbering.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    instance: u64,
    seq: u64,
}

pub struct DaemonLink {
    socket: PathBuf,
    /// The live client while connected. A std lock: held only to clone or swap, never across an await.
    client: RwLock<Option<ControlClient>>,
    status: watch::Sender<LinkStatus>,
    events: broadcast::Sender<Arc<Published>>,
    metrics: Arc<WebMetrics>,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

/// A deadline-carrying context for ordinary calls.
pub fn ctx() -> tarpc::context::Context {
    client::ctx(client::CALL_TIMEOUT)
}

impl DaemonLink {
    /// `queue` bounds how far one WebSocket client may fall behind before it is resynced.
    pub fn new(
        socket: PathBuf,
        queue: usize,
        reconnect_min: Duration,
        reconnect_max: Duration,
        metrics: Arc<WebMetrics>,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(queue.max(16));
        let detail = format!("connecting to the daemon at {}", socket.display());
        let (status, _) = watch::channel(LinkStatus {
            online: false,
            detail,
            attempts: 0,
            instance: None,
        });
        Arc::new(Self {
            socket,
            client: RwLock::new(None),
            status,
            events,
            metrics,
            reconnect_min,
            reconnect_max,
        })
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.events.subscribe()
    }

    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// Wait until the first connection attempt has finished (either way), at most `timeout`, so
    /// that a freshly started (or reloaded) process answers its first request with the truth.
    pub async fn first_attempt(&self, timeout: Duration) {
        let mut rx = self.status.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| s.attempts > 0)).await;
    }

    /// The live client, or a 503 that names the socket and why it is unreachable.
    pub fn client(&self) -> Result<ControlClient, ApiError> {
        let guard = self.client.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(c) => Ok(c.clone()),
            None => Err(ApiError::daemon_unavailable(format!(
                "the transport daemon is unreachable: {}; retrying in the background",
                self.status.borrow().detail
            ))),
        }
    }

    /// Turn an RPC result into the handler's result: the daemon's coded errors keep their meaning,
    /// transport failures become 503 (the follower notices the broken socket and reconnects).
    pub fn finish<T>(&self, r: Result<Result<T, IpcError>, tarpc::client::RpcError>) -> Result<T, ApiError> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ApiError::daemon_unavailable(format!(
                "the transport daemon at {} did not answer ({e}); retry shortly",
                self.socket.display()
            ))),
        }
    }

    fn set_client(&self, c: Option<ControlClient>) {
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = c;
    }

    fn publish(&self, p: Published) {
        // An error only means no client is listening right now.
        let _ = self.events.send(Arc::new(p));
    }

    fn set_offline(&self, detail: String) {
        self.set_client(None);
        let was_online = self.status.borrow().online;
        let changed = self.status.borrow().detail != detail;
        self.status.send_modify(|s| {
            s.online = false;
            s.detail = detail.clone();
            s.attempts += 1;
            s.instance = None;
        });
        self.metrics.daemon_up.store(0, std::sync::atomic::Ordering::Relaxed);
        if was_online {
            tracing::warn!(socket = %self.socket.display(), "lost the transport daemon: {detail}");
            self.publish(Published::Daemon { online: false });
        } else if changed {
            tracing::warn!(socket = %self.socket.display(), "transport daemon unreachable: {detail}");
        }
    }

    fn set_online(&self, instance: u64) {
        self.status.send_modify(|s| {
            s.online = true;
            s.detail.clear();
            s.attempts += 1;
            s.instance = Some(instance);
        });
        self.metrics.daemon_up.store(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The connection owner and event follower. Returns when `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.reconnect_min, self.reconnect_max);
        let mut cursor: Option<Cursor> = None;
        let mut connected_before = false;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client::connect(&self.socket, CLIENT_NAME, Role::Web) => r,
            };
            match attempt {
                Ok(conn) => {
                    backoff.reset();
                    if connected_before {
                        inc(&self.metrics.daemon_reconnects);
                    }
                    connected_before = true;
                    let why = self.follow(conn.client, &mut cursor, &shutdown).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                    self.set_offline(why);
                }
                Err(e) => self.set_offline(describe(&e)),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Follow the event stream on one connection until it fails; returns why it failed.
    async fn follow(&self, client: ControlClient, cursor: &mut Option<Cursor>, shutdown: &CancellationToken) -> String {
        let lost = |e: &dyn std::fmt::Display| format!("lost the daemon at {}: {e}", self.socket.display());
        let mut after = match *cursor {
            Some(c) => c.seq,
            None => match client.status(ctx()).await {
                Ok(Ok(s)) => s.event_head,
                Ok(Err(e)) => return format!("the daemon at {} refused status: {e}", self.socket.display()),
                Err(e) => return lost(&e),
            },
        };
        self.set_client(Some(client.clone()));
        let mut first = true;
        loop {
            // The first poll does not wait, so the link reports online as soon as the stream works.
            let (wait, deadline) = if first {
                (0, client::CALL_TIMEOUT)
            } else {
                (POLL_WAIT_MS, POLL_DEADLINE)
            };
            let r = tokio::select! {
                _ = shutdown.cancelled() => return "shutting down".to_owned(),
                r = client.events(client::ctx(deadline), after, MAX_EVENTS_BATCH, wait) => r,
            };
            let batch = match r {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return format!("the daemon at {} refused the event stream: {e}", self.socket.display()),
                Err(e) => return lost(&e),
            };
            if first {
                first = false;
                self.set_online(batch.instance);
                let restarted = cursor.is_some_and(|c| c.instance != batch.instance);
                if restarted || batch.resync {
                    // A new daemon numbers from scratch: what the clients hold means nothing now.
                    after = batch.head;
                    *cursor = Some(Cursor {
                        instance: batch.instance,
                        seq: after,
                    });
                    // Online first, so clients read "online" and then the resync with its snapshot.
                    self.publish(Published::Daemon { online: true });
                    self.publish(Published::Resync {
                        reason: "daemon_restarted",
                    });
                    tracing::info!(socket = %self.socket.display(), "transport daemon reachable (new instance)");
                    continue;
                }
                self.publish(Published::Daemon { online: true });
                tracing::info!(socket = %self.socket.display(), "transport daemon reachable");
            } else if batch.resync {
                after = batch.head;
                *cursor = Some(Cursor {
                    instance: batch.instance,
                    seq: after,
                });
                self.publish(Published::Resync { reason: "window" });
                continue;
            }
            for env in batch.events {
                if env.seq <= after {
                    continue;
                }
                after = env.seq;
                inc(&self.metrics.events_received);
                let json = envelope_json(&env);
                self.publish(Published::Event {
                    seq: env.seq,
                    event: env.event,
                    json,
                });
            }
            *cursor = Some(Cursor {
                instance: batch.instance,
                seq: after,
            });
        }
    }
}

/// One line for logs and `/health`; the client's errors already name the socket.
fn describe(e: &ConnectError) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_owned()
}

/// The `/ws` form of an event: the envelope flattened, `{"seq":N,"at_ms":T,"type":"peer_connected",...}`.
pub fn envelope_json(env: &EventEnvelope) -> Utf8Bytes {
    let mut v = match serde_json::to_value(&env.event) {
        Ok(serde_json::Value::Object(m)) => m,
        // Event is an internally tagged enum of structs: always an object.
        _ => serde_json::Map::new(),
    };
    v.insert("seq".into(), env.seq.into());
    v.insert("at_ms".into(), env.at_ms.into());
    Utf8Bytes::from(serde_json::Value::Object(v).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use firma_ipc::types::Direction;

    #[test]
    fn envelope_is_flattened() {
        let env = EventEnvelope {
            seq: 7,
            at_ms: 99,
            event: Event::PeerConnected {
                peer_id: "p".into(),
                addr: "/ip4/127.0.0.1".into(),
                direction: Direction::Inbound,
            },
        };
        let v: serde_json::Value = serde_json::from_str(envelope_json(&env).as_str()).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["at_ms"], 99);
        assert_eq!(v["type"], "peer_connected");
        assert_eq!(v["peer_id"], "p");
        assert_eq!(v["direction"], "inbound");
    }

    #[tokio::test]
    async fn unreachable_daemon_is_a_503_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("absent.sock");
        let link = DaemonLink::new(
            sock.clone(),
            16,
            Duration::from_millis(10),
            Duration::from_millis(20),
            Arc::new(WebMetrics::default()),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(link.clone().run(stop.clone()));
        link.first_attempt(Duration::from_secs(5)).await;
        let st = link.status();
        assert!(!st.online);
        assert!(st.detail.contains("absent.sock"), "{}", st.detail);
        let err = link.client().unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("absent.sock"), "{}", err.message);
        stop.cancel();
        task.await.unwrap();
    }
}
