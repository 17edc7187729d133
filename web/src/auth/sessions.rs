//! Browser sessions: one file per session in `web-sessions/<id>` (0600, holding the expiry in ms),
//! which is the truth every web process sharing the state dir reads, and an in-process table of
//! the sessions in use, each with a token that ends the WebSockets opened under it.
//!
//! Revocation is removing the file, by `/logout` here, by another web process, or by
//! `firma-web sessions revoke`. Every request reads the file, so a revoked session stops opening
//! the API at once; a watcher polls the files of sessions in use and ends their sockets within
//! [`WATCH_INTERVAL`]; expiry ends them on time by itself.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{SESSION_DIR, SESSION_TTL, is_secret_shaped, now_ms, random_secret, sweep_expired, write_new_private};

/// How soon a session revoked outside this process ends its open sockets.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Characters of a session id shown by `firma-web sessions list`: enough to name one, too few to
/// use as a credential.
pub const SHOWN_ID: usize = 12;

/// A session in use by this process.
struct Live {
    expiry_ms: u64,
    ended: CancellationToken,
}

/// A validated session, as a request carries it.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub id: Arc<str>,
    pub expiry_ms: u64,
    /// Cancelled when the session is revoked (expiry is a deadline the holder waits for).
    pub ended: CancellationToken,
}

pub struct SessionStore {
    dir: PathBuf,
    live: Mutex<HashMap<String, Live>>,
    watching: AtomicBool,
}

fn read_expiry(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl SessionStore {
    /// Open (and create, 0700) `state_dir/web-sessions`, dropping expired sessions.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let dir = state_dir.join(SESSION_DIR);
        super::ensure_private_dir(&dir)?;
        sweep_expired(&dir);
        Ok(Self {
            dir,
            live: Mutex::new(HashMap::new()),
            watching: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session's id and expiry. Blocking (file system).
    pub fn create(&self) -> io::Result<(String, u64)> {
        let id = random_secret();
        let expiry = now_ms() + SESSION_TTL.as_millis() as u64;
        write_new_private(&self.dir.join(&id), &expiry.to_string())?;
        Ok((id, expiry))
    }

    /// The session `id` if its file exists and has not expired. Reads the file every time:
    /// revocation elsewhere must take effect on the next request.
    pub async fn validate(self: &Arc<Self>, id: &str) -> Option<SessionRef> {
        if !is_secret_shaped(id) {
            return None;
        }
        let path = self.dir.join(id);
        let expiry = tokio::task::spawn_blocking(move || read_expiry(&path))
            .await
            .ok()
            .flatten();
        match expiry {
            Some(exp) if exp > now_ms() => {
                self.watch();
                let mut live = self.live();
                let entry = live.entry(id.to_owned()).or_insert_with(|| Live {
                    expiry_ms: exp,
                    ended: CancellationToken::new(),
                });
                entry.expiry_ms = exp;
                Some(SessionRef {
                    id: id.into(),
                    expiry_ms: exp,
                    ended: entry.ended.clone(),
                })
            }
            found => {
                if found.is_some() {
                    // Expired: nobody can use it again, so it need not wait for a sweep.
                    let path = self.dir.join(id);
                    let _ = tokio::task::spawn_blocking(move || fs::remove_file(path)).await;
                }
                self.end(id);
                None
            }
        }
    }

    /// End the sockets of `id` in this process and forget it.
    fn end(&self, id: &str) {
        if let Some(l) = self.live().remove(id) {
            l.ended.cancel();
        }
    }

    /// Revoke `id`: remove its file (for every process) and end its sockets here.
    pub async fn revoke(&self, id: &str) -> io::Result<()> {
        let path = self.dir.join(id);
        let removed = tokio::task::spawn_blocking(move || fs::remove_file(path))
            .await
            .map_err(io::Error::other)?;
        self.end(id);
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Start the watcher once, on the first session in use. It holds the store weakly and stops
    /// with it.
    fn watch(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.poll().await;
            }
        });
    }

    /// End the sessions in use whose file is gone or whose time is up.
    async fn poll(&self) {
        let ids: Vec<String> = self.live().keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let dir = self.dir.clone();
        let now = now_ms();
        let gone = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .filter(|id| read_expiry(&dir.join(id)).is_none_or(|exp| exp <= now))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for id in gone {
            self.end(&id);
        }
    }
}

/// One session as `firma-web sessions list` shows it.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// The first [`SHOWN_ID`] characters of the id: what `sessions revoke` takes.
    pub id: String,
    pub expires_at_ms: u64,
}

/// The unexpired sessions in `state_dir`, soonest to expire first. Blocking.
pub fn list(state_dir: &Path) -> anyhow::Result<Vec<SessionInfo>> {
    let dir = state_dir.join(SESSION_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", dir.display()))),
    };
    let now = now_ms();
    let mut out: Vec<SessionInfo> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let exp = read_expiry(&e.path())?;
            (is_secret_shaped(&name) && exp > now).then(|| SessionInfo {
                id: name[..SHOWN_ID].to_owned(),
                expires_at_ms: exp,
            })
        })
        .collect();
    out.sort_by_key(|s| s.expires_at_ms);
    Ok(out)
}

/// Which sessions `revoke` removes.
pub enum Which<'a> {
    All,
    /// A full id or the prefix `sessions list` shows (at least [`SHOWN_ID`] characters).
    Id(&'a str),
}

/// Remove the matching session files; running servers end those sessions within
/// [`WATCH_INTERVAL`]. Returns how many were revoked. Blocking.
pub fn revoke(state_dir: &Path, which: Which<'_>) -> anyhow::Result<usize> {
    let dir = state_dir.join(SESSION_DIR);
    if let Which::Id(prefix) = which
        && (prefix.len() < SHOWN_ID || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        anyhow::bail!(
            "{prefix:?} is not a session id: give the {SHOWN_ID}-character id `firma-web sessions list` shows, or --all"
        );
    }
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound && matches!(which, Which::All) => return Ok(0),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {} (check --state-dir)", dir.display())));
        }
    };
    let targets: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            is_secret_shaped(&name)
                && match which {
                    Which::All => true,
                    Which::Id(p) => name.starts_with(&p.to_ascii_lowercase()),
                }
        })
        .map(|e| e.path())
        .collect();
    if let Which::Id(p) = which {
        match targets.len() {
            0 => anyhow::bail!("no session {p} in {}; see `firma-web sessions list`", dir.display()),
            1 => {}
            n => anyhow::bail!("{p} names {n} sessions; give more of the id"),
        }
    }
    // Expired files go too, but only live sessions count as revoked.
    let now = now_ms();
    let mut revoked = 0;
    for t in &targets {
        let live = read_expiry(t).is_some_and(|exp| exp > now);
        match fs::remove_file(t) {
            Ok(()) => revoked += usize::from(live),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot remove {}", t.display()))),
        }
    }
    Ok(revoked)
}
