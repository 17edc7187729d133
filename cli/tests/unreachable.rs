//! The built binary against sockets where no daemon answers: the failures an operator meets
//! first must name the socket, say what to run, and exit with the documented code.
//! (Runs against a real daemon live in the workspace's end-to-end suites.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

fn firmactl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firmactl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("FIRMA_SOCKET")
        .output()
        .expect("firmactl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn missing_socket_says_not_running_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nope.sock");
    let out = firmactl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is not running at") && stderr.contains("nope.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("firma-transportd --socket"), "{stderr}");
    assert!(out.stdout.is_empty());

    // The same for the long-running command: watch does not wait for a daemon that never was.
    let out = firmactl(&socket, &["watch"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn json_failures_carry_a_coded_error_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nope.sock");
    let out = firmactl(&socket, &["--json", "peers", "--known"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains("nope.sock"));
}

#[test]
fn stale_socket_file_is_told_apart_from_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let out = firmactl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("nobody listens"), "{}", text(&out.stderr));
}

#[test]
fn silent_listener_times_out_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    // Bound and listening, never accepting: the kernel completes the connect, nobody answers hello.
    let _listener = UnixListener::bind(&socket).unwrap();
    let out = firmactl(&socket, &["--timeout", "300ms", "--json", "status"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("did not answer within 300ms"),
        "{}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["error"]["code"], "timeout");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("unused.sock");
    assert_eq!(firmactl(&socket, &["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        firmactl(&socket, &["peers", "--known", "--pinned"]).status.code(),
        Some(2)
    );
    let help = firmactl(&socket, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("Exit codes:"));
}
