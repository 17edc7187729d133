//! Helpers for the operations suites (`ops_*`): `scripts/dev.sh` as a supervised child in a copy
//! of the checkout, processes found by an environment marker, the control API on a bare socket
//! path, and readers for unit files and plists. HTTP to firma-web goes through [`crate::web::http`].
//!
//! dev.sh is never run on the real checkout: a test edits files under `web/` to trigger a
//! reload, so it runs in a [`RepoCopy`] that disappears on Drop, sharing the real target dir so
//! that its builds are incremental.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use firma_ipc::client::{CALL_TIMEOUT, connect, ctx};
use firma_ipc::event::EventBatch;
use firma_ipc::types::{ConnectOutcome, PeerFilter, PeerInfo, Role, Status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::harness::{clear_firma_env, flatten};
use crate::wait::{POLL, wait_for};

/// How long a dev.sh left running by a failed test gets to stop after SIGINT, in Drop.
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of dev.sh's output printed when it is dropped.
const LOG_TAIL_LINES: usize = 200;

/// The target dir the suites' binaries were built in: where dev.sh in a copy should build too.
pub fn shared_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::bins::workspace_root().join("target"),
    }
}

/// A copy of the checkout's files (tracked and untracked, minus what git ignores) in a temp dir,
/// with their modification times, so that cargo finds the shared target dir up to date for
/// every file the test does not touch. Removed on Drop; the real checkout is never modified.
pub struct RepoCopy {
    dir: TempDir,
}

