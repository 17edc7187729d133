//! firma-web's REST surface against a real daemon: upstream shapes, peers through the API, the
//! OpenAPI document, metrics, and every request the security rules must turn away.

use std::time::Duration;

use anyhow::Context as _;
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsMsg, http, ws_connect};
use firma_tests::{Daemon, DaemonOpts, wait_for};
use serde_json::json;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_shapes_and_peer_operations() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("rest-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("rest-b")).await?;
    let web = Web::spawn(WebOpts::new("rest", a.socket())).await?;

    // /health: upstream's shape, 200 while the daemon answers; no credential needed, and so
    // nothing about this node: no PeerId, no socket path (issue 11 item 8).
    let r = http(web.addr(), "GET", "/health", &[], None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let health = r.json()?;
    assert_eq!(health["status"], "ok");
    assert!(health["uptime"].is_number());
    assert!(health["connections"].is_number());
    assert_eq!(health["services"]["transports"], "ready");
    let keys: Vec<&str> = health
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["connections", "services", "status", "uptime"], "{health}");
    let text = r.text();
    assert!(!text.contains(a.peer_id()), "/health shows the PeerId: {text}");
    assert!(
        !text.contains(&a.socket().display().to_string()),
        "/health shows the socket: {text}"
    );
    for (k, v) in [
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.header(k), Some(v), "header {k}");
    }

    let info = web.get_json("/api/info").await?;
    for key in ["version", "uptime", "storage", "websocket", "transports", "instance_id"] {
        assert!(info.get(key).is_some(), "/api/info lacks {key}: {info}");
    }
    for key in ["total", "authenticated", "subscriptions", "averageUptime"] {
        assert!(info["websocket"].get(key).is_some(), "/api/info websocket lacks {key}");
    }
    assert_eq!(info["transports"]["ready"], true);
    // The details /health no longer shows, behind auth.
    assert_eq!(info["daemon"]["reachable"], true);
    assert_eq!(info["daemon"]["peerId"], a.peer_id());
    assert_eq!(info["daemon"]["socket"], a.socket().display().to_string());

    let t = web.get_json("/api/transports/available").await?;
    let p2p = &t["transports"][0];
    assert_eq!(p2p["type"], "p2p");
    for key in [
        "enabled",
        "configured",
        "status",
        "version",
        "features",
        "installCommand",
    ] {
        assert!(p2p.get(key).is_some(), "transport lacks {key}: {p2p}");
    }

    // Connect a peer through the API and see it in peers, connections, topology and history.
    // The web role dials only what the daemon knows: an operator introduces b first.
    let target = b.tcp_addr().await?;
    a.connect_to(&b).await?;
    let op = a.client().await?;
    firma_tests::harness::flatten(
        op.client
            .disconnect(
                firma_ipc::client::ctx(firma_ipc::client::CALL_TIMEOUT),
                b.peer_id().to_owned(),
            )
            .await,
    )?;
    wait_for(Duration::from_secs(10), "a to drop b", || async {
        !a.is_connected_to(b.peer_id()).await
    })
    .await?;
    let r = web.post("/api/peers/connect", &json!({ "target": target })).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()?["peer_id"], b.peer_id());
    a.wait_connected(b.peer_id(), Duration::from_secs(10)).await?;
    let peers = web.get_json("/api/peers?filter=connected").await?;
    assert!(
        peers
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["peer_id"] == b.peer_id())),
        "{peers}"
    );
    let one = web.get_json(&format!("/api/peers/{}", b.peer_id())).await?;
    assert_eq!(one["connected"], true);
    let conns = web.get_json("/api/connections").await?;
    assert!(
        conns
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["peer_id"] == b.peer_id())),
        "{conns}"
    );
    let topo = web.get_json("/api/topology").await?;
    assert!(
        topo["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["peer_id"] == b.peer_id())),
        "{topo}"
    );
    let pinned = web
        .post(&format!("/api/peers/{}/pin", b.peer_id()), &json!({ "pinned": true }))
        .await?;
    assert_eq!(pinned.status, 200, "{}", pinned.text());
    assert_eq!(pinned.json()?["pinned"], true);
    let disc = web.get_json("/api/discovery").await?;
    assert!(disc.get("mdns_enabled").is_some(), "{disc}");
    let r = web
        .post(&format!("/api/peers/{}/disconnect", b.peer_id()), &json!({}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(Duration::from_secs(10), "the peer to show as disconnected", || async {
        web.get_json(&format!("/api/peers/{}", b.peer_id()))
            .await
            .is_ok_and(|p| p["connected"] == false)
    })
    .await?;
    let hist = web
        .get_json(&format!("/api/history?peer={}&limit=10", b.peer_id()))
        .await?;
    assert!(hist.as_array().is_some_and(|h| !h.is_empty()), "{hist}");

    // Daemon errors keep their meaning.
    let r = web.get("/api/peers/not-a-peer-id").await?;
    assert!(r.status == 400 || r.status == 404, "{} {}", r.status, r.text());
    assert!(r.json()?["error"].is_string());

    let doc = http(web.addr(), "GET", "/api/openapi.json", &[], None).await?.json()?;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/peers", "/api/topology", "/ws", "/explorer", "/metrics"] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }

    let m = web.get("/metrics").await?;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(text.contains("firma_web_daemon_up 1"), "{text}");
    let daemon_metric = text
        .lines()
        .any(|l| l.starts_with("firma_") && !l.starts_with("firma_web_"));
    assert!(daemon_metric, "no daemon metrics in /metrics:\n{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_rules_turn_requests_away() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("sec")).await?;
    let web = Web::spawn(WebOpts::new("sec", a.socket())).await?;
    let addr = web.addr();
    let bearer = format!("Bearer {}", web.token());
    let origin = web.origin();

    // Wrong Host (DNS rebinding), on a public route, an API route and a WebSocket upgrade.
    let evil_host = format!("evil.example:{}", addr.port());
    let r = http(addr, "GET", "/health", &h(&[("host", &evil_host)]), None).await?;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        addr,
        "GET",
        "/api/info",
        &h(&[("host", &evil_host), ("authorization", &bearer)]),
        None,
    )
    .await?;
    assert_eq!(r.status, 403);
    let e = ws_connect(
        addr,
        "/ws",
        &h(&[("host", &evil_host), ("authorization", &bearer), ("origin", &origin)]),
    )
    .await
    .err()
    .context("an upgrade with a foreign Host was accepted")?;
    assert_eq!(e.status(), Some(403), "{e}");

    // Missing and wrong credentials.
    assert_eq!(http(addr, "GET", "/api/info", &[], None).await?.status, 401);
    assert_eq!(
        http(addr, "GET", "/api/info", &h(&[("authorization", "Bearer 00")]), None)
            .await?
            .status,
        401
    );
    let wrong = format!("Bearer {}", "0".repeat(64));
    assert_eq!(
        http(addr, "GET", "/metrics", &h(&[("authorization", &wrong)]), None)
            .await?
            .status,
        401
    );
    let e = ws_connect(addr, "/ws", &h(&[("origin", &origin)]))
        .await
        .err()
        .context("an unauthenticated upgrade was accepted")?;
    assert_eq!(e.status(), Some(401), "{e}");
    let e = ws_connect(addr, "/explorer", &h(&[("origin", &origin), ("authorization", &wrong)]))
        .await
        .err()
        .context("an upgrade with a wrong token was accepted")?;
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!web.log().contains(web.token()), "the token was logged");

    // A foreign Origin on a state-changing request and on an upgrade, token or not.
    let body = json!({"target": "/ip4/127.0.0.1/tcp/1"}).to_string();
    let post_h = h(&[
        ("authorization", &bearer),
        ("origin", "http://evil.example"),
        ("content-type", "application/json"),
    ]);
    let r = http(addr, "POST", "/api/peers/connect", &post_h, Some(body.as_bytes())).await?;
    assert_eq!(r.status, 403, "{}", r.text());
    let e = ws_connect(
        addr,
        "/ws",
        &h(&[("authorization", &bearer), ("origin", "http://evil.example")]),
    )
    .await
    .err()
    .context("an upgrade from a foreign Origin was accepted")?;
    assert_eq!(e.status(), Some(403), "{e}");
    let r = http(
        addr,
        "POST",
        "/api/discovery",
        &h(&[("cookie", "firma_session=x"), ("content-type", "application/json")]),
        Some(b"{}"),
    )
    .await?;
    assert_eq!(
        r.status,
        403,
        "a cookie without an origin must not change state: {}",
        r.text()
    );

    // Oversized request body and WebSocket message.
    let big = vec![b'a'; 2 * 1024 * 1024];
    let big_h = h(&[
        ("authorization", &bearer),
        ("origin", &origin),
        ("content-type", "application/json"),
    ]);
    let r = http(addr, "POST", "/api/peers/connect", &big_h, Some(&big)).await;
    match r {
        Ok(r) => assert_eq!(r.status, 413, "{}", r.text()),
        // The server may also close before reading the whole body.
        Err(e) => assert!(!e.is_refused(), "{e}"),
    }
    let mut ws = web.ws("/ws").await?;
    let snap = ws.recv_json(IO_TIMEOUT).await?;
    assert_eq!(snap["type"], "snapshot");
    let huge = "x".repeat(2 * 1024 * 1024);
    let _ = ws.send_text(&huge).await;
    let end = tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            match ws.recv().await {
                Ok(WsMsg::Close(code)) => return Some(code),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .context("the server kept a connection that sent a 2 MiB message")?;
    if let Some(code) = end {
        assert_ne!(code, Some(1000), "an oversized message must not close normally");
    }

    // The login link: loading it only sends the browser to the page; the page redeems the nonce
    // once, same-origin, and gets a session that is no cookie.
    let path = web.login_path()?;
    let nonce = path
        .split_once("nonce=")
        .map(|(_, n)| n.to_owned())
        .context("no nonce")?;
    let r = http(addr, "GET", &path, &[], None).await?;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("/#login={nonce}").as_str()));
    assert!(r.header("set-cookie").is_none(), "loading the link set a cookie");
    let body = json!({ "nonce": nonce }).to_string();
    let login_h = h(&[("origin", &origin), ("content-type", "application/json")]);
    let foreign = h(&[("origin", "http://evil.example"), ("content-type", "application/json")]);
    let r = http(addr, "POST", "/login", &foreign, Some(body.as_bytes())).await?;
    assert_eq!(r.status, 403, "a login from another origin: {}", r.text());
    let r = http(addr, "POST", "/login", &login_h, Some(body.as_bytes())).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    if let Some(c) = r.header("set-cookie") {
        assert!(c.contains("Max-Age=0"), "the login set a live cookie: {c}");
    }
    let session = r.json()?["session"].as_str().context("no session")?.to_owned();
    let as_bearer = format!("Bearer {session}");
    assert_eq!(
        http(addr, "GET", "/api/info", &h(&[("authorization", &as_bearer)]), None)
            .await?
            .status,
        200
    );
    let as_cookie = format!("firma_session={session}");
    assert_eq!(
        http(addr, "GET", "/api/info", &h(&[("cookie", &as_cookie)]), None)
            .await?
            .status,
        401,
        "a cookie opens the API"
    );
    let r = http(addr, "POST", "/login", &login_h, Some(body.as_bytes())).await?;
    assert_eq!(r.status, 403, "a login link worked twice: {}", r.text());

    // A browser's upgrade: a single-use ticket and a same-origin Origin; the ticket opens only
    // WebSockets and downloads, once.
    let ticket_h = h(&[("authorization", &as_bearer), ("origin", &origin)]);
    let ticket = |r: firma_tests::web::HttpResponse| -> anyhow::Result<String> {
        anyhow::ensure!(r.status == 200, "POST /api/tickets answered {}: {}", r.status, r.text());
        Ok(r.json()?["ticket"].as_str().context("no ticket")?.to_owned())
    };
    let t = ticket(http(addr, "POST", "/api/tickets", &ticket_h, Some(b"{}")).await?)?;
    let r = http(addr, "GET", &format!("/api/info?ticket={t}"), &[], None).await?;
    assert_eq!(r.status, 401, "a ticket opened a REST route");
    let t = ticket(http(addr, "POST", "/api/tickets", &ticket_h, Some(b"{}")).await?)?;
    let ws = ws_connect(addr, &format!("/explorer?ticket={t}"), &h(&[("origin", &origin)])).await?;
    ws.close().await;
    let e = ws_connect(addr, &format!("/explorer?ticket={t}"), &h(&[("origin", &origin)]))
        .await
        .err()
        .context("a ticket worked twice")?;
    assert_eq!(e.status(), Some(401), "{e}");
    Ok(())
}

