//! The Peer Explorer page: static files compiled into the binary (a reload never serves a
//! half-copied file, and there is no separate dev server), served at `/` and under `/assets/`,
//! plus `/assets/config.json`, the one value the page needs from the server: how to pace its
//! reconnects.
//!
//! Caching: every file answers with a strong `ETag` (a hash of its bytes, computed at compile
//! time) and `Cache-Control: no-cache`, so a browser revalidates and gets `304` until a new build
//! changes the file. No build step: plain ES modules and CSS, nothing inline (the CSP forbids it).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// One file of the page.
struct Asset {
    /// Path under `/assets/` (the page itself is `index.html`, served at `/`).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the bytes: changes with the content, so a new build invalidates caches.
    etag: u64,
}

/// FNV-1a 64, usable in a `const` so every ETag is computed by the compiler.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("assets/", $path));
        Asset {
            path: $path,
            content_type: $ct,
            body: BODY,
            etag: fnv1a(BODY),
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/live.js", JS),
    asset!("js/model.js", JS),
    asset!("js/views/header.js", JS),
    asset!("js/views/log.js", JS),
    asset!("js/views/network.js", JS),
    asset!("js/views/peers.js", JS),
    asset!("js/views/transfers.js", JS),
];

/// How the page paces its WebSocket reconnects. A debug build is a development build (the
/// `scripts/dev.sh` loop): retry every second, forever. A release build retries after 3 s,
/// doubling to half a minute.
fn page_config() -> serde_json::Value {
    if cfg!(debug_assertions) {
        json!({"mode": "development", "reconnect_ms": 1000, "reconnect_max_ms": 1000, "heartbeat_ms": 30_000})
    } else {
        json!({"mode": "production", "reconnect_ms": 3000, "reconnect_max_ms": 30_000, "heartbeat_ms": 30_000})
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/config.json", get(config))
        .route("/assets/{*path}", get(file))
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: cheap (304) and a reload's new build shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, &headers),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the page is missing from this build",
        )
        .into_response(),
    }
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path) {
        Some(a) if a.path != "index.html" => serve(a, &headers),
        _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no asset {path:?}")).into_response(),
    }
}

async fn config() -> Response {
    let mut resp = axum::Json(page_config()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_listed_once_with_a_type() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert!(ASSETS[i + 1..].iter().all(|b| b.path != a.path), "{} twice", a.path);
        }
        assert!(find("js/app.js").is_some_and(|a| a.content_type.starts_with("text/javascript")));
        assert!(find("../Cargo.toml").is_none());
    }

    /// The page imports modules by relative path; each must be served, or the page breaks.
    #[test]
    fn every_module_import_is_served() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let spec = line
                    .rsplit_once(" from '")
                    .map(|(_, s)| s.trim_end_matches("';"))
                    .unwrap();
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    find(&target).is_some(),
                    "{} imports {spec} ({target}), which is not served",
                    a.path
                );
            }
        }
    }

    /// Peer-supplied strings must never become markup: no script of the page assigns HTML.
    #[test]
    fn no_script_writes_markup() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
                assert!(!code.contains(banned), "{} uses {banned}", a.path);
            }
        }
    }

    #[test]
    fn etags_differ_between_files() {
        assert_ne!(find("js/app.js").unwrap().etag, find("js/api.js").unwrap().etag);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
