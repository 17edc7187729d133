//! firma-transportd as a library: `run(config, ctl)` wires the tasks; `main` and tests call it.
//!
//! Tasks and who owns what:
//! - network (network/): owns the libp2p Swarm; driven by `NetworkHandle` commands, reports
//!   `NetEvent`s.
//! - tracker (tracker.rs): turns `NetEvent`s into store writes, numbered events and the live view.
//! - store writer (store/): the only LMDB write path, batching ops into one commit.
//! - control (control/): the Unix socket and the tarpc server; reads the core, drives the network.
//! - transfers (transfer/): the document-transfer engine; its own streams, the outbox, the blobs.
//!
//! Start order matters. Before anything starts, the account the daemon will run as must reach
//! its directories (reach.rs). Started as root, the daemon then opens its store, binds its socket
//! and any listener on a privileged port, hands its files over and drops root; the other
//! listeners are bound after the drop, by the account that also dials from their ports (TCP port
//! reuse needs one uid). Shutdown runs the other way and is bounded in time.

pub mod config;
pub mod control;
pub mod core;
pub mod events;
pub mod flags;
pub mod identity;
pub mod logging;
pub mod network;
pub mod privileges;
pub mod reach;
pub mod signals;
pub mod store;
pub mod tracker;
pub mod transfer;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::{Core, Counters, LiveState};
use crate::store::{Store, StoreWriter};

/// Applies a new log filter (SIGHUP); errors say why the filter was refused.
pub type SetLogLevel = dyn Fn(&str) -> anyhow::Result<()> + Send + Sync;

/// How the outside drives a running daemon: a stop token and a stream of reloaded configs.
pub struct RunControl {
    pub shutdown: CancellationToken,
    /// Each config received is applied without dropping connections (SIGHUP).
    pub reloads: mpsc::Receiver<Config>,
    /// Applies a new log filter; `None` when the caller manages logging itself (tests).
    pub set_log_level: Option<Box<SetLogLevel>>,
    /// The control socket when a service manager bound it (`LISTEN_FDS`).
    pub inherited_socket: Option<std::os::unix::net::UnixListener>,
}

fn ensure_state_dir(cfg: &Config) -> anyhow::Result<()> {
    let dir = &cfg.state_dir;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "creating state directory {} (set another with --state-dir)",
                    dir.display()
                )
            })?;
    }
    let mode = fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting state directory {} to mode 0700", dir.display()))?;
    }
    Ok(())
}

