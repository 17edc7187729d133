//! The state every handler shares: configuration, the daemon link, auth, metrics, and the
//! shutdown signal WebSocket tasks watch. Cheap to clone (all `Arc`s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::WebConfig;
use crate::daemon_link::DaemonLink;
use crate::explorer_feed::ExplorerFeed;
use crate::explorer_groups::Groups;
use crate::metrics::WebMetrics;
use crate::security::{HostPolicy, OriginPolicy};

/// Milliseconds since the Unix epoch, the time unit of every JSON message (as upstream).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The one cancellation root, and whether this stop is a reload (WebSocket close code 1012) or
/// a plain stop (1001).
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    reload: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
    pub fn trigger(&self, reload: bool) {
        self.reload.store(reload, Ordering::SeqCst);
        self.token.cancel();
    }
    pub fn is_reload(&self) -> bool {
        self.reload.load(Ordering::SeqCst)
    }
}

/// Counters behind upstream's `/api/info` "websocket" block.
#[derive(Debug, Default)]
pub struct WsStats {
    /// Sum of the connect times (ms) of open clients, for the average uptime.
    pub connected_at_sum_ms: AtomicU64,
    /// Explorer peer subscriptions held by open clients.
    pub subscriptions: AtomicU64,
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<WebConfig>,
    pub link: Arc<DaemonLink>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<WebMetrics>,
    pub hosts: Arc<HostPolicy>,
    /// Foreign origins the operator allowed (`--allow-origin`).
    pub origins: Arc<OriginPolicy>,
    /// The address actually listened on (the inherited socket's, after a reload).
    pub bound: SocketAddr,
    /// Random per process start: a reload shows as a new id in `/api/info`.
    pub instance_id: Arc<str>,
    pub started: Instant,
    pub shutdown: Shutdown,
    /// WebSocket tasks outlive their HTTP request; shutdown waits for them here.
    pub ws_tasks: TaskTracker,
    pub ws_stats: Arc<WsStats>,
    /// What `/explorer` clients are told, translated once for all of them.
    pub explorer: Arc<ExplorerFeed>,
    /// `/explorer`'s groups (join_group, message).
    pub groups: Arc<Groups>,
}

impl AppState {
    /// Open WebSocket clients on both sockets.
    pub fn ws_total(&self) -> u64 {
        self.metrics.ws_clients.load(Ordering::Relaxed) + self.metrics.explorer_clients.load(Ordering::Relaxed)
    }
}
