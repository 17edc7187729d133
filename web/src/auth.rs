//! Who may use the API: a 256-bit bearer token kept in `web.token` (0600) for API clients, and
//! for browsers a session obtained through a single-use login link.
//!
//! A browser's session is never a cookie: cookies are scoped by host, not port, so any other
//! listener on 127.0.0.1 the browser visits would receive it. The page keeps the session id in
//! `sessionStorage` (scoped to its origin, port included) and sends it as `Authorization: Bearer`.
//! What cannot carry a header (a WebSocket upgrade, a download link) carries a ticket instead:
//! single-use, valid for [`TICKET_TTL`], issued by `POST /api/tickets` to an authorised caller and
//! accepted only on those routes.
//!
//! Login: `GET /login?nonce=N` (the link a person opens) only sends the browser to `/#login=N`;
//! the page redeems the nonce with `POST /login`, a same-origin request, and keeps the session it
//! gets. Loading the link therefore touches nothing, and failed logins never feed the limiter that
//! guards API credentials, so no page can lock the owner out by loading bad links.
//!
//! Everything secret lives in the state dir so that a reloaded process (or a second web process
//! sharing the dir) honours what the previous one issued: `web.token`, `web-login/<nonce>`
//! (single-use: redeeming is removing the file, which succeeds once) and `web-sessions/<id>`
//! (see `sessions`). Tickets live in memory: a page asks for a new one at each connect.
//! Secrets are never logged; the login link is the one exception, by design, and it dies on use.

mod sessions;

pub use sessions::{SessionInfo, SessionRef, SessionStore, WATCH_INTERVAL, Which};

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::{Extension, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::metrics::{WebMetrics, inc};
use crate::state::AppState;

pub const TOKEN_FILE: &str = "web.token";
pub const LOGIN_DIR: &str = "web-login";
pub const SESSION_DIR: &str = "web-sessions";
/// The cookie older builds kept the session in; a login clears it.
pub const LEGACY_SESSION_COOKIE: &str = "firma_session";
/// A login link is short-lived as well as single-use.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a WebSocket or download ticket stays valid (it is single-use as well).
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unused tickets held at once; past this a new one is refused until some are used or expire.
const MAX_TICKETS: usize = 1024;
/// Routes a ticket opens (matched route paths): those a browser cannot send a header to.
const TICKET_ROUTES: &[&str] = &["/ws", "/explorer", "/api/transfers/{id}/documents/{doc_id}"];
/// Failed attempts allowed per window before every attempt is refused until the window ends.
const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 256 random bits from the OS, as 64 lowercase hex characters.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn is_secret_shaped(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Create `dir` (0700) if missing.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create directory {} (check --state-dir and its owner)",
                dir.display()
            )
        })
}