/// Runs the daemon until `ctl.shutdown` fires, then stops everything within a few seconds.
pub async fn run(config: Config, mut ctl: RunControl) -> anyhow::Result<()> {
    let started = Instant::now();
    let drop_to = privileges::plan(&config.user, config.allow_root)?;
    if let Some(account) = reach::Account::after_start(drop_to.as_ref()) {
        // Started as root, root creates the directories; otherwise the account itself does.
        let creates = drop_to.is_none();
        reach::check(&account, &config.state_dir, creates, "state directory", "--state-dir")?;
        reach::check(
            &account,
            control::socket::socket_dir(&config.socket),
            creates,
            "socket directory",
            "--socket",
        )?;
    }
    ensure_state_dir(&config)?;
    let keypair = identity::load_or_create(&config.state_dir)?;
    // The transfer engine signs manifests and receipts with the same identity.
    let transfer_key = keypair.clone();
    let peer_id = keypair.public().to_peer_id().to_string();

    let store_dir = config.state_dir.join("store");
    let store_cfg = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, &store_cfg, core::now_ms()))
        .await
        .context("store open task")?
        .with_context(|| format!("opening the store in {}", config.state_dir.join("store").display()))?;
    if let firma_ipc::types::StoreHealth::Unhealthy = store.status().health {
        tracing::error!(detail = ?store.status().detail, "the store is unhealthy: serving status, refusing writes");
    }

    let socket = match ctl.inherited_socket.take() {
        Some(l) => {
            tracing::info!(socket = %config.socket.display(), "using the control socket passed by the service manager");
            control::socket::adopt(&config.socket, l)?
        }
        None => control::socket::bind(&config.socket, drop_to.as_ref().map(|t| t.uid))?,
    };

    let (seeds, banned) = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || seeds_from_store(&s))
            .await
            .context("store read task")?
    };
    let redials = seeds.iter().filter(|s| s.redial).count();
    let net_token = ctl.shutdown.child_token();
    let mut starting = network::prepare(
        keypair,
        &config.network,
        config.dev,
        drop_to.is_some(),
        net_token.clone(),
        &transfer::PROTOCOLS,
    )?;
    if drop_to.is_some() {
        // Ports below 1024 can be bound only now; the rest after the drop (see network/dial_ports.rs).
        starting.bind_privileged()?;
    }

    // Everything that needs root is open: hand our files over and drop privileges for good.
    if let Some(t) = &drop_to {
        privileges::hand_over_tree(t, &config.state_dir)?;
        socket.hand_over(t.uid, t.gid)?;
    }
    let daemon_uid = drop_to
        .as_ref()
        .map_or_else(|| nix::unistd::geteuid().as_raw(), |t| t.uid.as_raw());
    match privileges::drop_root(drop_to)? {
        privileges::Outcome::Dropped { user, uid, gid } => tracing::info!(%user, uid, gid, "dropped root privileges"),
        privileges::Outcome::KeptRoot => tracing::warn!("running as root because allow_root is set"),
        privileges::Outcome::NotRoot => {}
    }
    let mut net = starting.start(seeds, banned).await?;

    let (writer, writer_task) = StoreWriter::spawn(store.clone(), 1024);
    let core = Arc::new(Core {
        peer_id: peer_id.clone(),
        started,
        store,
        writer,
        net: net.handle.clone(),
        events: events::EventLog::new(config.events.retained as usize),
        live: Mutex::new(LiveState {
            listen_addrs: net.listen_addrs.clone(),
            discovery: Some(tracker::initial_discovery(config.network.mdns, config.network.dht)),
            ..LiveState::default()
        }),
        counters: Counters::default(),
        transfers: Mutex::new(None),
    });
    let tracker = tokio::spawn(tracker::run(
        core.clone(),
        net.events,
        config.network.ping_interval.max(config.network.rtt_event_interval),
    ));

    let transfer_token = ctl.shutdown.child_token();
    let transfers = transfer::start(
        transfer::EngineParts {
            core: core.clone(),
            keypair: transfer_key,
            config: config.transfer.clone(),
            retry: config.network.retry.clone(),
            state_dir: config.state_dir.clone(),
            streams: net.streams.0.clone(),
            incoming: std::mem::take(&mut net.incoming).0,
        },
        transfer_token,
    )
    .await?;
    *core.transfers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(transfers.engine.clone());

    let policy = control::auth::AccessPolicy {
        daemon_uid,
        control_group: config.control.group.clone(),
        web_users: config.control.web_users.clone(),
    };
    let control_token = ctl.shutdown.child_token();
    let socket_path = socket.path.clone();
    let control = tokio::spawn(control::serve(
        socket,
        core.clone(),
        policy,
        config.control.clone(),
        control_token.clone(),
    ));

    tracing::info!(version = env!("CARGO_PKG_VERSION"), %peer_id, "firma-transportd started");
    for a in &net.listen_addrs {
        tracing::info!("listening on {a}");
    }
    tracing::info!(socket = %socket_path.display(), redials, "control socket ready");
    notify_ready();
    let watchdog = tokio::spawn(watchdog(core.clone()));

    let mut current = config;
    loop {
        tokio::select! {
            () = ctl.shutdown.cancelled() => break,
            Some(new) = ctl.reloads.recv() => {
                apply_reload(&core, &mut current, new, ctl.set_log_level.as_deref()).await;
            }
        }
    }

    // Stop: control first (no new work), then the network (remembers who was connected),
    // then drain the tracker and the writer so every event reaches the disk.
    tracing::info!("stopping");
    watchdog.abort();
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    control_token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), control).await;
    core.transfers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    transfers.stop().await;
    net_token.cancel();
    let connected = match tokio::time::timeout(Duration::from_secs(3), net.task).await {
        Ok(Ok(list)) => list,
        _ => Vec::new(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker).await;
    // Close open history records but keep "was connected", so those peers are redialled next time.
    if let Err(e) = core
        .writer
        .send(store::StoreOp::DaemonStopping { at_ms: core::now_ms() })
        .await
    {
        tracing::warn!(error = %e, "could not record the stop in the store");
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(3), core.writer.flush())
        .await
        .unwrap_or(Ok(()))
    {
        tracing::warn!(error = %e, "final store flush failed");
    }
    drop(core);
    let _ = tokio::time::timeout(Duration::from_secs(3), writer_task).await;
    tracing::info!(
        connected = connected.len(),
        "stopped; these peers will be redialled at the next start"
    );
    Ok(())
}

/// Peers to hand the network at start: everyone with addresses (for Kademlia and the address
/// book), flagged for redial if they were connected or are pinned.
fn seeds_from_store(store: &Store) -> (Vec<network::SeedPeer>, Vec<String>) {
    let peers = match store.list_peers() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not read stored peers; starting without them");
            return (Vec::new(), Vec::new());
        }
    };
    let banned = peers.iter().filter(|p| p.banned).map(|p| p.peer_id.clone()).collect();
    let seeds = peers
        .into_iter()
        .filter(|p| !p.banned)
        .map(|p| network::SeedPeer {
            redial: p.was_connected || p.pinned,
            addrs: p.addrs.iter().map(|a| a.addr.clone()).collect(),
            peer_id: p.peer_id,
        })
        .collect();
    (seeds, banned)
}

async fn apply_reload(core: &Core, current: &mut Config, new: Config, set_log_level: Option<&SetLogLevel>) {
    if new.log.level != current.log.level
        && let Some(set) = set_log_level
    {
        match set(&new.log.level) {
            Ok(()) => tracing::info!(level = %new.log.level, "log level changed"),
            Err(e) => tracing::warn!(error = %e, "log level not changed"),
        }
    }
    if new.network != current.network {
        match core.net.reload(new.network.clone()).await {
            Ok(()) => tracing::info!("network settings reloaded (bootstrap list, limits, retry strategy)"),
            Err(e) => tracing::warn!(error = %e, "network settings not reloaded"),
        }
    }
    for (what, changed) in [
        ("socket", new.socket != current.socket),
        ("state_dir", new.state_dir != current.state_dir),
        ("user", new.user != current.user),
        ("store", new.store != current.store),
        ("control", new.control != current.control),
        ("transfer", new.transfer != current.transfer),
    ] {
        if changed {
            tracing::warn!(key = what, "this setting changes only at the next start");
        }
    }
    *current = new;
}

/// Tells systemd (Type=notify) that the daemon is ready, when started by it.
fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready])
    {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
}

/// systemd's watchdog: pings at half the interval, but only while the network task answers,
/// so a wedged swarm gets the daemon restarted.
async fn watchdog(core: Arc<Core>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match tokio::time::timeout(period, core.net.listen_addrs()).await {
            Ok(Ok(_)) => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            _ => tracing::error!("network task did not answer in time; withholding the watchdog ping"),
        }
    }
}
