//! Request checks that come before authentication, and the headers every response carries.
//!
//! - `Host` must be one of ours on every route, WebSocket upgrades included: a page on an
//!   attacker's domain that re-resolves to 127.0.0.1 (DNS rebinding) sends its own host name.
//! - State-changing requests and every WebSocket upgrade must come from our own origin: `Origin`
//!   equal to `http(s)://<Host>`, or `Sec-Fetch-Site: same-origin`, or an `Origin` the operator
//!   allowed by name (`--allow-origin`, e.g. upstream's Vite dev server on :3000). A request with
//!   neither is let through only when it carries `Authorization: Bearer` (checked afterwards by
//!   auth): browsers cannot attach that header cross-origin without a CORS preflight, which we
//!   grant to allowed origins only, so a non-browser API client is the only other sender. A
//!   cookie alone never suffices without an origin, and an allowed origin still authenticates.
//! - CORS (tower-http's `CorsLayer`, only when origins are allowed): responses to an allowed
//!   origin carry `Access-Control-Allow-Origin: <it>` and `Allow-Credentials: true`; any other
//!   origin gets neither, so its page cannot read a response.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::auth::bearer;
use crate::error::ApiError;
use crate::metrics::inc;
use crate::state::AppState;

/// The `Host` values this server answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    allowed: Vec<String>,
}

impl HostPolicy {
    /// Loopback names and the bound address, each with the bound port, plus `extra` verbatim.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Self {
        let port = bound.port();
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned()];
        if !bound.ip().is_unspecified() {
            names.push(match bound.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        let mut allowed: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        if port == 80 {
            allowed.extend(names);
        }
        allowed.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        allowed.sort();
        allowed.dedup();
        Self { allowed }
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.contains(&host)
    }
}

/// Normalise an `--allow-origin` value to the form browsers send (`scheme://host[:port]`, lower
/// case, no default port elided by us, no path), or say what is wrong with it.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let o = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let bad = |why: &str| {
        Err(format!(
            "--allow-origin {raw:?}: {why}; give an origin as a browser sends it, e.g. http://localhost:3000"
        ))
    };
    let Some((scheme, rest)) = o.split_once("://") else {
        return bad("no scheme");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return bad("an origin is scheme://host[:port], without path, user or wildcard");
    }
    Ok(o)
}

/// Origins other than our own that may make state-changing requests, open the WebSockets and
/// read API responses (CORS).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// `origins` are already normalised by [`parse_origin`].
    pub fn new(origins: &[String]) -> Self {
        let mut allowed = origins.to_vec();
        allowed.sort();
        allowed.dedup();
        Self { allowed }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a == origin)
    }

    /// The CORS layer for the allowed origins; `None` when there are none (no CORS at all).
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.allowed.is_empty() {
            return None;
        }
        let allowed = std::sync::Arc::new(self.clone());
        let for_creds = allowed.clone();
        let is_allowed = move |origin: &HeaderValue, _: &Parts| origin.to_str().is_ok_and(|o| allowed.allows(o));
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(is_allowed))
                .allow_credentials(AllowCredentials::predicate(move |origin, _| {
                    origin.to_str().is_ok_and(|o| for_creds.allows(o))
                }))
                .allow_methods(AllowMethods::list([Method::GET, Method::POST]))
                .allow_headers(AllowHeaders::list([header::AUTHORIZATION, header::CONTENT_TYPE]))
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the request comes from our own origin or an allowed one, per the module header.
fn same_origin(headers: &HeaderMap, host: &str, origins: &OriginPolicy) -> Result<(), String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        if origin == format!("http://{host}") || origin == format!("https://{host}") || origins.allows(&origin) {
            return Ok(());
        }
        return Err(format!(
            "Origin {origin} does not match this server ({host}); cross-site requests are refused (allow a \
             development page's origin with --allow-origin)"
        ));
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") => return Ok(()),
        Some(other) => return Err(format!("Sec-Fetch-Site {other}: cross-site requests are refused")),
        None => {}
    }
    if bearer(headers).is_some() {
        return Ok(());
    }
    Err(
        "a state-changing request or WebSocket upgrade needs an Origin header matching this server, or a bearer token"
            .to_owned(),
    )
}

/// The `Host` of the request: the header (HTTP/1.1) or the URI authority (HTTP/2).
fn request_host(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(header::HOST) {
        return h.to_str().ok().map(str::to_owned);
    }
    req.uri().authority().map(|a| a.as_str().to_owned())
}

/// Outermost middleware: count, check Host and Origin, then add the security headers.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    inc(&state.metrics.http_requests);
    let mut resp = match check(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn check(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(host) = request_host(req) else {
        return Err(ApiError::bad_request("the request has no Host header"));
    };
    if !state.hosts.allows(&host) {
        return Err(ApiError::forbidden(format!(
            "Host {host:?} is not served here; use http://127.0.0.1:{}/ or add it with --allowed-host",
            state.bound.port()
        )));
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe || is_upgrade(req.headers()) {
        same_origin(req.headers(), &host, &state.origins).map_err(ApiError::forbidden)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_allow_list() {
        let p = HostPolicy::new("127.0.0.1:8080".parse().unwrap(), &["firma.example:443".into()]);
        assert!(p.allows("127.0.0.1:8080"));
        assert!(p.allows("LOCALHOST:8080"));
        assert!(p.allows("[::1]:8080"));
        assert!(p.allows("firma.example:443"));
        assert!(!p.allows("127.0.0.1:8081"));
        assert!(!p.allows("evil.example:8080"));
        assert!(!p.allows("localhost"));
    }

    #[test]
    fn allowed_origins_are_normalised_and_checked() {
        assert_eq!(parse_origin("HTTP://LocalHost:3000/").unwrap(), "http://localhost:3000");
        assert!(parse_origin("localhost:3000").is_err());
        assert!(parse_origin("ftp://x").is_err());
        assert!(parse_origin("http://*").is_err());
        assert!(parse_origin("http://x/app").is_err());
        let dev = OriginPolicy::new(&["http://localhost:3000".into()]);
        let host = "localhost:8080";
        assert!(same_origin(&headers(&[("origin", "http://localhost:3000")]), host, &dev).is_ok());
        assert!(same_origin(&headers(&[("origin", "http://localhost:3001")]), host, &dev).is_err());
        assert!(
            same_origin(
                &headers(&[("origin", "http://localhost:3000")]),
                host,
                &OriginPolicy::default()
            )
            .is_err()
        );
        assert!(OriginPolicy::default().cors().is_none());
        assert!(dev.cors().is_some());
    }

    #[test]
    fn origin_rules() {
        let none = OriginPolicy::default();
        let same_origin = |h: &HeaderMap, host: &str| same_origin(h, host, &none);
        let host = "127.0.0.1:8080";
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080")]), host).is_ok());
        assert!(same_origin(&headers(&[("origin", "http://evil.example")]), host).is_err());
        assert!(same_origin(&headers(&[("origin", "null")]), host).is_err());
        // A foreign Origin is refused even with a token.
        assert!(
            same_origin(
                &headers(&[("origin", "http://evil.example"), ("authorization", "Bearer x")]),
                host
            )
            .is_err()
        );
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), host).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")]), host).is_err());
        assert!(same_origin(&headers(&[("authorization", "Bearer x")]), host).is_ok());
        assert!(same_origin(&headers(&[("cookie", "firma_session=x")]), host).is_err());
    }
}
