//! firma-web: flags -> WebConfig -> run; then stop, or re-execute for a reload.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use firma_web::config::{WebConfig, check_listen};
use firma_web::reload::{self, Handoff};
use firma_web::security::parse_origin;
use firma_web::state::Shutdown;
use firma_web::{Outcome, auth, login_url};

#[derive(Debug, Parser)]
#[command(
    name = "firma-web",
    version,
    about = "REST and WebSocket bridge of firma-transportd",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve(ServeArgs),
    /// Print a fresh single-use browser login link for a running server.
    LoginUrl(LoginArgs),
    /// List or revoke browser sessions (a revoked session stops working at once, and its open
    /// WebSockets close within a second).
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// The unexpired sessions: a short id (what `revoke` takes) and when each expires.
    List(SessionsListArgs),
    /// Revoke one session by the id `list` shows, or every session with --all.
    Revoke(SessionsRevokeArgs),
}

#[derive(Debug, Args)]
struct SessionsListArgs {
    /// The server's state dir.
    #[arg(long, env = "FIRMA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SessionsRevokeArgs {
    /// The server's state dir.
    #[arg(long, env = "FIRMA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The session's id as `firma-web sessions list` shows it (or the whole id).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Revoke every session: every browser must sign in again.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (ignored when a socket is inherited through LISTEN_FDS).
    #[arg(long, env = "FIRMA_WEB_LISTEN", default_value = WebConfig::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The daemon's control socket [default: the per-user or system runtime dir]
    #[arg(long, env = "FIRMA_SOCKET")]
    socket: Option<PathBuf>,
    /// Where web.token, login links and sessions live [default: the firma state dir]
    #[arg(long, env = "FIRMA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Allow a non-loopback --listen (put a TLS proxy in front).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Another Host header value to accept, e.g. a proxy's `firma.example.org` (repeatable).
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// Let pages of this origin call the API and open the WebSockets, e.g. upstream's Vite dev
    /// server `http://localhost:3000` (repeatable; comma-separated in FIRMA_WEB_ALLOW_ORIGINS).
    /// They still need a session or the token; every other origin stays refused.
    #[arg(
        long = "allow-origin",
        value_name = "ORIGIN",
        env = "FIRMA_WEB_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    allow_origins: Vec<String>,
    /// Close a connection that has not sent a whole request head within this long, in ms.
    #[arg(long, env = "FIRMA_WEB_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// Most client connections at once, WebSockets included; more wait in the accept queue.
    /// Keep it under the process's open-file limit (LimitNOFILE).
    #[arg(long, env = "FIRMA_WEB_MAX_CONNECTIONS", default_value_t = 8192)]
    max_connections: usize,
    /// First delay before reconnecting to a vanished daemon, in ms; doubles up to --reconnect-max-ms.
    #[arg(long, default_value_t = 250)]
    reconnect_interval_ms: u64,
    #[arg(long, default_value_t = 5000)]
    reconnect_max_ms: u64,
    /// Deadline for in-flight requests on reload or stop, in ms.
    #[arg(long, default_value_t = 5000)]
    drain_timeout_ms: u64,
    /// Ping WebSocket clients idle this long (ms); close those silent for twice as long.
    #[arg(long, default_value_t = 30_000)]
    ws_ping_interval_ms: u64,
    /// Events queued per WebSocket client before it is told it lagged and is resynced.
    #[arg(long, default_value_t = 4096)]
    ws_queue: usize,
    /// Most WebSocket clients at once.
    #[arg(long, default_value_t = 4096)]
    max_ws_clients: usize,
    /// Kernel send buffer per client connection, in bytes (0: the kernel's autotuning).
    #[arg(long, default_value_t = 256 * 1024)]
    tcp_send_buffer: usize,
}

