//! firma-web while the daemon comes and goes, and several web processes on one daemon.

use std::time::Duration;

use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsMsg, http};
use firma_tests::{Daemon, DaemonOpts, wait_for};

const DEGRADE_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_restart_degrades_and_recovers() -> anyhow::Result<()> {
    let mut a = Daemon::spawn(DaemonOpts::named("restart")).await?;
    let web = Web::spawn(WebOpts::new("restart", a.socket())).await?;
    let addr = web.addr();
    let mut ws = web.ws("/ws").await?;
    assert_eq!(ws.recv_json(IO_TIMEOUT).await?["type"], "snapshot");
    let mut explorer = web.ws("/explorer").await?;
    assert_eq!(explorer.recv_json(IO_TIMEOUT).await?["type"], "connected");

    a.stop().await?;
    wait_for(DEGRADE_TIMEOUT, "/health to turn degraded", || async {
        http(addr, "GET", "/health", &[], None)
            .await
            .is_ok_and(|r| r.status == 503)
    })
    .await?;
    let r = http(addr, "GET", "/health", &[], None).await?;
    assert_eq!(r.json()?["status"], "degraded");
    // Why, and which socket, is for authorised callers only.
    let body = web.get_json("/api/info").await?;
    assert_eq!(body["daemon"]["reachable"], false);
    assert!(
        body["daemon"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&a.socket().display().to_string())),
        "{body}"
    );
    let api = web.get("/api/peers").await?;
    assert_eq!(api.status, 503);
    assert!(
        api.json()?["error"].as_str().is_some_and(|e| e.contains("unreachable")),
        "{}",
        api.text()
    );
    let offline = |v: &serde_json::Value| v["type"] == "transport:status" && v["status"] == "offline";
    ws.wait_json(DEGRADE_TIMEOUT, "/ws offline", offline).await?;
    // /explorer speaks upstream's values: the daemon being away is `error`, with the reason.
    let explorer_error = |v: &serde_json::Value| {
        v["type"] == "transport:status" && v["status"] == "error" && v["details"]["error"].is_string()
    };
    explorer
        .wait_json(DEGRADE_TIMEOUT, "/explorer error", explorer_error)
        .await?;

    a.start().await?;
    wait_for(DEGRADE_TIMEOUT, "/health to recover", || async {
        http(addr, "GET", "/health", &[], None)
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await?;
    let online = |v: &serde_json::Value| v["type"] == "transport:status" && v["status"] == "online";
    ws.wait_json(DEGRADE_TIMEOUT, "/ws online", online).await?;
    // The daemon numbers afresh: the client is handed a new snapshot.
    ws.wait_json(IO_TIMEOUT, "/ws snapshot after the restart", |v| {
        v["type"] == "snapshot"
    })
    .await?;
    let active = |v: &serde_json::Value| v["type"] == "transport:status" && v["status"] == "active";
    explorer.wait_json(DEGRADE_TIMEOUT, "/explorer active", active).await?;
    assert_eq!(web.get("/api/peers").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_web_processes_share_one_daemon() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("share-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("share-b")).await?;
    let w1 = Web::spawn(WebOpts::new("share-1", a.socket())).await?;
    let w2 = Web::spawn(WebOpts::new("share-2", a.socket())).await?;
    assert_ne!(w1.addr(), w2.addr());
    let mut c1 = w1.ws("/ws").await?;
    let mut c2 = w2.ws("/ws").await?;
    assert_eq!(c1.recv_json(IO_TIMEOUT).await?["type"], "snapshot");
    assert_eq!(c2.recv_json(IO_TIMEOUT).await?["type"], "snapshot");
    let mut e1 = w1.ws("/explorer").await?;
    e1.wait_json(IO_TIMEOUT, "connected", |v| v["type"] == "connected")
        .await?;
    e1.send_text(&serde_json::json!({"type": "subscribe", "peerId": b.peer_id()}).to_string())
        .await?;
    e1.wait_json(IO_TIMEOUT, "subscribed", |v| v["type"] == "subscribed")
        .await?;
    e1.send_text(r#"{"type":"ping"}"#).await?;
    e1.wait_json(IO_TIMEOUT, "pong", |v| v["type"] == "pong").await?;

    a.connect_to(&b).await?;
    let connected = |v: &serde_json::Value| v["type"] == "peer_connected" && v["peer_id"] == b.peer_id();
    let s1 = c1.wait_json(IO_TIMEOUT, "peer_connected on web 1", connected).await?;
    let s2 = c2.wait_json(IO_TIMEOUT, "peer_connected on web 2", connected).await?;
    assert_eq!(s1["seq"], s2["seq"], "both web processes relay the daemon's numbering");
    let status = e1
        .wait_json(IO_TIMEOUT, "peer:status online", |v| {
            v["type"] == "peer:status" && v["peerId"] == b.peer_id()
        })
        .await?;
    assert_eq!(status["status"], "online");
    c1.send_text("ping").await?;
    c1.wait_json(IO_TIMEOUT, "pong", |v| v["type"] == "pong").await?;

    // SIGTERM stops one web process gracefully: its clients are told "going away" (1001), it
    // exits 0, and the other web process and the daemon go on.
    let mut w2 = w2;
    let status = w2.stop().await?;
    assert!(status.success(), "firma-web exited with {status}");
    let close = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match c2.recv().await {
                Ok(WsMsg::Close(code)) => return code,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await?;
    assert_eq!(close, Some(1001));
    assert_eq!(http(w1.addr(), "GET", "/health", &[], None).await?.status, 200);
    Ok(())
}