/// `firma-web sessions ...` against `web`'s state dir; its stdout.
fn sessions_cli(web: &Web, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(firma_tests::web::web_bin()?)
        .arg("sessions")
        .args(args)
        .arg("--state-dir")
        .arg(web.state_dir())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "firma-web sessions {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The close code `ws` ends with, waiting up to `deadline`.
async fn close_code(ws: &mut firma_tests::web::WsClient, deadline: Duration) -> anyhow::Result<Option<u16>> {
    tokio::time::timeout(deadline, async {
        loop {
            match ws.recv().await {
                Ok(WsMsg::Close(code)) => return Ok(code),
                Ok(_) => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("the socket broke without a close frame")),
            }
        }
    })
    .await
    .context("the socket stayed open")?
}

/// Issue 11 items 5 and 6: a flood of bad login links locks nobody out; a session ends at once
/// on `/logout`, on `firma-web sessions revoke` from outside, and at expiry, and its WebSockets
/// are closed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_survives_a_flood_and_sessions_end_with_their_sockets() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("sess")).await?;
    let web = Web::spawn(WebOpts::new("sess", a.socket())).await?;
    let addr = web.addr();
    let origin = web.origin();

    // What any page can make a browser load, in a loop; and what a local process can post.
    for i in 0..60 {
        let r = http(addr, "GET", &format!("/login?nonce=x{i}"), &[], None).await?;
        assert_ne!(r.status, 429, "loading a bad login link was rate-limited");
        let bogus = format!("{i:064x}");
        let r = http(addr, "GET", &format!("/login?nonce={bogus}"), &[], None).await?;
        assert_eq!(r.status, 303);
        let body = json!({ "nonce": bogus }).to_string();
        let post_h = h(&[("origin", &origin), ("content-type", "application/json")]);
        let r = http(addr, "POST", "/login", &post_h, Some(body.as_bytes())).await?;
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let session = web.session().await.context("a valid login after the flood")?;
    let bearer = format!("Bearer {session}");
    let with_session = h(&[("authorization", &bearer), ("origin", &origin)]);

    // /logout: the API token is no session; a foreign page cannot log anyone out.
    let r = http(addr, "POST", "/logout", &web.auth(), Some(b"{}")).await?;
    assert_eq!(r.status, 400, "{}", r.text());
    let foreign = h(&[("authorization", &bearer), ("origin", "http://evil.example")]);
    assert_eq!(http(addr, "POST", "/logout", &foreign, Some(b"{}")).await?.status, 403);
    let mut ws = ws_connect(addr, "/ws", &with_session).await?;
    let mut explorer = ws_connect(addr, "/explorer", &with_session).await?;
    let r = http(addr, "POST", "/logout", &with_session, Some(b"{}")).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http(addr, "GET", "/api/info", &with_session, None).await?.status, 401);
    assert_eq!(close_code(&mut ws, IO_TIMEOUT).await?, Some(1008));
    assert_eq!(close_code(&mut explorer, IO_TIMEOUT).await?, Some(1008));

    // Revoked from outside the process: refused on the next request, sockets closed soon after.
    let session = web.session().await?;
    let bearer = format!("Bearer {session}");
    let with_session = h(&[("authorization", &bearer), ("origin", &origin)]);
    let mut ws = ws_connect(addr, "/ws", &with_session).await?;
    let listed: serde_json::Value = serde_json::from_str(&sessions_cli(&web, &["list", "--json"])?)?;
    let ids: Vec<&str> = listed
        .as_array()
        .map(|l| l.iter().filter_map(|s| s["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "{listed}");
    assert!(session.starts_with(ids[0]) && ids[0].len() < session.len(), "{listed}");
    let out = sessions_cli(&web, &["revoke", ids[0]])?;
    assert!(out.contains("revoked 1"), "{out}");
    assert_eq!(http(addr, "GET", "/api/info", &with_session, None).await?.status, 401);
    assert_eq!(close_code(&mut ws, IO_TIMEOUT).await?, Some(1008));

    // Expiry: a session whose time runs out while its socket is open.
    let session = web.session().await?;
    let bearer = format!("Bearer {session}");
    let with_session = h(&[("authorization", &bearer), ("origin", &origin)]);
    let mut explorer = ws_connect(addr, "/explorer", &with_session).await?;
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        + 500;
    std::fs::write(web.state_dir().join("web-sessions").join(&session), soon.to_string())?;
    assert_eq!(close_code(&mut explorer, IO_TIMEOUT).await?, Some(1008));
    assert_eq!(http(addr, "GET", "/api/info", &with_session, None).await?.status, 401);

    // --all.
    let s1 = web.session().await?;
    let s2 = web.session().await?;
    let out = sessions_cli(&web, &["revoke", "--all"])?;
    assert!(out.contains("revoked 2"), "{out}");
    for s in [s1, s2] {
        let hs = h(&[("authorization", &format!("Bearer {s}"))]);
        assert_eq!(http(addr, "GET", "/api/info", &hs, None).await?.status, 401);
    }
    assert!(sessions_cli(&web, &["list"])?.contains("no sessions"));
    // The API token is untouched by all of it.
    assert_eq!(web.get("/api/info").await?.status, 200);
    Ok(())
}
