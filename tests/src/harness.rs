//! A real `firma-transportd` process in a temp dir: spawn, wait until its socket answers, call
//! its API, signal, restart on the same state, kill. Dropping a [`Daemon`] kills and reaps the
//! process and prints the tail of its log, which the test runner shows only for a failing test.
//!
//! Layout of a daemon's temp dir: `state/` (identity + LMDB), `run/transportd.sock` (the daemon
//! creates `run/` itself, so its mode is the daemon's doing), `daemon.log` (stdout and stderr of
//! every start, appended), `transportd.toml` when a config is given.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use firma_ipc::IpcError;
use firma_ipc::client::{CALL_TIMEOUT, Connection, connect, ctx};
use firma_ipc::types::{ConnectOutcome, PeerFilter, PeerInfo, Role, Status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::cli::{CliOutput, run_cli};
use crate::wait::{POLL, wait_for, wait_for_value};

/// How long a daemon gets to answer `status` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon gets to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a loopback connection may take to show up on both sides.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// util-linux's setpriv, used for its `--pdeathsig`.
const SETPRIV: &str = "/usr/bin/setpriv";
/// Lines of the log printed when a daemon is dropped.
const LOG_TAIL_LINES: usize = 150;

/// How to start a daemon. `Default` gives a loopback-only node with discovery off.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    /// A label for log output, e.g. "a" or "peer-3".
    pub name: String,
    /// `--listen` multiaddrs. Default: TCP on 127.0.0.1, port 0.
    pub listen: Vec<String>,
    /// Also listen on QUIC on 127.0.0.1, port 0.
    pub quic: bool,
    /// Leave mDNS on. Refused unless `wrapper` puts the daemon into another network namespace.
    pub mdns: bool,
    /// Leave the DHT on (the bootstrap list stays empty either way).
    pub dht: bool,
    /// Pass `--allow-root` (tests run as root). Off for the privilege-drop test.
    pub allow_root: bool,
    /// `--user NAME`.
    pub user: Option<String>,
    /// TOML written to `transportd.toml` and passed with `--config`.
    pub config: Option<String>,
    /// Extra `FIRMA_*` (or other) environment for the daemon.
    pub env: Vec<(String, String)>,
    /// Extra flags, appended last.
    pub args: Vec<String>,
    /// A command prefix, e.g. `ip netns exec NS`, that must exec the daemon (so its pid is the daemon's).
    pub wrapper: Vec<String>,
    /// Use this state dir instead of `<tmp>/state` (to share one with another daemon).
    pub state_dir: Option<PathBuf>,
    /// Use this socket instead of `<tmp>/run/transportd.sock`.
    pub socket: Option<PathBuf>,
    /// Make the temp dir 0755 so that a dropped-privilege daemon or another uid can reach it.
    pub world_traversable: bool,
    pub ready_timeout: Duration,
    /// Print the log tail when dropped (the test runner shows it only for failing tests); the
    /// bench turns it off to keep its output readable.
    pub echo_log_on_drop: bool,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        Self {
            name: "daemon".to_owned(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            quic: false,
            mdns: false,
            dht: false,
            allow_root: true,
            user: None,
            config: None,
            // Fast redials, so that reconnect tests measure the daemon rather than a long backoff.
            env: vec![
                ("FIRMA_NETWORK__RETRY__INITIAL_DELAY".to_owned(), "50ms".to_owned()),
                ("FIRMA_NETWORK__RETRY__MAX_DELAY".to_owned(), "1s".to_owned()),
            ],
            args: Vec::new(),
            wrapper: Vec::new(),
            state_dir: None,
            socket: None,
            world_traversable: false,
            ready_timeout: READY_TIMEOUT,
            echo_log_on_drop: true,
        }
    }
}

impl DaemonOpts {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
}

/// One daemon under test, with its temp dir. See the module docs for the layout.
pub struct Daemon {
    pub opts: DaemonOpts,
    dir: TempDir,
    state_dir: PathBuf,
    socket: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Learned from the first `status`; a restarted daemon must keep it.
    peer_id: Option<String>,
}

