//! firma-web: the REST + WebSocket bridge between browsers and `firma-transportd`.
//!
//! Tasks: the axum server (routes/, ws.rs, explorer_ws.rs), the one daemon link and event follower
//! (daemon_link.rs), the `/explorer` feed that translates its events once (explorer_feed.rs), the
//! signal watcher (reload.rs). `run` wires them, serves until a signal, then
//! drains and reports whether to stop or to re-execute with the listening socket.

pub mod assets;
pub mod auth;
pub mod config;
pub mod daemon_link;
pub mod error;
pub mod explorer_feed;
pub mod explorer_groups;
pub mod explorer_ws;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod routes;
pub mod security;
pub mod serve;
pub mod state;
pub mod ws;
pub mod ws_split;

use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::RngCore as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::WebConfig;
use crate::daemon_link::DaemonLink;
use crate::explorer_feed::ExplorerFeed;
use crate::metrics::WebMetrics;
use crate::security::{HostPolicy, OriginPolicy};
use crate::state::{AppState, Shutdown, WsStats};

/// Accept queue length: clients that connect while a reload is under way wait here.
const LISTEN_BACKLOG: u32 = 1024;
/// How long a stop waits for accepted-but-silent connections to send their request. It ends as
/// soon as none is left, so it only costs time when a client connected and stays silent (a
/// browser's speculative preconnect); 250 ms proved too short on a loaded 2-core machine, where
/// a client could be scheduled late between connect() and its first write and get a reset.
const FRESH_GRACE: Duration = Duration::from_millis(1000);
/// How long a fresh process waits for its first daemon connection before serving anyway.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(3);

/// How `run` ended.
pub enum Outcome {
    Stopped,
    /// Reload asked: exec the new build with this listening socket.
    Reload(OwnedFd),
}

fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("cannot create a TCP socket")?;
    socket.set_reuseaddr(true).context("cannot set SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot bind {addr} (in use? pick another with --listen)"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The URL to give a person for `nonce`; a wildcard bind is reached through loopback.
pub fn login_url(addr: SocketAddr, nonce: &str) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("http://{host}:{}/login?nonce={nonce}", addr.port())
}

/// Serve until SIGUSR2, SIGTERM or SIGINT (or `shutdown` triggered by the caller), then drain.
/// `inherited` is the socket from `LISTEN_FDS` (a reload's or a supervisor's); `reload_exe` the binary
/// a reload will execute (checked before a SIGUSR2 stops anything).
pub async fn run(
    config: WebConfig,
    inherited: Option<std::net::TcpListener>,
    reload_exe: Option<PathBuf>,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let signals = reload::watch_signals(shutdown.clone(), reload_exe)?;
    let reloaded = config.reexecuted;
    let listener = match inherited {
        Some(l) => {
            l.set_nonblocking(true)
                .context("cannot make the inherited socket non-blocking")?;
            tokio::net::TcpListener::from_std(l).context("cannot use the inherited listening socket")?
        }
        None => bind(config.listen)?,
    };
    let bound = listener.local_addr().context("cannot read the listening address")?;
    // A second handle on the socket: it keeps listening while the server drains, and is what the
    // next build inherits.
    let handoff = listener
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate the listening socket")?;

    let metrics = Arc::new(WebMetrics::default());
    let state_dir = config.state_dir.clone();
    let auth_metrics = metrics.clone();
    let auth = tokio::task::spawn_blocking(move || -> anyhow::Result<Auth> {
        let token = auth::load_or_create_token(&state_dir)?;
        Auth::new(token, state_dir, auth_metrics)
    })
    .await
    .context("auth setup task failed")??;

    let link = DaemonLink::new(
        config.socket.clone(),
        config.ws_queue,
        config.reconnect_min,
        config.reconnect_max,
        metrics.clone(),
    );
    // The link outlives the HTTP server: requests still draining may need the daemon.
    let link_stop = CancellationToken::new();
    let link_task = tokio::spawn(link.clone().run(link_stop.clone()));
    let explorer = ExplorerFeed::new(link.clone(), config.ws_queue);
    let feed_task = tokio::spawn(explorer.clone().run(link_stop.clone()));
    link.first_attempt(FIRST_CONNECT_WAIT).await;

    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let instance_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let state = AppState {
        hosts: Arc::new(HostPolicy::new(bound, &config.allowed_hosts)),
        origins: Arc::new(OriginPolicy::new(&config.allow_origins)),
        config: Arc::new(config),
        link: link.clone(),
        auth: Arc::new(auth),
        metrics,
        bound,
        instance_id: instance_id.into(),
        started: Instant::now(),
        shutdown: shutdown.clone(),
        ws_tasks: TaskTracker::new(),
        ws_stats: Arc::new(WsStats::default()),
        explorer,
        groups: Arc::default(),
    };
    tracing::info!(addr = %bound, instance_id = %state.instance_id, reloaded, "firma-web serving");
    if !reloaded {
        let dir = state.config.state_dir.clone();
        match tokio::task::spawn_blocking(move || auth::issue_login_nonce(&dir)).await {
            Ok(Ok(nonce)) => tracing::info!("sign in from a browser (single use): {}", login_url(bound, &nonce)),
            Ok(Err(e)) => tracing::warn!("no login link: {e:#}"),
            Err(e) => tracing::warn!("no login link: {e}"),
        }
    }

    let app = routes::router(state.clone());
    let (listener, fresh) =
        listener::DrainingListener::new(listener, shutdown.token().clone(), state.config.tcp_send_buffer);
    // Told only once the connections already accepted have spoken (see listener.rs).
    let graceful = CancellationToken::new();
    let limits = serve::ConnLimits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
    };
    let mut server = tokio::spawn(serve::serve(listener, app, limits, graceful.clone()));
    // Biased: once shutdown is asked, the server ending is the drain, not a failure.
    let ended_early = tokio::select! {
        biased;
        _ = shutdown.token().cancelled() => None,
        r = &mut server => Some(r),
    };
    if let Some(r) = ended_early {
        // The server loop only ends by itself if it panicked; stop everything with it.
        shutdown.trigger(false);
        link_stop.cancel();
        r.context("server task failed")?;
        anyhow::bail!("the HTTP server on {bound} stopped by itself");
    }
    fresh.settle(FRESH_GRACE).await;
    graceful.cancel();
    state.ws_tasks.close();
    let deadline = state.config.drain_timeout;
    let drained = tokio::time::timeout(deadline, async {
        let _ = (&mut server).await;
        state.ws_tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?deadline,
            "requests still in flight after the drain deadline were cut off"
        );
        server.abort();
    }
    link_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), link_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), feed_task).await;
    signals.abort();
    Ok(if shutdown.is_reload() {
        Outcome::Reload(handoff)
    } else {
        Outcome::Stopped
    })
}
