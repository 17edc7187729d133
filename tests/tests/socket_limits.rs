//! The control socket under idle-connection floods (2,000 connections opened and never spoken
//! on): from the web-role account, operators still get in on the slots kept for them and the
//! refused client is told why; from root, connections that never say `hello` are closed after
//! `control.hello_timeout`; from an account that may not use the socket, nothing is held; and a
//! connection with nothing in flight is closed after `control.idle_timeout`, a long poll is not.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_tests::cli::{CliOutput, run_cli_as};
use firma_tests::harness::flatten;
use firma_tests::{Daemon, DaemonOpts, wait_for};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const NOBODY: u32 = 65534;
/// A uid with no account: not root, not the daemon's, in no group, not a web user.
const STRANGER: u32 = 4242;
const FLOOD: u32 = 2000;
const DEADLINE: Duration = Duration::from_secs(30);

/// A `sockflood` process holding idle connections as some uid; killed when dropped.
struct Flood {
    _child: Child,
    /// Its stdin and stdout: a line out asks for a count, a line in answers.
    pipes: tokio::sync::Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl Flood {
    /// Open `count` connections to `socket` as `uid`; returns once they are all made.
    async fn open(socket: &Path, count: u32, uid: u32) -> anyhow::Result<Flood> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sockflood"));
        cmd.arg(socket)
            .arg(count.to_string())
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting sockflood")?;
        let stdout = child.stdout.take().context("sockflood has no stdout")?;
        let stdin = child.stdin.take().context("sockflood has no stdin")?;
        let flood = Flood {
            _child: child,
            pipes: tokio::sync::Mutex::new((stdin, BufReader::new(stdout).lines())),
        };
        let opened = next_json(&mut flood.pipes.lock().await.1).await?;
        ensure!(
            opened["opened"] == count && opened["uid"] == uid,
            "sockflood could not open its connections: {opened}"
        );
        Ok(flood)
    }

    /// How many of the flood's connections the daemon has not closed.
    async fn still_open(&self) -> anyhow::Result<u64> {
        let mut pipes = self.pipes.lock().await;
        pipes.0.write_all(b"count\n").await?;
        pipes.0.flush().await?;
        let v = next_json(&mut pipes.1).await?;
        v["open"].as_u64().context("no `open` in sockflood's answer")
    }

    /// Wait until exactly `open` of the connections are still open; returns how long it took.
    async fn wait_open(&self, open: u64, deadline: Duration) -> anyhow::Result<Duration> {
        let what = format!("the daemon to leave exactly {open} of the flood's connections open");
        let last = std::sync::Mutex::new(None);
        let res = wait_for(deadline, &what, || async {
            let n = self.still_open().await.ok();
            *last.lock().unwrap_or_else(|p| p.into_inner()) = n;
            n == Some(open)
        })
        .await;
        res.with_context(|| format!("open connections last seen: {:?}", last.lock().ok().and_then(|l| *l)))
    }
}

/// sockflood's next answer line, as JSON.
async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("sockflood did not answer")??
        .context("sockflood exited")?;
    Ok(serde_json::from_str(&line)?)
}

fn web_daemon(name: &str, control: &str) -> DaemonOpts {
    DaemonOpts {
        world_traversable: true,
        config: Some(format!("[control]\nweb_users = [\"nobody\"]\n{control}")),
        ..DaemonOpts::named(name)
    }
}

/// `firmactl --json status` as root must answer with this daemon's peer id.
async fn operator_status(d: &Daemon) -> anyhow::Result<()> {
    let out = d.cli(&["--json", "status"]).await?.ok()?;
    ensure!(out.json()?["peer_id"] == d.peer_id(), "status answered {}", out.stdout);
    Ok(())
}

