//! The daemon speaks systemd's two protocols for real: started with `NOTIFY_SOCKET` it sends
//! READY=1 and then watchdog pings, and it serves on a control socket handed over with
//! `LISTEN_FDS` by a real socket-activating supervisor (`systemd-socket-activate`).

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use firma_ipc::client::{self, CALL_TIMEOUT, ctx};
use firma_ipc::types::Role;
use firma_tests::bins;
use firma_tests::harness::flatten;

const ACTIVATOR: &str = "/usr/bin/systemd-socket-activate";

/// Reads notify datagrams until `want` has been seen `times` times, or the deadline passes.
fn collect_notifications(
    sock: &UnixDatagram,
    want: &str,
    times: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.iter().filter(|m: &&String| m.lines().any(|l| l == want)).count() < times {
        let left = deadline.checked_sub(start.elapsed()).context("deadline passed")?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match sock.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                bail!("only got {seen:?} before the deadline, waiting for {times} x {want}")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_watchdog_and_an_inherited_control_socket() -> anyhow::Result<()> {
    if !std::path::Path::new(ACTIVATOR).exists() {
        return firma_tests::skip::skip(format_args!(
            "{ACTIVATOR} is not installed (Debian package `systemd`; scripts/test.sh installs it)"
        ));
    }
    let dir = tempfile::tempdir()?;
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let socket = dir.path().join("run/transportd.sock");
    std::fs::create_dir_all(dir.path().join("run"))?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;

    // The supervisor binds the control socket, then starts the daemon on the first connection
    // with LISTEN_FDS=1 and LISTEN_PID set to the daemon's pid.
    let mut child = tokio::process::Command::new(ACTIVATOR)
        .arg("-l")
        .arg(&socket)
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg("--setenv=WATCHDOG_USEC=200000")
        // systemd sets WATCHDOG_PID to the service's pid; `sh` learns it the same way ($$ is the
        // pid that execs into the daemon). Whether the supervisor execs or forks, the daemon
        // dies with it (setpriv's parent-death signal).
        .args(["/bin/sh", "-c", "WATCHDOG_PID=$$ exec \"$@\"", "sh"])
        .args(["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"])
        .arg(bins::daemon()?)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--no-dht",
            "--allow-root",
            "--log-format",
            "text",
        ])
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting systemd-socket-activate")?;

    // The socket exists before the daemon does; connecting starts it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let conn = loop {
        match client::connect(&socket, "ops-test", Role::Operator).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => bail!(
                "daemon behind the activated socket never answered: {e}\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            ),
        }
    };
    let status = flatten(conn.client.status(ctx(CALL_TIMEOUT)).await)?;
    ensure!(!status.listen_addrs.is_empty(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("daemon.log"))?;
    ensure!(
        log.contains("passed by the service manager"),
        "daemon did not use the inherited socket:\n{log}"
    );

    // READY=1 once, then watchdog pings at half of WATCHDOG_USEC.
    let seen =
        tokio::task::spawn_blocking(move || collect_notifications(&notify, "WATCHDOG=1", 3, Duration::from_secs(10)))
            .await??;
    ensure!(
        seen.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "no READY=1 in {seen:?}"
    );
    let ready_at = seen.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    let first_ping = seen.iter().position(|m| m.lines().any(|l| l == "WATCHDOG=1"));
    ensure!(
        ready_at < first_ping,
        "READY=1 must come before the first watchdog ping: {seen:?}"
    );

    child.start_kill()?;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(())
}
