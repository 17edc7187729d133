//! The HTTP surface: which path goes to which handler, and which layers wrap them.
//!
//! Layers, outermost first: `security::guard` (count, Host, Origin, security headers), CORS for
//! allowed origins (security.rs), the limit of
//! requests in flight, the body cap, then `auth::require_auth` on everything but `/health`,
//! `/login`, the OpenAPI document and the static page (`/logout` needs the session it ends). Handlers are thin: authorise (done by the
//! layers), call the daemon, encode.

pub mod compat;
pub mod network;
pub mod openapi;
pub mod peers;
pub mod transfers;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::limit::ConcurrencyLimitLayer;

use crate::config::MAX_BODY;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{assets, auth, explorer_ws, security, ws};

/// HTTP requests handled at once.
const MAX_IN_FLIGHT: usize = 1024;

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/info", get(compat::info))
        .route("/api/tickets", post(auth::ticket))
        .route("/logout", post(auth::logout))
        .route("/api/transports/available", get(compat::transports))
        .route("/api/status", get(network::status))
        .route("/api/peers", get(peers::list))
        .route("/api/peers/connect", post(peers::connect))
        .route("/api/peers/{peer_id}", get(peers::get))
        .route("/api/peers/{peer_id}/disconnect", post(peers::disconnect))
        .route("/api/peers/{peer_id}/pin", post(peers::pin))
        .route("/api/connections", get(network::connections))
        .route("/api/history", get(network::history))
        .route(
            "/api/discovery",
            get(network::discovery).post(network::change_discovery),
        )
        .route("/api/topology", get(network::topology))
        // Uploads stream into the daemon chunk by chunk, so only this route lifts the body cap.
        .route(
            "/api/transfers",
            post(transfers::create)
                .layer(DefaultBodyLimit::disable())
                .merge(get(transfers::list)),
        )
        .route("/api/transfers/{id}", get(transfers::get))
        .route("/api/transfers/{id}/cancel", post(transfers::cancel))
        .route("/api/transfers/{id}/accept", post(transfers::accept))
        .route("/api/transfers/{id}/reject", post(transfers::reject))
        .route("/api/transfers/{id}/documents/{doc_id}", get(transfers::download))
        .route("/metrics", get(network::metrics))
        .route("/ws", get(ws::handler))
        .route("/explorer", get(explorer_ws::handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_auth));
    let public = Router::new()
        .route("/health", get(compat::health))
        .route("/login", get(auth::login_link).post(auth::login))
        .route("/api/openapi.json", get(openapi::document))
        .merge(assets::router());
    public
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Requests past this wait for a slot instead of piling up work (a WebSocket holds its slot
        // only for the upgrade itself).
        .layer(ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        // CORS for the origins allowed with --allow-origin (none by default); it answers their
        // preflights before auth, which a preflight never carries.
        .layer(tower::util::option_layer(state.origins.cors()))
        .layer(middleware::from_fn_with_state(state.clone(), security::guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /api/openapi.json",
    )
}

/// `Json` whose rejections are `ApiError`s, so every error body has the same shape.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(
                ApiError::new(e.status(), "invalid", format!("bad request body: {}", e.body_text())).into_response(),
            ),
        }
    }
}
