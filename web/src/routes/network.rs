//! The daemon's view of the network: status, open connections, history, discovery, topology,
//! and `/metrics` (the daemon's metrics and ours, as Prometheus text).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use firma_ipc::types::{ConnectionRecord, DiscoveryChange, DiscoveryState, HistoryQuery, Status, Topology};
use serde::Deserialize;

use super::Body;
use crate::daemon_link::ctx;
use crate::error::ApiError;
use crate::metrics::render;
use crate::state::AppState;

/// Largest history page asked of the daemon (it caps too).
const MAX_HISTORY: u32 = 1000;

pub async fn status(State(s): State<AppState>) -> Result<Json<Status>, ApiError> {
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.status(ctx()).await)?))
}

/// Open connections: the history records not closed yet, from the newest `MAX_HISTORY`.
pub async fn connections(State(s): State<AppState>) -> Result<Json<Vec<ConnectionRecord>>, ApiError> {
    let c = s.link.client()?;
    let q = HistoryQuery {
        peer_id: None,
        limit: MAX_HISTORY,
    };
    let mut records = s.link.finish(c.history(ctx(), q).await)?;
    records.retain(|r| r.closed_ms.is_none());
    Ok(Json(records))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    peer: Option<String>,
    limit: Option<u32>,
}

pub async fn history(
    State(s): State<AppState>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<Vec<ConnectionRecord>>, ApiError> {
    let c = s.link.client()?;
    let q = HistoryQuery {
        peer_id: p.peer,
        limit: p.limit.unwrap_or(100).clamp(1, MAX_HISTORY),
    };
    Ok(Json(s.link.finish(c.history(ctx(), q).await)?))
}

pub async fn discovery(State(s): State<AppState>) -> Result<Json<DiscoveryState>, ApiError> {
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.status(ctx()).await)?.discovery))
}

#[derive(Debug, Deserialize)]
pub struct DiscoveryBody {
    mdns: Option<bool>,
    #[serde(default)]
    bootstrap_now: bool,
}

pub async fn change_discovery(
    State(s): State<AppState>,
    Body(b): Body<DiscoveryBody>,
) -> Result<Json<DiscoveryState>, ApiError> {
    let c = s.link.client()?;
    let change = DiscoveryChange {
        mdns: b.mdns,
        bootstrap_now: b.bootstrap_now,
    };
    Ok(Json(s.link.finish(c.discovery(ctx(), change).await)?))
}

pub async fn topology(State(s): State<AppState>) -> Result<Json<Topology>, ApiError> {
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.topology(ctx()).await)?))
}

/// Prometheus text. Answers even while the daemon is away (then with our metrics only and
/// `firma_web_daemon_up 0`), because that is exactly when someone looks.
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let daemon = match s.link.client() {
        Ok(c) => s.link.finish(c.metrics(ctx()).await).ok(),
        Err(_) => None,
    };
    let text = render(daemon.as_ref(), &s.metrics, s.started.elapsed().as_secs_f64());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}