#[derive(Debug, Args)]
struct LoginArgs {
    /// The running server's state dir.
    #[arg(long, env = "FIRMA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The running server's listen address.
    #[arg(long, env = "FIRMA_WEB_LISTEN", default_value = WebConfig::DEFAULT_LISTEN)]
    listen: SocketAddr,
}

fn config(a: ServeArgs) -> anyhow::Result<WebConfig> {
    check_listen(&a.listen, a.allow_non_loopback).map_err(anyhow::Error::msg)?;
    if a.reconnect_interval_ms == 0 || a.ws_ping_interval_ms < 100 || a.ws_queue == 0 {
        anyhow::bail!("--reconnect-interval-ms must be > 0, --ws-ping-interval-ms >= 100, --ws-queue > 0");
    }
    if a.header_read_timeout_ms < 100 || a.max_connections == 0 {
        anyhow::bail!("--header-read-timeout-ms must be >= 100 and --max-connections > 0");
    }
    let allow_origins = a
        .allow_origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    Ok(WebConfig {
        listen: a.listen,
        socket: a.socket.unwrap_or_else(firma_ipc::paths::default_socket),
        state_dir: a.state_dir.unwrap_or_else(firma_ipc::paths::default_state_dir),
        allowed_hosts: a.allowed_hosts,
        allow_origins,
        header_read_timeout: Duration::from_millis(a.header_read_timeout_ms),
        max_connections: a.max_connections,
        reconnect_min: Duration::from_millis(a.reconnect_interval_ms),
        reconnect_max: Duration::from_millis(a.reconnect_max_ms.max(a.reconnect_interval_ms)),
        drain_timeout: Duration::from_millis(a.drain_timeout_ms),
        ws_ping_interval: Duration::from_millis(a.ws_ping_interval_ms),
        ws_queue: a.ws_queue,
        max_ws_clients: a.max_ws_clients,
        tcp_send_buffer: a.tcp_send_buffer,
        reexecuted: std::env::var_os(reload::REEXEC_ENV).is_some(),
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Both before any thread exists: the path must be the one we were started from, and
    // listenfd edits the environment.
    let handoff = Handoff::capture()?;
    let inherited = reload::inherited_listener()?;
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(firma_web::run(
        config,
        inherited,
        Some(handoff.exe().to_owned()),
        Shutdown::default(),
    ));
    runtime.shutdown_timeout(Duration::from_millis(500));
    match outcome? {
        Outcome::Stopped => Ok(()),
        Outcome::Reload(fd) => Err(reload::reexec(&handoff, fd)),
    }
}

fn login(args: LoginArgs) -> anyhow::Result<()> {
    let dir = args.state_dir.unwrap_or_else(firma_ipc::paths::default_state_dir);
    let nonce = auth::issue_login_nonce(&dir)?;
    println!("{}", login_url(args.listen, &nonce));
    Ok(())
}

fn sessions(cmd: SessionsCommand) -> anyhow::Result<()> {
    match cmd {
        SessionsCommand::List(a) => {
            let dir = a.state_dir.unwrap_or_else(firma_ipc::paths::default_state_dir);
            let list = auth::list_sessions(&dir)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no sessions in {}", dir.display());
            } else {
                println!("{:<14} EXPIRES", "ID");
                for s in list {
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(s.expires_at_ms);
                    println!("{:<14} {}", s.id, humantime::format_rfc3339_seconds(at));
                }
            }
        }
        SessionsCommand::Revoke(a) => {
            let dir = a.state_dir.unwrap_or_else(firma_ipc::paths::default_state_dir);
            let which = match &a.id {
                Some(id) if !a.all => auth::Which::Id(id),
                _ => auth::Which::All,
            };
            let n = auth::revoke_sessions(&dir, which)?;
            println!("revoked {n} session(s)");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(a)) => serve(a),
        Some(Command::LoginUrl(a)) => login(a),
        Some(Command::Sessions(c)) => sessions(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("firma-web: {e:#}");
            ExitCode::FAILURE
        }
    }
}
