//! The upstream Peer Explorer socket's message set, the heartbeat of both sockets, and a reload
//! into a replaced binary (as cargo leaves it after a rebuild).

use std::time::Duration;

use anyhow::Context as _;
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsMsg, web_bin};
use firma_tests::{Daemon, DaemonOpts, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_speaks_upstreams_message_set() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("exp-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("exp-b")).await?;
    let web = Web::spawn(WebOpts::new("exp", a.socket())).await?;
    let mut ws = web.ws("/explorer").await?;
    let hello = ws.recv_json(IO_TIMEOUT).await?;
    assert_eq!(hello["type"], "connected");
    assert!(
        hello["clientId"].as_str().is_some_and(|c| c.starts_with("client-")),
        "{hello}"
    );
    assert!(hello["timestamp"].is_u64());
    let status = ws.recv_json(IO_TIMEOUT).await?;
    assert_eq!(
        status,
        json!({"type": "transport:status", "transport": "p2p", "status": "online", "timestamp": status["timestamp"]})
    );

    let exchanges = [
        (json!({"type": "ping"}).to_string(), json!({"type": "pong"})),
        (
            json!({"type": "join_group", "groupId": "g"}).to_string(),
            json!({"type": "error", "error": "join_group is not supported yet"}),
        ),
        (
            json!({"type": "dance"}).to_string(),
            json!({"type": "error", "error": "Unknown message type: dance"}),
        ),
        (
            "not json".to_owned(),
            json!({"type": "error", "error": "Invalid message format"}),
        ),
        (
            json!({"type": "subscribe", "peerId": b.peer_id()}).to_string(),
            json!({"type": "subscribed", "peerId": b.peer_id()}),
        ),
    ];
    for (send, want) in exchanges {
        ws.send_text(&send).await?;
        let got = ws.recv_json(IO_TIMEOUT).await?;
        for (k, v) in want.as_object().context("want is an object")? {
            assert_eq!(&got[k], v, "answer to {send}: {got}");
        }
    }

    a.connect_to(&b).await?;
    let online = ws
        .wait_json(IO_TIMEOUT, "peer:status online", |v| v["type"] == "peer:status")
        .await?;
    assert_eq!(online["peerId"], b.peer_id());
    assert_eq!(online["status"], "online");
    assert_eq!(online["transport"], "p2p");
    let conn = a.client().await?;
    firma_tests::harness::flatten(
        conn.client
            .disconnect(firma_ipc::client::ctx(IO_TIMEOUT), b.peer_id().to_owned())
            .await,
    )?;
    let offline = ws
        .wait_json(IO_TIMEOUT, "peer:status offline", |v| v["type"] == "peer:status")
        .await?;
    assert_eq!(offline["status"], "offline");

    // Unsubscribed, the peer's status changes no longer arrive; the ping after them proves it.
    ws.send_text(&json!({"type": "unsubscribe", "peerId": b.peer_id()}).to_string())
        .await?;
    assert_eq!(ws.recv_json(IO_TIMEOUT).await?["type"], "unsubscribed");
    a.connect_to(&b).await?;
    ws.send_text(r#"{"type":"ping"}"#).await?;
    let next = ws
        .wait_json(IO_TIMEOUT, "pong", |v| v["type"] != "peer:discovered")
        .await?;
    assert_eq!(next["type"], "pong", "an unsubscribed peer's status arrived: {next}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_pinged_and_dead_ones_dropped() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("beat")).await?;
    let mut opts = WebOpts::new("beat", a.socket());
    opts.args.extend(["--ws-ping-interval-ms".into(), "200".into()]);
    let web = Web::spawn(opts).await?;

    let mut alive = web.ws("/ws").await?;
    assert_eq!(alive.recv_json(IO_TIMEOUT).await?["type"], "snapshot");
    // The live client keeps reading (answering pings) past several ping intervals, then checks
    // it is still served.
    let alive = tokio::spawn(async move {
        while alive.pings < 3 {
            alive.recv_within(IO_TIMEOUT).await?;
        }
        alive.send_text("ping").await?;
        alive.wait_json(IO_TIMEOUT, "pong", |v| v["type"] == "pong").await?;
        anyhow::Ok(alive.pings)
    });
    let mut dead = web.ws("/explorer").await?;
    dead.answer_pings = false;
    let closed = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match dead.recv().await {
                Ok(WsMsg::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a client that never answers pings was kept");
    assert!(dead.pings >= 1, "the silent client was never pinged");
    let pings = alive.await??;
    assert!(pings >= 3, "an idle client was not pinged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_runs_the_rebuilt_binary_at_the_started_path() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("rebuild")).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("firma-web");
    std::fs::copy(web_bin()?, &path)?;
    let mut opts = WebOpts::new("rebuild", a.socket());
    opts.bin = Some(path.clone());
    let web = Web::spawn(opts).await?;
    let pid = web.pid().context("not running")?;

    // What cargo does: write the new build elsewhere and rename it over the old path.
    let fresh = dir.path().join("firma-web.new");
    std::fs::copy(web_bin()?, &fresh)?;
    std::fs::rename(&fresh, &path)?;
    let exe = || {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    assert!(
        exe().ends_with("(deleted)"),
        "the running image should be the replaced file: {}",
        exe()
    );
    web.reload().await?;
    wait_for(
        Duration::from_secs(5),
        "the reloaded process to run the new file",
        || async { exe() == path.display().to_string() },
    )
    .await?;
    assert_eq!(web.pid(), Some(pid), "a reload keeps the pid");

    // A broken build (here: no file at all) must not take the server down: SIGUSR2 is refused.
    let before = web.instance_id().await.context("no instance_id")?;
    std::fs::remove_file(&path)?;
    web.signal(nix::sys::signal::Signal::SIGUSR2)?;
    wait_for(Duration::from_secs(5), "the refused reload to be logged", || async {
        web.log().contains("SIGUSR2 ignored")
    })
    .await?;
    assert_eq!(
        web.instance_id().await,
        Some(before),
        "the running build must keep serving"
    );
    Ok(())
}
