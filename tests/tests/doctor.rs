//! `firmactl doctor` finds and explains the three classic problems: the daemon is not running,
//! the socket has the wrong permissions, and a port is taken by another process.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, ensure};
use firma_tests::cli::run_cli;
use firma_tests::harness::{Daemon, DaemonOpts};

fn finding<'a>(json: &'a serde_json::Value, check: &str) -> anyhow::Result<&'a serde_json::Value> {
    json.as_array()
        .context("doctor --json prints a list")?
        .iter()
        .find(|f| f["check"] == check)
        .with_context(|| format!("no `{check}` finding in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_not_running_is_explained_with_the_start_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("absent.sock");
    let socket = socket.to_string_lossy();
    let out = run_cli(&["--socket", &socket, "--json", "doctor", "--web", "127.0.0.1:1"]).await?;
    ensure!(out.code == 5, "doctor should exit 5 on a problem: {out:?}");
    let json = out.json()?;
    let f = finding(&json, "socket")?;
    ensure!(f["level"] == "fail", "{f}");
    let fix = f["fix"].as_str().unwrap_or_default();
    ensure!(
        fix.contains(&format!("firma-transportd --socket {socket}")),
        "fix names the start command: {fix}"
    );

    let human = run_cli(&["--socket", &socket, "doctor", "--web", "127.0.0.1:1"]).await?;
    ensure!(
        human.stdout.contains("[FAIL]") && human.stdout.contains("fix:"),
        "{}",
        human.stdout
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_socket_permissions_and_a_taken_port_are_found() -> anyhow::Result<()> {
    let d = Daemon::spawn(DaemonOpts::named("doctor")).await?;
    // A healthy daemon first: no failure about it.
    let out = d.cli(&["--json", "doctor", "--web", "127.0.0.1:1"]).await?;
    let json = out.json()?;
    ensure!(finding(&json, "daemon")?["level"] == "ok", "{json}");
    ensure!(finding(&json, "socket permissions")?["level"] == "ok", "{json}");
    ensure!(finding(&json, "store")?["level"] == "ok", "{json}");

    // Someone loosened the socket.
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666))?;
    let out = d.cli(&["--json", "doctor", "--web", "127.0.0.1:1"]).await?;
    ensure!(out.code == 5, "{out:?}");
    let json = out.json()?;
    let f = finding(&json, "socket permissions")?;
    ensure!(f["level"] == "fail", "{f}");
    ensure!(f["fix"].as_str().unwrap_or_default().contains("chmod 660"), "{f}");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o660))?;

    // Another program holds the web port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = squatter.local_addr()?.to_string();
    let out = d.cli(&["--json", "doctor", "--web", &addr]).await?;
    ensure!(out.code == 5, "{out:?}");
    let json = out.json()?;
    let f = finding(&json, "web port")?;
    ensure!(f["level"] == "fail", "{f}");
    let msg = f["message"].as_str().unwrap_or_default();
    ensure!(
        msg.contains(&format!("pid {}", std::process::id())),
        "names the process holding the port: {msg}"
    );
    ensure!(f["fix"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    Ok(())
}