impl RepoCopy {
    pub fn of_workspace() -> anyhow::Result<RepoCopy> {
        let root = crate::bins::workspace_root();
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
            .output()
            .with_context(|| format!("running git ls-files in {} (is git installed?)", root.display()))?;
        if !out.status.success() {
            bail!(
                "git ls-files in {} failed: {}",
                root.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = tempfile::Builder::new().prefix("firma-ops-").tempdir()?;
        let files: BTreeSet<&str> = out
            .stdout
            .split(|b| *b == 0)
            .filter_map(|p| std::str::from_utf8(p).ok())
            .filter(|p| !p.is_empty())
            .collect();
        for rel in files {
            let src = root.join(rel);
            // Listed by git but deleted in the working tree: nothing to copy.
            let Ok(meta) = fs::symlink_metadata(&src) else { continue };
            let dst = dir.path().join(rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&src)?;
                std::os::unix::fs::symlink(&target, &dst).with_context(|| format!("symlinking {}", dst.display()))?;
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            let modified = meta.modified()?;
            File::options()
                .write(true)
                .open(&dst)
                .and_then(|f| f.set_modified(modified))
                .with_context(|| format!("setting the mtime of {}", dst.display()))?;
        }
        Ok(RepoCopy { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Give the workspace's own crates a profile of their own in this copy, so that cargo keeps
    /// their artifacts and fingerprints apart from the real checkout's in the shared target dir
    /// (it tells packages apart by their path relative to the workspace, which a copy shares, and
    /// by their profile). Without this, a build here could leave the real checkout's fingerprints
    /// claiming up to date for sources edited there meanwhile. Dependencies stay shared.
    pub fn separate_workspace_artifacts(&self) -> anyhow::Result<()> {
        let dir = self.path().join(".cargo");
        fs::create_dir_all(&dir)?;
        let path = dir.join("config.toml");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        for member in WORKSPACE_PACKAGES {
            // 255 instead of the default 256: any difference gives the package its own hash.
            text.push_str(&format!("\n[profile.dev.package.{member}]\ncodegen-units = 255\n"));
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// The packages of the workspace (see the root Cargo.toml).
const WORKSPACE_PACKAGES: [&str; 5] = ["firma-ipc", "firma-daemon", "firma-web", "firmactl", "firma-tests"];

/// A process seen in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// The file name of `/proc/PID/exe` (without a " (deleted)" suffix), when readable.
    pub exe_name: String,
    /// The inode of the running image: changes when a process re-executes a rebuilt binary.
    pub exe_inode: Option<u64>,
}

/// Every live process whose environment holds exactly `KEY=VALUE` (zombies have none).
pub fn processes_with_env(key: &str, value: &str) -> Vec<Proc> {
    let needle = format!("{key}={value}");
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        let exe = entry.path().join("exe");
        let exe_name = fs::read_link(&exe)
            .ok()
            .and_then(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_owned())
            })
            .unwrap_or_default();
        let exe_inode = fs::metadata(&exe).ok().map(|m| m.ino());
        found.push(Proc {
            pid,
            exe_name,
            exe_inode,
        });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// `scripts/dev.sh` of a [`RepoCopy`], running in the background with its output in a log file.
/// Every process it starts inherits a unique marker variable, which is how the test finds them
/// and how Drop makes sure none survives a failed test.
pub struct DevSh {
    child: Option<Child>,
    marker: String,
    log_path: PathBuf,
    _log_dir: TempDir,
}

impl DevSh {
    /// The marker variable's name; its value is unique per [`DevSh`].
    pub const MARKER: &'static str = "FIRMA_OPS_TEST_SESSION";

    /// Start `bash <repo>/scripts/dev.sh ARGS` with the caller's `env` on top of a clean one (no
    /// `FIRMA_*` and no cargo build-script variables from the test's own environment).
    pub fn spawn(repo: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<DevSh> {
        let log_dir = tempfile::Builder::new().prefix("firma-ops-log-").tempdir()?;
        let log_path = log_dir.path().join("dev.sh.log");
        let log = File::create(&log_path)?;
        let marker = format!("{}-{}", std::process::id(), rand::random::<u64>());
        let mut cmd = Command::new("bash");
        cmd.arg(repo.join("scripts/dev.sh")).args(args).current_dir(repo);
        clear_firma_env(&mut cmd);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            // Set by `cargo test` for this crate; they would describe the wrong package to the
            // cargo that dev.sh runs.
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_CRATE_")
                || k.starts_with("CARGO_BIN_")
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "OUT_DIR"
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.env("CARGO_TARGET_DIR", shared_target_dir())
            .env(Self::MARKER, &marker);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Its own process group: a Ctrl-C in the terminal running the tests is not dev.sh's.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting bash scripts/dev.sh")?;
        Ok(DevSh {
            child: Some(child),
            marker,
            log_path,
            _log_dir: log_dir,
        })
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .map(Pid::from_raw)
    }

    /// Everything dev.sh and its programs printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Live processes started by this dev.sh (dev.sh itself included).
    pub fn processes(&self) -> Vec<Proc> {
        processes_with_env(Self::MARKER, &self.marker)
    }

    /// Live processes started by this dev.sh whose binary is `name`.
    pub fn processes_named(&self, name: &str) -> Vec<Proc> {
        self.processes().into_iter().filter(|p| p.exe_name == name).collect()
    }

    /// `Some(status)` once dev.sh has exited (and been reaped).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            bail!("dev.sh was already reaped")
        };
        let st = child.try_wait()?;
        if st.is_some() {
            self.child = None;
        }
        Ok(st)
    }

    /// Wait until dev.sh prints a line containing `needle`; fails at once if dev.sh exits first.
    pub async fn wait_for_output(&mut self, needle: &str, deadline: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.log().lines().any(|l| l.contains(needle)) {
                return Ok(start.elapsed());
            }
            if let Some(st) = self.try_exit()? {
                bail!(
                    "dev.sh exited with {st} before printing {needle:?}; its output:\n{}",
                    self.log_tail()
                );
            }
            if start.elapsed() >= deadline {
                bail!(
                    "dev.sh did not print {needle:?} within {deadline:?}; its output:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("dev.sh is not running")?;
        kill(pid, sig).with_context(|| format!("sending {sig} to dev.sh ({pid})"))
    }

    /// Wait for dev.sh to exit by itself, e.g. after SIGINT.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_exit()? {
                return Ok(st);
            }
            if start.elapsed() >= deadline {
                bail!(
                    "dev.sh did not exit within {deadline:?}; its output:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for DevSh {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The clean way first, so daemons stop gracefully and sockets are removed.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
            }
            let end = Instant::now() + DROP_STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever is left (only after a failure in dev.sh's own cleanup) is killed outright.
        for p in processes_with_env(Self::MARKER, &self.marker) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        eprintln!(
            "----- output of dev.sh ({}) -----\n{}",
            self.log_path.display(),
            self.log_tail()
        );
    }
}

/// A free loopback TCP port (bound, read, released: the caller binds it again right away).
pub fn free_loopback_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The control API of a daemon known only by its socket (one not started by the harness).
pub struct SocketApi<'a>(pub &'a Path);

impl SocketApi<'_> {
    async fn client(&self) -> anyhow::Result<firma_ipc::client::Connection> {
        connect(self.0, "firma-tests-ops", Role::Operator)
            .await
            .with_context(|| format!("connecting to the control socket {}", self.0.display()))
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        flatten(self.client().await?.client.status(ctx(CALL_TIMEOUT)).await)
    }

    pub async fn peers(&self, filter: PeerFilter) -> anyhow::Result<Vec<PeerInfo>> {
        flatten(self.client().await?.client.peers(ctx(CALL_TIMEOUT), filter).await)
    }

    pub async fn peer(&self, peer_id: &str) -> anyhow::Result<PeerInfo> {
        flatten(
            self.client()
                .await?
                .client
                .peer(ctx(CALL_TIMEOUT), peer_id.to_owned())
                .await,
        )
    }

    pub async fn connect(&self, target: &str) -> anyhow::Result<ConnectOutcome> {
        flatten(
            self.client()
                .await?
                .client
                .connect(ctx(CALL_TIMEOUT), target.to_owned())
                .await,
        )
    }

    /// Events after `after`, without waiting for new ones.
    pub async fn events_after(&self, after: u64) -> anyhow::Result<EventBatch> {
        flatten(
            self.client()
                .await?
                .client
                .events(ctx(CALL_TIMEOUT), after, 10_000, 0)
                .await,
        )
    }

    pub async fn is_connected_to(&self, peer_id: &str) -> bool {
        self.peers(PeerFilter::Connected)
            .await
            .is_ok_and(|ps| ps.iter().any(|p| p.peer_id == peer_id && p.connected))
    }

    pub async fn wait_connected(&self, peer_id: &str, deadline: Duration) -> anyhow::Result<Duration> {
        let what = format!("{} to list {peer_id} as connected", self.0.display());
        wait_for(deadline, &what, || self.is_connected_to(peer_id)).await
    }

    /// The first loopback TCP listen address with `/p2p/`.
    pub async fn loopback_tcp_addr(&self) -> anyhow::Result<String> {
        let st = self.status().await?;
        st.listen_addrs
            .iter()
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/") && a.contains("/p2p/"))
            .cloned()
            .with_context(|| format!("no loopback TCP listen address in {:?}", st.listen_addrs))
    }
}

/// One `Key=Value` line of a systemd unit file, with its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEntry {
    pub section: String,
    pub key: String,
    pub value: String,
}

/// The entries of a unit file, in order (comments and blank lines dropped; no line continuations,
/// which the units in this repository do not use).
pub fn parse_unit(text: &str) -> Vec<UnitEntry> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push(UnitEntry {
                section: section.clone(),
                key: k.trim().to_owned(),
                value: v.trim().to_owned(),
            });
        }
    }
    out
}

/// Every value of `section`/`key`, in order.
pub fn unit_values<'a>(entries: &'a [UnitEntry], section: &str, key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|e| e.section == section && e.key == key)
        .map(|e| e.value.as_str())
        .collect()
}

/// A plist file as JSON, read with python3's plistlib (there is no plutil on Linux).
pub fn read_plist(path: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(path)
        .output()
        .context("running python3 to parse a plist (install python3)")?;
    if !out.status.success() {
        bail!(
            "{} does not parse as a plist: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("plistlib output for {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_files_parse_into_sections() {
        let e = parse_unit("# c\n[Unit]\nDescription=x = y\n\n[Service]\nSystemCallFilter=@a\nSystemCallFilter=~@b\n");
        assert_eq!(unit_values(&e, "Unit", "Description"), vec!["x = y"]);
        assert_eq!(unit_values(&e, "Service", "SystemCallFilter"), vec!["@a", "~@b"]);
        assert!(unit_values(&e, "Unit", "SystemCallFilter").is_empty());
    }
}
