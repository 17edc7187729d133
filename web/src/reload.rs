//! Hot reload and graceful stop: the only place that knows about signals, `LISTEN_FDS` and exec.
//!
//! SIGUSR2: stop accepting, close WebSocket clients with 1012, drain in-flight requests within the
//! drain deadline (all done by `lib::run`), then re-execute the binary at the path captured at
//! start, handing over the listening socket as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` = our pid
//! (exec keeps the pid). The socket stays open and listening through the whole sequence, so a
//! client connecting meanwhile waits in the kernel's accept queue instead of being refused.
//! SIGTERM / SIGINT: the same drain, then exit.

use std::ffi::OsString;
use std::os::fd::{AsRawFd as _, IntoRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use tokio::signal::unix::{SignalKind, signal};

use crate::state::Shutdown;

/// Set for the new image of a reload, so it can tell itself from a first start (a supervisor's
/// socket activation passes `LISTEN_FDS` too).
pub const REEXEC_ENV: &str = "FIRMA_WEB_REEXEC";

/// `SD_LISTEN_FDS_START`: the first inherited fd, by the systemd convention listenfd follows.
const LISTEN_FD: i32 = 3;

/// What to exec on reload, captured at start: cargo replaces the binary file on rebuild, and
/// `/proc/self/exe` would then name the old, deleted inode, while this path names the new build.
#[derive(Debug, Clone)]
pub struct Handoff {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Handoff {
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    pub fn capture() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the path of the running binary (needed for reload)")?;
        let args = std::env::args_os().skip(1).collect();
        Ok(Self { exe, args })
    }
}

/// A listening socket inherited through `LISTEN_FDS` (from a reload or a supervisor), if any.
/// Call before starting threads: it removes the variables from the environment.
pub fn inherited_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    fds.take_tcp_listener(0)
        .context("LISTEN_FDS is set but fd 3 is not a listening TCP socket")
}

/// Whether `exe` looks runnable: a reload into a missing or non-executable file would take the
/// server down, so such a SIGUSR2 is refused and the running build keeps serving.
fn runnable(exe: &Path) -> Result<(), String> {
    match std::fs::metadata(exe) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{} is not an executable file", exe.display())),
        Err(e) => Err(format!("{}: {e}", exe.display())),
    }
}

/// Wait for SIGUSR2 (reload) or SIGTERM/SIGINT (stop) and trigger `shutdown` accordingly.
/// Installed before the server answers anything, so an early SIGUSR2 cannot kill the process.
/// `exe` is the binary a reload will run, checked before anything is stopped.
pub fn watch_signals(shutdown: Shutdown, exe: Option<PathBuf>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot install the SIGUSR2 handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::spawn(async move {
        loop {
            let reload = tokio::select! {
                _ = shutdown.token().cancelled() => return,
                _ = usr2.recv() => true,
                _ = term.recv() => false,
                _ = int.recv() => false,
            };
            if reload && let Some(Err(why)) = exe.as_deref().map(runnable) {
                tracing::error!("SIGUSR2 ignored, still serving: the new build cannot run ({why})");
                continue;
            }
            tracing::info!(reload, "{}", if reload { "SIGUSR2: reloading" } else { "stopping" });
            shutdown.trigger(reload);
            return;
        }
    }))
}

/// Replace this process with the captured binary, passing `listener` as fd 3. Only returns on
/// failure. Call after the async runtime has shut down: nothing else may be using fd 3 then.
pub fn reexec(handoff: &Handoff, listener: OwnedFd) -> anyhow::Error {
    let fd = match place_at_listen_fd(listener) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    if let Err(e) = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())) {
        return anyhow::anyhow!("cannot clear FD_CLOEXEC on the listening socket: {e}");
    }
    // Leaked on purpose: the new image owns fd 3.
    let _ = fd.into_raw_fd();
    let pid = std::process::id().to_string();
    let err = Command::new(&handoff.exe)
        .args(&handoff.args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", pid)
        .env(REEXEC_ENV, "1")
        .env_remove("LISTEN_FDNAMES")
        .exec();
    anyhow::anyhow!("cannot re-execute {} for reload: {err}", handoff.exe.display())
}

/// Move the listening socket to fd 3, where `LISTEN_FDS` says inherited sockets start.
fn place_at_listen_fd(listener: OwnedFd) -> anyhow::Result<OwnedFd> {
    if listener.as_raw_fd() == LISTEN_FD {
        return Ok(listener);
    }
    // SAFETY: nix offers dup2 onto a fixed fd number only as `unsafe` because it replaces whatever
    // fd 3 is. The async runtime and its threads are gone at this point and the process execs right
    // after, so no live object relies on fd 3; the returned OwnedFd is its only owner.
    #[allow(unsafe_code)]
    let fd = unsafe { nix::unistd::dup2_raw(&listener, LISTEN_FD) }
        .context("cannot move the listening socket to fd 3 for the reload")?;
    drop(listener);
    Ok(fd)
}