async fn status_as(d: &Daemon, uid: u32) -> anyhow::Result<CliOutput> {
    let socket = d.socket().to_string_lossy().into_owned();
    run_cli_as(uid, uid, &["--socket", &socket, "--json", "status"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_account_flood_leaves_operator_slots_and_is_told_why() -> anyhow::Result<()> {
    // 48 slots, 8 kept for operators: the web role may hold 40.
    let limits =
        "max_connections = 48\nmax_connections_per_uid = 48\nreserved_for_operators = 8\nhello_timeout = \"60s\"\n";
    let d = Daemon::spawn(web_daemon("flood-web", limits)).await?;
    d.open_socket_to_all()?;
    let flood = Flood::open(d.socket(), FLOOD, NOBODY).await?;
    flood.wait_open(40, DEADLINE).await?;

    // Operators get in on the kept slots, with firmactl as with the API.
    operator_status(&d).await?;
    d.status().await?;

    // The web account is refused, and firmactl says why in words that name the setting.
    let refused = status_as(&d, NOBODY).await?;
    ensure!(
        refused.code == 3,
        "firmactl as nobody exited {}: {refused:?}",
        refused.code
    );
    ensure!(
        refused.stderr.contains("refused") && refused.stderr.contains("control.reserved_for_operators"),
        "the refusal does not say why: {}",
        refused.stderr
    );
    ensure!(
        !refused.stderr.contains("critical error"),
        "tarpc's channel error leaked: {}",
        refused.stderr
    );
    let json = refused.json()?;
    ensure!(json["error"]["code"] == "unavailable", "--json said {json}");

    // 1,960 refusals, but the audit log got a bounded number of records that count the rest.
    let conn = d.client().await?;
    let audit = flatten(conn.client.audit(ctx(CALL_TIMEOUT), 5000).await)?;
    let refusals: Vec<_> = audit
        .iter()
        .filter(|r| r.uid == NOBODY && r.action == "connect-refused")
        .collect();
    ensure!(
        !refusals.is_empty() && refusals.len() <= 2 * 20 + 1,
        "{} audit records for one flood",
        refusals.len()
    );
    ensure!(
        refusals.iter().all(|r| r.detail.contains("control.")),
        "audit details: {refusals:?}"
    );

    // Once the flood is gone, the web account is served again.
    drop(flood);
    wait_for(DEADLINE, "firmactl as the web account to be served again", || async {
        status_as(&d, NOBODY).await.is_ok_and(|o| o.code == 0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_hello_are_closed_and_strangers_hold_nothing() -> anyhow::Result<()> {
    let d = Daemon::spawn(web_daemon("flood-root", "hello_timeout = \"1s\"\n")).await?;
    d.open_socket_to_all()?;
    // Says hello before the flood: it must outlive the silent ones.
    let early = d.client().await?;

    // Root is an operator, and one uid holds at most 64 (control.max_connections_per_uid):
    // root's flood takes its 64, the rest is refused, and the 64 go at the hello timeout.
    let flood = Flood::open(d.socket(), FLOOD, 0).await?;
    let took = flood.wait_open(0, DEADLINE).await?;
    operator_status(&d).await?;
    ensure!(
        took >= Duration::from_millis(500),
        "silent connections closed after only {took:?}"
    );
    flatten(early.client.status(ctx(CALL_TIMEOUT)).await).context("a connection that said hello was closed")?;

    // An account that may not use the socket gets no slot at all: closed at once, and
    // operators and the web account are served while it floods.
    let strangers = Flood::open(d.socket(), FLOOD, STRANGER).await?;
    operator_status(&d).await?;
    let web = status_as(&d, NOBODY).await?;
    ensure!(
        web.code == 0,
        "the web account was refused during a stranger's flood: {web:?}"
    );
    strangers.wait_open(0, DEADLINE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_long_polls_are_not() -> anyhow::Result<()> {
    let d = Daemon::spawn(web_daemon("idle", "hello_timeout = \"1s\"\nidle_timeout = \"2s\"\n")).await?;
    let idle = d.client().await?;
    let poller = d.client().await?;
    let head = flatten(poller.client.status(ctx(CALL_TIMEOUT)).await)?.event_head;
    // Longer than the idle timeout: in flight all along, so its connection stays.
    let poll = tokio::spawn(async move {
        let r = poller
            .client
            .events(ctx(Duration::from_secs(20)), head, 16, 5_000)
            .await;
        (r, poller)
    });
    // Each check opens its own connection and closes it; the idle one and the poller are the others.
    wait_for(DEADLINE, "the idle connection to be closed", || async {
        open_connections(&d).await.is_ok_and(|n| n <= 2)
    })
    .await?;
    let closed = idle.client.status(ctx(CALL_TIMEOUT)).await;
    ensure!(closed.is_err(), "the idle connection still answers: {closed:?}");
    let (polled, poller) = poll.await?;
    flatten(polled).context("the long poll was cut by the idle timeout")?;
    flatten(poller.client.status(ctx(CALL_TIMEOUT)).await).context("the poller's connection was closed")?;
    Ok(())
}

/// The daemon's `firma_control_connections` gauge, read on a fresh connection (counted too).
async fn open_connections(d: &Daemon) -> anyhow::Result<u64> {
    let c = d.client().await?;
    let m = flatten(c.client.metrics(ctx(CALL_TIMEOUT)).await)?;
    let Some(g) = m.metrics.iter().find(|m| m.name == "firma_control_connections") else {
        bail!("no firma_control_connections metric");
    };
    Ok(g.value as u64)
}
