//! The three routes whose shapes follow upstream Firma-Sign's server: `/health`, `/api/info` and
//! `/api/transports/available`. `/health` is public, so it says exactly what upstream's does and
//! nothing about this node (no PeerId, no socket path); the details are in `/api/info` (`daemon`,
//! `instance_id`), which needs a credential and whose extra fields upstream's clients ignore.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use firma_ipc::client::ctx;
use firma_ipc::types::{Status, StoreHealth};
use serde_json::{Value, json};

use crate::state::{AppState, now_ms};

/// `/health` must answer fast even when the daemon hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The daemon's status if it answers now; `Err` says why not.
async fn daemon_status(state: &AppState) -> Result<Status, String> {
    let client = state.link.client().map_err(|e| e.message)?;
    state
        .link
        .finish(client.status(ctx(HEALTH_TIMEOUT)).await)
        .map_err(|e| e.message)
}

fn daemon_block(state: &AppState, status: &Result<Status, String>) -> Value {
    json!({
        "reachable": status.is_ok(),
        "socket": state.link.socket().display().to_string(),
        "peerId": status.as_ref().ok().map(|s| s.peer_id.clone()),
        "error": status.as_ref().err(),
    })
}

pub async fn health(State(state): State<AppState>) -> Response {
    let status = daemon_status(&state).await;
    let store_ok = status.as_ref().is_ok_and(|s| s.store.health == StoreHealth::Healthy);
    let ok = status.is_ok() && store_ok;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "uptime": state.started.elapsed().as_secs_f64(),
        "connections": status.as_ref().map(|s| s.connected_peers).unwrap_or(0),
        "services": {
            "database": if store_ok { "connected" } else { "disconnected" },
            "storage": if store_ok { "available" } else { "unavailable" },
            "transports": if status.is_ok() { "ready" } else { "not ready" },
        },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let status = daemon_status(&state).await;
    let total = state.ws_total();
    let sum = state.ws_stats.connected_at_sum_ms.load(Ordering::Relaxed);
    let average_uptime = now_ms()
        .saturating_mul(total)
        .saturating_sub(sum)
        .checked_div(total)
        .unwrap_or(0);
    let storage = match &status {
        Ok(s) => {
            let mut storage = json!({"health": s.store.health, "usedBytes": s.store.used_bytes,
                                     "mapSizeBytes": s.store.map_size_bytes});
            // Left out when the daemon could not read its disk (null or 0 would read as full).
            if let Some(free) = s.store.disk_free_bytes {
                storage["diskFreeBytes"] = free.into();
            }
            storage
        }
        Err(_) => json!({}),
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": state.started.elapsed().as_secs_f64(),
        "storage": storage,
        "websocket": {
            "total": total,
            "authenticated": total,
            "subscriptions": state.ws_stats.subscriptions.load(Ordering::Relaxed),
            "averageUptime": average_uptime,
        },
        "transports": {
            "ready": status.is_ok(),
            "status": { "p2p": status.as_ref().ok() },
        },
        "daemon": daemon_block(&state, &status),
        "instance_id": &*state.instance_id,
    }))
}

pub async fn transports(State(state): State<AppState>) -> Json<Value> {
    let status = daemon_status(&state).await;
    Json(json!({
        "transports": [{
            "type": "p2p",
            "enabled": true,
            "configured": true,
            "status": if status.is_ok() { "ready" } else { "unavailable" },
            "version": status.as_ref().map(|s| s.version.clone()).unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned()),
            "features": ["send", "receive", "peers", "discovery", "events"],
            "installCommand": format!("firma-transportd --socket {}", state.link.socket().display()),
        }]
    }))
}
