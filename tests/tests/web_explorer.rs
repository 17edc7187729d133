//! The upstream Peer Explorer socket's message set (upstream's transport values, the
//! `EnhancedPeer` record, groups and messages and their bounds), the close handshake and the
//! heartbeat of both sockets, and a reload into a replaced binary (as cargo leaves it after a
//! rebuild).

use std::time::Duration;

use anyhow::Context as _;
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsMsg, web_bin};
use firma_tests::{Daemon, DaemonOpts, wait_for};
use serde_json::json;

// /explorer's documented bounds (web/src/explorer_groups.rs).
const MAX_CONTENT: usize = 16 * 1024;
const MAX_GROUP_ID: usize = 128;
const MAX_GROUPS_PER_CLIENT: usize = 32;
const MESSAGE_BURST: usize = 20;

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
    // Upstream's values: its TransportStatusBar counts p2p as up only when `active`.
    let status = ws.recv_json(IO_TIMEOUT).await?;
    assert_eq!(status["type"], "transport:status");
    assert_eq!(status["transport"], "p2p");
    assert_eq!(status["status"], "active", "{status}");
    assert_eq!(status["details"]["connections"], 0, "{status}");
    assert!(status["timestamp"].is_u64());

    let exchanges = [
        (json!({"type": "ping"}).to_string(), json!({"type": "pong"})),
        (
            json!({"type": "join_group", "groupId": "g"}).to_string(),
            json!({"type": "joined_group", "groupId": "g"}),
        ),
        (
            json!({"type": "leave_group", "groupId": "g"}).to_string(),
            json!({"type": "left_group", "groupId": "g"}),
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
    // The connection shows in upstream's transport status as a count.
    ws.wait_json(IO_TIMEOUT, "transport:status with one connection", |v| {
        v["type"] == "transport:status" && v["details"]["connections"] == 1
    })
    .await?;
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

/// `peer:discovered` carries upstream's `EnhancedPeer`, filled from what the daemon knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_peers_are_enhanced_peers() -> anyhow::Result<()> {
    // Kademlia on: a new routing-table entry is how a directly connected peer is "discovered"
    // (mDNS, the other source, needs network namespaces; mdns_netns.rs covers it).
    let dht = |name: &str| {
        let mut o = DaemonOpts::named(name);
        o.dht = true;
        o
    };
    let a = Daemon::spawn(dht("enh-a")).await?;
    let b = Daemon::spawn(dht("enh-b")).await?;
    let web = Web::spawn(WebOpts::new("enh", a.socket())).await?;
    let mut ws = web.ws("/explorer").await?;
    a.connect_to(&b).await?;
    let found = ws
        .wait_json(IO_TIMEOUT, "peer:discovered of b", |v| {
            v["type"] == "peer:discovered" && v["peer"]["peerId"] == b.peer_id()
        })
        .await?;
    let p = &found["peer"];
    assert_eq!(p["identifiers"], json!({"p2p": b.peer_id()}), "{p}");
    assert!(p["displayName"].as_str().is_some_and(|n| !n.is_empty()), "{p}");
    let t = &p["transports"]["p2p"];
    assert!(
        t["addresses"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.starts_with("/ip4/127.0.0.1/")))),
        "{p}"
    );
    assert!(matches!(t["status"].as_str(), Some("connected" | "available")), "{p}");
    assert!(t["lastSeen"].as_str().is_some_and(|d| d.ends_with('Z')), "{p}");
    assert_eq!(p["availableTransports"], json!(["p2p"]), "{p}");
    assert!(matches!(p["status"].as_str(), Some("online" | "offline")), "{p}");
    assert!(
        matches!(
            p["trustLevel"].as_str(),
            Some("unverified" | "identity_verified" | "trusted")
        ),
        "{p}"
    );
    let h = &p["transferHistory"];
    assert_eq!((h["sent"].as_u64(), h["received"].as_u64()), (Some(0), Some(0)), "{p}");
    assert_eq!(h["totalBytes"], 0, "{p}");
    let caps = &p["capabilities"];
    assert!(caps["maxFileSize"].is_u64(), "{p}");
    assert_eq!(caps["supportsMessaging"], false, "{p}");
    assert_eq!(caps["supportedTransports"], json!(["p2p"]), "{p}");
    assert!(p["metadata"].is_object(), "{p}");
    Ok(())
}

