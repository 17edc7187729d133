//! Peers: list, one, connect, disconnect, pin. Validation of ids and addresses is the daemon's.

use axum::Json;
use axum::extract::{Path, Query, State};
use firma_ipc::types::{ConnectOutcome, PeerFilter, PeerInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Body;
use crate::daemon_link::ctx;
use crate::error::ApiError;
use crate::state::AppState;

/// Peer ids are ~52 characters and multiaddrs a few hundred; anything far longer is a mistake.
const MAX_TARGET: usize = 1024;

fn check_len(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_TARGET {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {MAX_TARGET} characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    filter: Option<PeerFilter>,
}

pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    let c = s.link.client()?;
    let filter = q.filter.unwrap_or(PeerFilter::Known);
    Ok(Json(s.link.finish(c.peers(ctx(), filter).await)?))
}

pub async fn get(State(s): State<AppState>, Path(peer_id): Path<String>) -> Result<Json<PeerInfo>, ApiError> {
    check_len("peer id", &peer_id)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.peer(ctx(), peer_id).await)?))
}

#[derive(Debug, Deserialize)]
pub struct ConnectBody {
    /// A multiaddr (with or without `/p2p/<id>`) or a known peer id.
    target: String,
}

pub async fn connect(State(s): State<AppState>, Body(b): Body<ConnectBody>) -> Result<Json<ConnectOutcome>, ApiError> {
    check_len("target", &b.target)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.connect(ctx(), b.target).await)?))
}

pub async fn disconnect(State(s): State<AppState>, Path(peer_id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_len("peer id", &peer_id)?;
    let c = s.link.client()?;
    s.link.finish(c.disconnect(ctx(), peer_id.clone()).await)?;
    Ok(Json(json!({"peerId": peer_id, "disconnected": true})))
}

#[derive(Debug, Deserialize)]
pub struct PinBody {
    #[serde(default = "yes")]
    pinned: bool,
}

fn yes() -> bool {
    true
}

pub async fn pin(
    State(s): State<AppState>,
    Path(peer_id): Path<String>,
    Body(b): Body<PinBody>,
) -> Result<Json<PeerInfo>, ApiError> {
    check_len("peer id", &peer_id)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.pin(ctx(), peer_id, b.pinned).await)?))
}
