//! Who may use the API: a 256-bit bearer token kept in `web.token` (0600) for API clients, and
//! for browsers a session cookie obtained through a single-use login link.
//!
//! Everything secret lives in the state dir so that a reloaded process (or a second web process
//! sharing the dir) honours what the previous one issued: `web.token`, `web-login/<nonce>`
//! (single-use: redeeming is removing the file, which succeeds once) and `web-sessions/<id>`.
//! Secrets are never logged; the login link is the one exception, by design, and it dies on use.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::metrics::{WebMetrics, inc};
use crate::state::AppState;

pub const TOKEN_FILE: &str = "web.token";
pub const LOGIN_DIR: &str = "web-login";
pub const SESSION_DIR: &str = "web-sessions";
pub const SESSION_COOKIE: &str = "firma_session";
/// A login link is short-lived as well as single-use.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed attempts allowed per window before every attempt is refused until the window ends.
const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
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

fn is_secret_shaped(s: &str) -> bool {
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
fn write_new_private(path: &Path, contents: &str) -> std::io::Result<()> {
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
fn sweep_expired(dir: &Path) {
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

/// Counts failed credentials; past the budget every attempt is refused until the window ends,
/// which makes guessing hopeless without ever telling an attacker which guesses were close.
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

pub struct Auth {
    token: String,
    state_dir: PathBuf,
    /// Session id -> expiry (ms). Files in `web-sessions/` are the truth; this caches them.
    sessions: Mutex<HashMap<String, u64>>,
    limiter: Mutex<FailureLimiter>,
    metrics: Arc<WebMetrics>,
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Bearer,
    Session,
}

impl Auth {
    pub fn new(token: String, state_dir: PathBuf, metrics: Arc<WebMetrics>) -> anyhow::Result<Self> {
        let dir = state_dir.join(SESSION_DIR);
        ensure_private_dir(&dir)?;
        sweep_expired(&dir);
        let mut sessions = HashMap::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(exp) = fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                {
                    sessions.insert(name, exp);
                }
            }
        }
        let limiter = FailureLimiter {
            window_start: Instant::now(),
            failures: 0,
        };
        Ok(Self {
            token,
            state_dir,
            sessions: Mutex::new(sessions),
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

    async fn session_valid(&self, id: &str) -> bool {
        if !is_secret_shaped(id) {
            return false;
        }
        let now = now_ms();
        let cached = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied();
        if let Some(exp) = cached {
            return exp > now;
        }
        // Issued by another web process sharing this state dir.
        let path = self.state_dir.join(SESSION_DIR).join(id);
        let read = tokio::task::spawn_blocking(move || fs::read_to_string(path)).await;
        match read
            .ok()
            .and_then(|r| r.ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(exp) => {
                self.sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_owned(), exp);
                exp > now
            }
            None => false,
        }
    }

    /// Check the request's credential. Bearer wins over a cookie when both are present.
    ///
    /// While failures are rate-limited, a valid credential still gets in: tokens and session ids
    /// are 256-bit secrets nobody can guess in any number of tries, so the limit is there to
    /// throttle and flag noise, and it must not let a stranger lock the real owner out.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Credential, Response> {
        if let Some(given) = bearer(headers) {
            if self.token_matches(given) {
                return Ok(Credential::Bearer);
            }
            return Err(self.refuse());
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            if self.session_valid(id).await {
                return Ok(Credential::Session);
            }
            return Err(self.refuse());
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

    /// Redeem a login nonce and open a session; returns the `Set-Cookie` value.
    async fn login(&self, nonce: String) -> Result<String, Response> {
        if self.limited() {
            inc(&self.metrics.auth_rate_limited);
            return Err(too_many());
        }
        let dir = self.state_dir.clone();
        let ok = tokio::task::spawn_blocking(move || redeem_nonce(&dir, &nonce))
            .await
            .unwrap_or(false);
        if !ok {
            self.fail();
            return Err(ApiError::forbidden(
                "this login link is invalid, expired or already used; get a fresh one with `firma-web login-url`",
            )
            .into_response());
        }
        let id = random_secret();
        let expiry = now_ms() + SESSION_TTL.as_millis() as u64;
        let path = self.state_dir.join(SESSION_DIR).join(&id);
        let written = tokio::task::spawn_blocking(move || write_new_private(&path, &expiry.to_string())).await;
        if !matches!(written, Ok(Ok(()))) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot store the session in {}/{SESSION_DIR}", self.state_dir.display()),
            )
            .into_response());
        }
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), expiry);
        Ok(format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_TTL.as_secs()
        ))
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

/// The value of cookie `name` from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Middleware for every protected route.
pub async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.auth.check(req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    nonce: String,
}

/// `GET /login?nonce=...`: the single-use link. Sets the session cookie and sends the browser home.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    match state.auth.login(q.nonce).await {
        Ok(set_cookie) => {
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            if let Ok(v) = HeaderValue::from_str(&set_cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(r) => r,
    }
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

    #[tokio::test]
    async fn bearer_checks_and_rate_limits() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", a.token)).unwrap(),
        );
        assert_eq!(a.check(&h).await.unwrap(), Credential::Bearer);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.check(&h).await.unwrap_err().status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(a.check(&h).await.unwrap_err().status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(a.check(&HeaderMap::new()).await.is_err());
        // The owner is not locked out by a stranger's failures.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", a.token)).unwrap(),
        );
        assert_eq!(a.check(&h).await.unwrap(), Credential::Bearer);
    }

    #[tokio::test]
    async fn login_link_is_single_use_and_opens_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path());
        let nonce = issue_login_nonce(dir.path()).unwrap();
        let set_cookie = a.login(nonce.clone()).await.unwrap();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
        assert!(a.login(nonce).await.is_err(), "a login link works once");
        let id = set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(a.check(&h).await.unwrap(), Credential::Session);
        // A second process sharing the state dir honours it too.
        let b = auth(dir.path());
        assert_eq!(b.check(&h).await.unwrap(), Credential::Session);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={}", random_secret())).unwrap(),
        );
        assert!(a.check(&h).await.is_err());
    }
}