impl Daemon {
    /// Start a daemon and wait until its control socket answers `status` with `/p2p/` addresses.
    pub async fn spawn(opts: DaemonOpts) -> anyhow::Result<Daemon> {
        let mut d = Self::launch(opts)?;
        d.wait_ready().await?;
        Ok(d)
    }

    /// Start the process without waiting for it; for daemons that are expected to fail.
    pub fn launch(opts: DaemonOpts) -> anyhow::Result<Daemon> {
        if opts.mdns && opts.wrapper.is_empty() {
            bail!(
                "refusing to start `{}` with mDNS in the machine's own network namespace",
                opts.name
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("firma-e2e-{}-", opts.name))
            .tempdir()?;
        if opts.world_traversable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 0755 {}", dir.path().display()))?;
        }
        let state_dir = opts.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("run").join("transportd.sock"));
        let log_path = dir.path().join("daemon.log");
        let mut d = Daemon {
            opts,
            dir,
            state_dir,
            socket,
            log_path,
            child: None,
            peer_id: None,
        };
        d.start_process()?;
        Ok(d)
    }

    fn command(&self) -> anyhow::Result<Command> {
        let bin = crate::bins::daemon()?;
        // `setpriv --pdeathsig KILL` execs the daemon (same pid) with a parent-death signal, so
        // that even a test process killed outright leaves no daemon behind. Drop reaps otherwise.
        let mut argv: Vec<std::ffi::OsString> = self.opts.wrapper.iter().map(Into::into).collect();
        if Path::new(SETPRIV).is_file() {
            argv.extend([SETPRIV.into(), "--pdeathsig".into(), "KILL".into(), "--".into()]);
        }
        argv.push(bin.into_os_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        clear_firma_env(&mut cmd);
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket);
        for l in &self.opts.listen {
            cmd.arg("--listen").arg(l);
        }
        if self.opts.quic {
            cmd.arg("--listen").arg("/ip4/127.0.0.1/udp/0/quic-v1");
        }
        if !self.opts.mdns {
            cmd.arg("--no-mdns");
        }
        if !self.opts.dht {
            cmd.arg("--no-dht");
        }
        if self.opts.allow_root {
            cmd.arg("--allow-root");
        }
        if let Some(user) = &self.opts.user {
            cmd.arg("--user").arg(user);
        }
        if let Some(toml) = &self.opts.config {
            let path = self.dir.path().join("transportd.toml");
            std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
            cmd.arg("--config").arg(path);
        }
        cmd.arg("--log-format").arg("text");
        cmd.args(&self.opts.args);
        cmd.env("RUST_BACKTRACE", "1");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    fn start_process(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("daemon `{}` is already running", self.opts.name);
        }
        let mut cmd = self.command()?;
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        writeln!(log, "===== harness: starting `{}`: {:?}", self.opts.name, cmd)?;
        let err_log = log.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err_log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Wait until `status` answers with at least one `/p2p/` listen address.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Status> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            if let Some(code) = self.try_exit()? {
                bail!(
                    "daemon `{}` exited with {code} before it was ready; log:\n{}",
                    self.opts.name,
                    self.log_tail()
                );
            }
            if let Ok(st) = self.status().await
                && st.listen_addrs.iter().any(|a| a.contains("/p2p/"))
            {
                if let Some(known) = &self.peer_id
                    && known != &st.peer_id
                {
                    bail!(
                        "daemon `{}` came back as {} but was {known}",
                        self.opts.name,
                        st.peer_id
                    );
                }
                self.peer_id = Some(st.peer_id.clone());
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "daemon `{}` did not answer status on {} within {:?}; log:\n{}",
                    self.opts.name,
                    self.socket.display(),
                    self.opts.ready_timeout,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.opts.name
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// Everything the daemon wrote, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The PeerId the daemon reported when it was first ready.
    pub fn peer_id(&self) -> &str {
        self.peer_id.as_deref().unwrap_or("<not ready yet>")
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .map(Pid::from_raw)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// `Some(status)` once the process has exited (and been reaped).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let st = child.try_wait()?;
        if st.is_some() {
            self.child = None;
        }
        Ok(st)
    }

    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("daemon `{}` is not running", self.opts.name))?;
        kill(pid, sig).with_context(|| format!("sending {sig} to daemon `{}` ({pid})", self.opts.name))
    }

    /// Wait for the process to exit by itself (e.g. after a signal or a fatal startup error).
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon `{}` is not running", self.opts.name)
        };
        let res = wait_for_value(deadline, &format!("daemon `{}` to exit", self.opts.name), || {
            let st = child.try_wait().ok().flatten();
            async move { st }
        })
        .await;
        match res {
            Ok((st, _)) => Ok(st),
            Err(e) => {
                self.child = Some(child);
                Err(e.context(self.log_tail()))
            }
        }
    }

    /// SIGTERM, and require a clean exit (status 0) with the socket file removed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)?;
        let st = self.wait_exit(EXIT_TIMEOUT).await?;
        if !st.success() {
            bail!(
                "daemon `{}` exited with {st} after SIGTERM; log:\n{}",
                self.opts.name,
                self.log_tail()
            );
        }
        if self.socket.exists() {
            bail!(
                "daemon `{}` exited but left its socket {} behind",
                self.opts.name,
                self.socket.display()
            );
        }
        Ok(())
    }

    /// SIGKILL and reap: no chance to clean up, as after a crash or power loss.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.wait_exit(EXIT_TIMEOUT).await.map(|_| ())
    }

    /// Start again on the same state dir and socket, and wait until ready.
    pub async fn start(&mut self) -> anyhow::Result<Status> {
        self.start_process()?;
        self.wait_ready().await
    }

    /// Graceful stop, then start on the same state dir and socket.
    pub async fn restart(&mut self) -> anyhow::Result<Status> {
        self.stop().await?;
        self.start().await
    }

    /// A fresh operator connection (tests run as root).
    pub async fn client(&self) -> anyhow::Result<Connection> {
        Ok(connect(&self.socket, "firma-tests", Role::Operator).await?)
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let c = self.client().await?;
        flatten(c.client.status(ctx(CALL_TIMEOUT)).await)
    }

    pub async fn peers(&self, filter: PeerFilter) -> anyhow::Result<Vec<PeerInfo>> {
        let c = self.client().await?;
        flatten(c.client.peers(ctx(CALL_TIMEOUT), filter).await)
    }

    pub async fn peer(&self, peer_id: &str) -> anyhow::Result<PeerInfo> {
        let c = self.client().await?;
        flatten(c.client.peer(ctx(CALL_TIMEOUT), peer_id.to_owned()).await)
    }

    pub async fn connect(&self, target: &str) -> anyhow::Result<ConnectOutcome> {
        let c = self.client().await?;
        flatten(c.client.connect(ctx(CALL_TIMEOUT), target.to_owned()).await)
            .with_context(|| format!("daemon `{}` connecting to {target}", self.opts.name))
    }

    /// Whether `peers(Connected)` lists `peer_id` as connected.
    pub async fn is_connected_to(&self, peer_id: &str) -> bool {
        match self.peers(PeerFilter::Connected).await {
            Ok(peers) => peers.iter().any(|p| p.peer_id == peer_id && p.connected),
            Err(_) => false,
        }
    }

    /// Wait until this daemon lists `peer_id` as connected; returns how long it took.
    pub async fn wait_connected(&self, peer_id: &str, deadline: Duration) -> anyhow::Result<Duration> {
        let what = format!("daemon `{}` to list {peer_id} as connected", self.opts.name);
        wait_for(deadline, &what, || self.is_connected_to(peer_id))
            .await
            .with_context(|| format!("log of `{}`:\n{}", self.opts.name, self.log_tail()))
    }

    /// Dial `other` over loopback TCP through the API and wait until both list each other as connected.
    pub async fn connect_to(&self, other: &Daemon) -> anyhow::Result<ConnectOutcome> {
        self.connect_over(other, "/tcp/").await
    }

    /// Like [`Daemon::connect_to`], over the first listen address of `other` that contains `proto`.
    pub async fn connect_over(&self, other: &Daemon, proto: &str) -> anyhow::Result<ConnectOutcome> {
        let addr = other.listen_addr(proto).await?;
        let out = self.connect(&addr).await?;
        if out.peer_id != other.peer_id() {
            bail!("dialled {addr} of `{}` but reached {}", other.name(), out.peer_id);
        }
        self.wait_connected(other.peer_id(), CONNECT_TIMEOUT).await?;
        other.wait_connected(self.peer_id(), CONNECT_TIMEOUT).await?;
        Ok(out)
    }

    /// The first listen address (with `/p2p/`) that contains `proto`, e.g. "/tcp/" or "/quic-v1".
    pub async fn listen_addr(&self, proto: &str) -> anyhow::Result<String> {
        let st = self.status().await?;
        st.listen_addrs
            .iter()
            .find(|a| a.contains(proto) && a.contains("/p2p/"))
            .cloned()
            .with_context(|| {
                format!(
                    "daemon `{}` has no {proto} listen address: {:?}",
                    self.opts.name, st.listen_addrs
                )
            })
    }

    /// The loopback TCP address to dial this daemon at.
    pub async fn tcp_addr(&self) -> anyhow::Result<String> {
        self.listen_addr("/tcp/").await
    }

    /// Run `firmactl --socket <this socket> ARGS...`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let socket = self.socket.to_string_lossy().into_owned();
        let mut full = vec!["--socket", socket.as_str()];
        full.extend_from_slice(args);
        run_cli(&full).await
    }

    /// Open the socket's directory (0755) and the socket (0666) to every account, so that only
    /// the daemon's own credential checks and limits stand between another uid and the API.
    /// Needs `world_traversable`.
    pub fn open_socket_to_all(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.socket.parent().context("socket has no parent")?;
        for (path, mode) in [(dir, 0o755), (self.socket.as_path(), 0o666)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
        }
        Ok(())
    }

    /// `/proc/<pid>/status` of the daemon process.
    pub fn proc_status(&self) -> anyhow::Result<String> {
        let pid = self
            .pid()
            .with_context(|| format!("daemon `{}` is not running", self.opts.name))?;
        Ok(std::fs::read_to_string(format!("/proc/{pid}/status"))?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.opts.echo_log_on_drop {
            return;
        }
        // Captured by the test runner and shown only when the test failed.
        eprintln!(
            "----- log of daemon `{}` ({}) -----\n{}",
            self.opts.name,
            self.log_path.display(),
            self.log_tail()
        );
    }
}

/// A tarpc answer as one `Result`, with the daemon's coded error kept in the message.
pub fn flatten<T>(r: Result<Result<T, IpcError>, tarpc::client::RpcError>) -> anyhow::Result<T> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!("daemon answered {:?}: {}", e.code, e.message)),
        Err(e) => Err(anyhow::anyhow!("control call failed: {e}")),
    }
}

/// Keep the developer's own `FIRMA_*` settings (socket, state dir) away from processes under test.
pub fn clear_firma_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FIRMA_") && k != "FIRMA_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
}

/// Write `text` to a new file `name` in `dir`; returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    File::create(&path)?.write_all(text.as_bytes())?;
    Ok(path)
}

/// Start `n` daemons named `{prefix}0..` concurrently (startup dominates multi-daemon tests).
pub async fn spawn_many(prefix: &str, n: usize) -> anyhow::Result<Vec<Daemon>> {
    let futs = (0..n).map(|i| Daemon::spawn(DaemonOpts::named(&format!("{prefix}{i}"))));
    futures::future::try_join_all(futs).await
}
