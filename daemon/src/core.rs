//! The daemon's shared core: what the control server reads and drives. The network task owns
//! the swarm, the store writer owns the LMDB write path; this holds their handles, the event
//! log, the live view of connections kept by the tracker, and the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use firma_ipc::IpcError;
use firma_ipc::types::{Direction, DiscoveryState};

use crate::events::EventLog;
use crate::network::NetworkHandle;
use crate::store::{Store, StoreError, StoreWriter};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One open connection as the tracker last saw it.
#[derive(Debug, Clone)]
pub struct LiveConn {
    pub addr: String,
    pub direction: Direction,
    pub rtt_us: Option<u64>,
}

/// What is true right now, rebuilt from network events; never persisted.
#[derive(Debug, Default)]
pub struct LiveState {
    pub connected: HashMap<String, LiveConn>,
    pub listen_addrs: Vec<String>,
    pub discovery: Option<DiscoveryState>,
}

/// Counters the `metrics` call reports; monotonic unless named as a gauge.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub dial_failures: AtomicU64,
    pub rpc_calls: AtomicU64,
    pub rpc_denied: AtomicU64,
    pub control_refused: AtomicU64,
    pub control_open: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Core {
    pub peer_id: String,
    pub started: Instant,
    pub store: Store,
    pub writer: StoreWriter,
    pub net: NetworkHandle,
    pub events: EventLog,
    /// Lock order: taken alone and never across an await.
    pub live: Mutex<LiveState>,
    pub counters: Counters,
    /// The transfer engine, set once it has started and taken away at shutdown (it holds the
    /// core too, so keeping it here past shutdown would keep both alive).
    pub transfers: Mutex<Option<Arc<crate::transfer::Engine>>>,
}

impl Core {
    /// The transfer engine, or `Unavailable` while it is starting or stopping.
    pub fn transfers(&self) -> Result<Arc<crate::transfer::Engine>, IpcError> {
        self.transfers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| {
                IpcError::unavailable("the transfer engine is not running (the daemon is starting or stopping)")
            })
    }

    pub fn live(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a blocking store read off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, IpcError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                Counters::inc(&self.counters.store_errors);
                Err(store_error(e))
            }
            Err(e) => Err(IpcError::internal(format!("store read task failed: {e}"))),
        }
    }
}

/// How a store failure looks to an API caller.
pub fn store_error(e: StoreError) -> IpcError {
    match e {
        StoreError::Corrupt { .. } | StoreError::Unhealthy(_) => IpcError::unavailable(e.to_string()),
        other => IpcError::internal(other.to_string()),
    }
}