/// Groups: members on this server get each other's messages; every bound answers an `error`
/// and the client stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_reach_members_within_bounds() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("grp")).await?;
    let web = Web::spawn(WebOpts::new("grp", a.socket())).await?;
    let open = || async {
        let mut c = web.ws("/explorer").await?;
        let hello = c.recv_json(IO_TIMEOUT).await?;
        c.wait_json(IO_TIMEOUT, "transport:status", |v| v["type"] == "transport:status")
            .await?;
        anyhow::Ok((c, hello["clientId"].as_str().unwrap_or_default().to_owned()))
    };
    let (mut alice, alice_id) = open().await?;
    let (mut bob, _) = open().await?;
    let (mut carol, _) = open().await?;
    for c in [&mut alice, &mut bob] {
        c.send_text(&json!({"type": "join_group", "groupId": "signers"}).to_string())
            .await?;
        assert_eq!(
            c.recv_json(IO_TIMEOUT).await?,
            json!({"type": "joined_group", "groupId": "signers"})
        );
    }
    alice
        .send_text(&json!({"type": "message", "groupId": "signers", "content": "please sign"}).to_string())
        .await?;
    let sent = alice.recv_json(IO_TIMEOUT).await?;
    assert_eq!(sent["type"], "message:sent", "{sent}");
    assert_eq!(sent["status"], "delivered", "{sent}");
    assert_eq!(sent["delivered"], 1, "{sent}");
    let got = bob.recv_json(IO_TIMEOUT).await?;
    assert_eq!(got["type"], "message:received", "{got}");
    assert_eq!(got["groupId"], "signers");
    assert_eq!(got["message"]["content"], "please sign");
    assert_eq!(got["message"]["peerId"], alice_id.as_str());
    assert_eq!(got["message"]["messageId"], sent["messageId"]);
    // Carol is no member: she gets nothing, and may not post to the group.
    carol
        .send_text(&json!({"type": "message", "groupId": "signers", "content": "x"}).to_string())
        .await?;
    let refused = carol.recv_json(IO_TIMEOUT).await?;
    assert_eq!(refused["type"], "error", "{refused}");
    // Upstream's frontend addresses peers; there is no P2P message protocol to carry that.
    carol
        .send_text(&json!({"type": "message", "peerId": a.peer_id(), "content": "x"}).to_string())
        .await?;
    let refused = carol.recv_json(IO_TIMEOUT).await?;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to send message")),
        "{refused}"
    );

    // Bounds: message size, group name, groups per client, message rate.
    let big = "x".repeat(MAX_CONTENT + 1);
    alice
        .send_text(&json!({"type": "message", "groupId": "signers", "content": big}).to_string())
        .await?;
    assert_eq!(alice.recv_json(IO_TIMEOUT).await?["type"], "error");
    let long = "g".repeat(MAX_GROUP_ID + 1);
    alice
        .send_text(&json!({"type": "join_group", "groupId": long}).to_string())
        .await?;
    assert_eq!(alice.recv_json(IO_TIMEOUT).await?["type"], "error");
    let mut joined = 1;
    let refused = loop {
        carol
            .send_text(&json!({"type": "join_group", "groupId": format!("g{joined}")}).to_string())
            .await?;
        let v = carol.recv_json(IO_TIMEOUT).await?;
        if v["type"] == "error" {
            break v;
        }
        joined += 1;
        assert!(joined <= MAX_GROUPS_PER_CLIENT + 1, "no cap on groups per client");
    };
    assert_eq!(joined - 1, MAX_GROUPS_PER_CLIENT, "{refused}");
    let mut sent = 0;
    let limited = loop {
        alice
            .send_text(&json!({"type": "message", "groupId": "signers", "content": "spam"}).to_string())
            .await?;
        let v = alice.recv_json(IO_TIMEOUT).await?;
        if v["type"] == "error" {
            break v;
        }
        sent += 1;
        assert!(sent <= 10 * MESSAGE_BURST, "no message rate limit");
    };
    assert!(
        limited["error"].as_str().is_some_and(|e| e.contains("rate limited")),
        "{limited}"
    );
    // Bob's inbox is bounded too, and he is still served after the flood.
    bob.send_text(r#"{"type":"ping"}"#).await?;
    bob.wait_json(IO_TIMEOUT, "pong", |v| v["type"] == "pong").await?;

    // Leaving stops delivery.
    bob.send_text(&json!({"type": "leave_group", "groupId": "signers"}).to_string())
        .await?;
    bob.wait_json(IO_TIMEOUT, "left_group", |v| v["type"] == "left_group")
        .await?;
    Ok(())
}