/// Write `contents` to a new 0600 file at `path`; fails if it exists.
pub(crate) fn write_new_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Read `web.token` from the state dir, creating it (0600, 256 bits) on first start.
pub fn load_or_create_token(state_dir: &Path) -> anyhow::Result<String> {
    ensure_private_dir(state_dir)?;
    let path = state_dir.join(TOKEN_FILE);
    if !path.exists() {
        // Written under a private name and linked into place, so a second process starting at the
        // same moment sees either no file or a complete one.
        let tmp = state_dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        write_new_private(&tmp, &format!("{}\n", random_secret()))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let meta = fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by other users; fix it with: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if !is_secret_shaped(token) {
        bail!(
            "{} does not hold a 64-hex-digit token; delete it and restart firma-web to make a new one",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// Put a fresh single-use login nonce in `state_dir/web-login/` and return it. Used by the server
/// at start and by `firma-web login-url` for a running server.
pub fn issue_login_nonce(state_dir: &Path) -> anyhow::Result<String> {
    let dir = state_dir.join(LOGIN_DIR);
    ensure_private_dir(&dir)?;
    sweep_expired(&dir);
    let nonce = random_secret();
    let expiry = now_ms() + LOGIN_TTL.as_millis() as u64;
    let path = dir.join(&nonce);
    write_new_private(&path, &expiry.to_string()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(nonce)
}

/// Remove nonce or session files whose expiry has passed (or that cannot be read as one).
pub(crate) fn sweep_expired(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let now = now_ms();
    for e in entries.flatten() {
        let expired = fs::read_to_string(e.path())
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .is_none_or(|x| x <= now);
        if expired {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Use up a login nonce. Blocking (file system): call from `spawn_blocking`.
fn redeem_nonce(state_dir: &Path, nonce: &str) -> bool {
    if !is_secret_shaped(nonce) {
        return false;
    }
    let path = state_dir.join(LOGIN_DIR).join(nonce);
    let Ok(text) = fs::read_to_string(&path) else {
        return false;
    };
    // Removing is the redemption: of two concurrent attempts only one removes the file.
    if fs::remove_file(&path).is_err() {
        return false;
    }
    text.trim().parse::<u64>().is_ok_and(|expiry| expiry > now_ms())
}

/// Counts failed API credentials; past the budget every failing attempt is answered 429 until the
/// window ends, which makes guessing hopeless without ever telling an attacker which guesses were
/// close. Login failures are not counted here (see the module header).
#[derive(Debug)]
struct FailureLimiter {
    window_start: Instant,
    failures: u32,
}

impl FailureLimiter {
    fn limited(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= FAILURE_WINDOW {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures >= MAX_FAILURES
    }
    fn record_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Bearer,
    Session,
}

/// What a request was authorised with; the middleware puts it in the request's extensions, so
/// handlers (WebSockets above all) can end what they serve when a session ends.
#[derive(Clone, Debug)]
pub struct Grant {
    pub credential: Credential,
    pub session: Option<SessionRef>,
}

impl Grant {
    fn token() -> Self {
        Self {
            credential: Credential::Bearer,
            session: None,
        }
    }

    /// Resolves when the session behind this grant is revoked or expires; never for the API
    /// token (which lasts as long as its file).
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let session = self.session.clone();
        async move {
            let Some(s) = session else {
                return std::future::pending().await;
            };
            let left = Duration::from_millis(s.expiry_ms.saturating_sub(now_ms()));
            tokio::select! {
                _ = s.ended.cancelled() => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// An unused ticket: what it stands for and until when.
struct Ticket {
    expires: Instant,
    session: Option<Arc<str>>,
}

pub struct Auth {
    token: String,
    state_dir: PathBuf,
    sessions: Arc<SessionStore>,
    tickets: Mutex<HashMap<String, Ticket>>,
    limiter: Mutex<FailureLimiter>,
    metrics: Arc<WebMetrics>,
}

fn internal(message: String) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message).into_response()
}

impl Auth {
    pub fn new(token: String, state_dir: PathBuf, metrics: Arc<WebMetrics>) -> anyhow::Result<Self> {
        let sessions = Arc::new(SessionStore::open(&state_dir)?);
        let limiter = FailureLimiter {
            window_start: Instant::now(),
            failures: 0,
        };
        Ok(Self {
            token,
            state_dir,
            sessions,
            tickets: Mutex::new(HashMap::new()),
            limiter: Mutex::new(limiter),
            metrics,
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn limited(&self) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limited(Instant::now())
    }

    fn fail(&self) {
        inc(&self.metrics.auth_failures);
        self.limiter.lock().unwrap_or_else(|p| p.into_inner()).record_failure();
    }

    fn token_matches(&self, given: &str) -> bool {
        given.as_bytes().ct_eq(self.token.as_bytes()).into()
    }

    /// Check a bearer value: the API token, or a browser session's id.
    async fn check_bearer(&self, given: &str) -> Option<Grant> {
        if self.token_matches(given) {
            return Some(Grant::token());
        }
        let session = self.sessions.validate(given).await?;
        Some(Grant {
            credential: Credential::Session,
            session: Some(session),
        })
    }

    /// Check the request's credential: `Authorization: Bearer` (the API token or a session id),
    /// or `ticket`, the request's `?ticket=` on the routes in [`TICKET_ROUTES`] (see
    /// [`ticket_param`]).
    ///
    /// While failures are rate-limited, a valid credential still gets in: tokens and session ids
    /// are 256-bit secrets nobody can guess in any number of tries, so the limit is there to
    /// throttle and flag noise, and it must not let a stranger lock the real owner out.
    pub async fn check(&self, headers: &HeaderMap, ticket: Option<String>) -> Result<Grant, Response> {
        if let Some(given) = bearer(headers) {
            return match self.check_bearer(given).await {
                Some(g) => Ok(g),
                None => Err(self.refuse()),
            };
        }
        if let Some(ticket) = ticket {
            return match self.redeem_ticket(&ticket).await {
                Some(g) => Ok(g),
                None => Err(self.refuse()),
            };
        }
        Err(ApiError::unauthorized().into_response())
    }

    /// A failed credential: counted, and answered 429 once failures are over the limit.
    fn refuse(&self) -> Response {
        if self.limited() {
            inc(&self.metrics.auth_rate_limited);
            return too_many();
        }
        self.fail();
        ApiError::unauthorized().into_response()
    }

    /// A single-use ticket standing for `grant`; `None` while [`MAX_TICKETS`] wait unused.
    fn issue_ticket(&self, grant: &Grant) -> Option<String> {
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, t| t.expires > now);
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        let ticket = random_secret();
        tickets.insert(
            ticket.clone(),
            Ticket {
                expires: now + TICKET_TTL,
                session: grant.session.as_ref().map(|s| s.id.clone()),
            },
        );
        Some(ticket)
    }

    /// Use up a ticket; the session behind it must still be valid.
    async fn redeem_ticket(&self, ticket: &str) -> Option<Grant> {
        let t = self.tickets.lock().unwrap_or_else(|p| p.into_inner()).remove(ticket)?;
        if t.expires <= Instant::now() {
            return None;
        }
        match t.session {
            None => Some(Grant::token()),
            Some(id) => Some(Grant {
                credential: Credential::Session,
                session: Some(self.sessions.validate(&id).await?),
            }),
        }
    }

    /// Redeem a login nonce and open a session: its id and expiry (ms).
    async fn login(&self, nonce: String) -> Result<(String, u64), Response> {
        let dir = self.state_dir.clone();
        let ok = tokio::task::spawn_blocking(move || redeem_nonce(&dir, &nonce))
            .await
            .unwrap_or(false);
        if !ok {
            inc(&self.metrics.auth_failures);
            return Err(ApiError::forbidden(
                "this login link is invalid, expired or already used; get a fresh one with `firma-web login-url`",
            )
            .into_response());
        }
        let store = self.sessions.clone();
        match tokio::task::spawn_blocking(move || store.create()).await {
            Ok(Ok(s)) => Ok(s),
            _ => Err(internal(format!(
                "cannot store the session in {}",
                self.sessions.dir().display()
            ))),
        }
    }
}

fn too_many() -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many failed authentication attempts; wait a few seconds",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    r
}

/// The token of `Authorization: Bearer <token>`, if that header is present and well-formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// `?ticket=` of a GET to one of the [`TICKET_ROUTES`].
pub fn ticket_param(req: &Request) -> Option<String> {
    if req.method() != Method::GET {
        return None;
    }
    let route = req.extensions().get::<MatchedPath>()?.as_str();
    if !TICKET_ROUTES.contains(&route) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct TicketQuery {
        ticket: Option<String>,
    }
    let q: Query<TicketQuery> = Query::try_from_uri(req.uri()).ok()?;
    q.0.ticket
}

/// Middleware for every protected route; hands the `Grant` on to the handler.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ticket = ticket_param(&req);
    match state.auth.check(req.headers(), ticket).await {
        Ok(grant) => {
            req.extensions_mut().insert(grant);
            next.run(req).await
        }
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    nonce: String,
}

/// `GET /login?nonce=...`: the link a person opens. Sends the browser to the page, which redeems
/// the nonce (the fragment never reaches a server, and a `Location` is not a `Referer`).
pub async fn login_link(Query(q): Query<LoginQuery>) -> Response {
    if !is_secret_shaped(&q.nonce) {
        return ApiError::bad_request(
            "this is not a login link (its nonce is not 64 hex digits); get one with `firma-web login-url`",
        )
        .into_response();
    }
    let location = format!("/#login={}", q.nonce);
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => ApiError::bad_request("bad nonce").into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct LoginBody {
    nonce: String,
}

/// `POST /login` `{"nonce"}`: redeem a login link; answers `{"session", "expires_at_ms"}`.
pub async fn login(State(state): State<AppState>, crate::routes::Body(b): crate::routes::Body<LoginBody>) -> Response {
    match state.auth.login(b.nonce).await {
        Ok((session, expiry)) => {
            let mut r = Json(json!({"session": session, "expires_at_ms": expiry})).into_response();
            // Forget a session cookie an older build may have left.
            let clear = format!("{LEGACY_SESSION_COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&clear) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(r) => r,
    }
}

/// `POST /logout`: end the caller's session, on every web process sharing the state dir, and
/// close its sockets.
pub async fn logout(State(state): State<AppState>, Extension(grant): Extension<Grant>) -> Response {
    let Some(s) = grant.session else {
        return ApiError::bad_request(
            "the API token is not a session; sessions are revoked with `firma-web sessions revoke`",
        )
        .into_response();
    };
    match state.auth.sessions.revoke(&s.id).await {
        Ok(()) => Json(json!({"revoked": true})).into_response(),
        Err(e) => internal(format!(
            "cannot remove the session from {}: {e}",
            state.auth.sessions.dir().display()
        )),
    }
}

/// `POST /api/tickets`: a single-use ticket for one WebSocket upgrade or one download.
pub async fn ticket(State(state): State<AppState>, Extension(grant): Extension<Grant>) -> Response {
    match state.auth.issue_ticket(&grant) {
        Some(t) => Json(json!({"ticket": t, "expires_in_ms": TICKET_TTL.as_millis() as u64})).into_response(),
        None => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tickets",
                format!("{MAX_TICKETS} tickets are waiting to be used; retry in a few seconds"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// `firma-web sessions list`: the unexpired sessions of the state dir.
pub fn list_sessions(state_dir: &Path) -> anyhow::Result<Vec<SessionInfo>> {
    sessions::list(state_dir)
}

/// `firma-web sessions revoke`: how many sessions were removed.
pub fn revoke_sessions(state_dir: &Path, which: Which<'_>) -> anyhow::Result<usize> {
    sessions::revoke(state_dir, which)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn auth(dir: &Path) -> Auth {
        let token = load_or_create_token(dir).unwrap();
        Auth::new(token, dir.to_owned(), Arc::new(WebMetrics::default())).unwrap()
    }

    #[test]
    fn token_is_created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_token(dir.path()).unwrap();
        let b = load_or_create_token(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(is_secret_shaped(&a));
        let mode = fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::set_permissions(dir.path().join(TOKEN_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    fn request(headers: &[(&str, String)], uri: &str, route: Option<&str>) -> Request {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let mut req = b.body(axum::body::Body::empty()).unwrap();
        if let Some(route) = route {
            // What the router puts there; built through a real router to get a MatchedPath.
            req.extensions_mut().insert(matched(route));
        }
        req
    }

    /// A `MatchedPath` for `route`, taken from a real router (it has no public constructor).
    fn matched(route: &str) -> MatchedPath {
        use tower::ServiceExt as _;
        let (tx, rx) = std::sync::mpsc::channel();
        let app = axum::Router::new().route(
            route,
            axum::routing::get(move |p: MatchedPath| {
                let _ = tx.send(p);
                async {}
            }),
        );
        let uri = route.replace("{id}", "x").replace("{doc_id}", "y");
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(app.oneshot(Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap()))
                .unwrap()
        });
        rx.recv().unwrap()
    }

    async fn check(a: &Auth, req: &Request) -> Result<Grant, Response> {
        a.check(req.headers(), ticket_param(req)).await
    }

    fn bearer_h(v: &str) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {v}"))]
    }

    #[tokio::test]
    async fn bearer_checks_and_rate_limits() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        let good = bearer_h(&a.token);
        assert_eq!(
            check(&a, &request(&good, "/", None)).await.unwrap().credential,
            Credential::Bearer
        );
        let bad = bearer_h("nope");
        for _ in 0..MAX_FAILURES {
            let r = check(&a, &request(&bad, "/", None)).await.unwrap_err();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = check(&a, &request(&bad, "/", None)).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(check(&a, &request(&[], "/", None)).await.is_err());
        // The owner is not locked out by a stranger's failures.
        assert!(check(&a, &request(&good, "/", None)).await.is_ok());
    }

    #[tokio::test]
    async fn login_failures_do_not_lock_out_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        for _ in 0..(MAX_FAILURES * 5) {
            assert!(a.login(random_secret()).await.is_err());
        }
        assert!(!a.limited(), "login failures fed the API limiter");
        let nonce = issue_login_nonce(dir.path()).unwrap();
        assert!(a.login(nonce).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sessions_tickets_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        let nonce = issue_login_nonce(dir.path()).unwrap();
        let (id, _) = a.login(nonce.clone()).await.unwrap();
        assert!(a.login(nonce).await.is_err(), "a login link works once");
        let g = check(&a, &request(&bearer_h(&id), "/", None)).await.unwrap();
        assert_eq!(g.credential, Credential::Session);
        // A second process sharing the state dir honours it too.
        let b = auth(dir.path());
        assert!(check(&b, &request(&bearer_h(&id), "/", None)).await.is_ok());
        assert!(
            check(&a, &request(&bearer_h(&random_secret()), "/", None))
                .await
                .is_err()
        );

        // A ticket opens one ticket route, once; nothing else.
        let t = a.issue_ticket(&g).unwrap();
        let uri = format!("/ws?ticket={t}");
        assert!(check(&a, &request(&[], &uri, Some("/api/info"))).await.is_err());
        let t = a.issue_ticket(&g).unwrap();
        let uri = format!("/ws?since=3&ticket={t}");
        let tg = check(&a, &request(&[], &uri, Some("/ws"))).await.unwrap();
        assert_eq!(
            tg.session.as_ref().map(|s| s.id.clone()),
            g.session.as_ref().map(|s| s.id.clone())
        );
        assert!(
            check(&a, &request(&[], &uri, Some("/ws"))).await.is_err(),
            "a ticket works once"
        );

        // Revoked by another process (the CLI): refused at once, and sockets are told.
        let ended = tokio::spawn(tg.ended());
        assert_eq!(
            revoke_sessions(dir.path(), Which::Id(&id[..sessions::SHOWN_ID])).unwrap(),
            1
        );
        assert!(check(&a, &request(&bearer_h(&id), "/", None)).await.is_err());
        tokio::time::timeout(WATCH_INTERVAL * 5, ended).await.unwrap().unwrap();
        assert!(list_sessions(dir.path()).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_ticket_dies_with_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        let (id, _) = a.login(issue_login_nonce(dir.path()).unwrap()).await.unwrap();
        let g = check(&a, &request(&bearer_h(&id), "/", None)).await.unwrap();
        let t = a.issue_ticket(&g).unwrap();
        a.sessions.revoke(&id).await.unwrap();
        let uri = format!("/explorer?ticket={t}");
        assert!(check(&a, &request(&[], &uri, Some("/explorer"))).await.is_err());
        assert!(g.session.unwrap().ended.is_cancelled());
    }
}
