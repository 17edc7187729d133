//! Static assets, compiled into the binary so a reload never serves a half-copied file. Only a
//! placeholder page for now; the Peer Explorer page will live here.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML)
}