/// A client's normal close (1000) is answered with a close frame on both sockets, so that a
/// browser reports a clean close instead of 1006.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("close")).await?;
    let web = Web::spawn(WebOpts::new("close", a.socket())).await?;
    for path in ["/ws", "/explorer"] {
        let mut ws = web.ws(path).await?;
        ws.recv_json(IO_TIMEOUT).await?;
        let code = ws
            .close_handshake(IO_TIMEOUT)
            .await
            .with_context(|| format!("closing {path}"))?;
        assert_eq!(code, Some(1000), "{path} answered the close with {code:?}");
    }
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

/// Upstream's hook logic in Node (tests/js/explorer-client.mjs), on another origin allowed with
/// `--allow-origin`, as upstream develops (page on :3000, server on :8080): it reads upstream's
/// transport values, uses groups, and its `close(1000)` ends cleanly (no reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_hook_logic_in_node_works_from_an_allowed_origin() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("node-exp")).await?;
    let mut opts = WebOpts::new("node-exp", a.socket());
    opts.args
        .extend(["--allow-origin".into(), "http://localhost:3000".into()]);
    let web = Web::spawn(opts).await?;
    let url = format!("ws://{}/explorer", web.addr());
    let run = |origin: &'static str| {
        let (url, token) = (url.clone(), web.token().to_owned());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<serde_json::Value>> {
            // Node 22 has a WebSocket; Node 20 needs the flag.
            let has_ws = std::process::Command::new("node")
                .args(["-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
                .status()
                .context("running node (is Node.js 20+ installed?)")?
                .success();
            let mut cmd = std::process::Command::new("node");
            if !has_ws {
                cmd.arg("--experimental-websocket");
            }
            let out = cmd
                .arg("explorer-client.mjs")
                .args(["--url", &url, "--origin", origin, "--token", &token])
                .current_dir(firma_tests::js::js_dir())
                .stdin(std::process::Stdio::null())
                .output()
                .context("running tests/js/explorer-client.mjs")?;
            let lines = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            anyhow::ensure!(
                out.status.success(),
                "explorer-client.mjs failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(lines)
        })
    };
    let seen = run("http://localhost:3000").await??;
    let find = |event: &str| seen.iter().find(|v| v["event"] == event).cloned();
    let transport = find("transport").with_context(|| format!("no transport:status: {seen:?}"))?;
    assert_eq!(transport["status"], "active", "{seen:?}");
    assert!(transport["connections"].is_u64(), "{seen:?}");
    let types: Vec<&str> = seen
        .iter()
        .filter(|v| v["event"] == "message")
        .filter_map(|v| v["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["pong", "joined_group", "message:sent", "left_group"],
        "{seen:?}"
    );
    let closed = find("closed").with_context(|| format!("never closed: {seen:?}"))?;
    assert_eq!(closed["code"], 1000, "{seen:?}");
    assert_eq!(closed["wasClean"], true, "{seen:?}");

    // Another origin is refused before any message.
    let seen = run("http://localhost:3001").await??;
    assert!(
        !seen.iter().any(|v| v["event"] == "open") && seen.iter().any(|v| v["event"] == "refused"),
        "a page of an origin not allowed was let in: {seen:?}"
    );
    Ok(())
}
