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

    // /health: upstream's shape, 200 while the daemon answers; no credential needed.
    let r = http(web.addr(), "GET", "/health", &[], None).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let health = r.json()?;
    assert_eq!(health["status"], "ok");
    assert!(health["uptime"].is_number());
    assert!(health["connections"].is_number());
    assert_eq!(health["services"]["transports"], "ready");
    assert_eq!(health["daemon"]["reachable"], true);
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
    let target = b.tcp_addr().await?;
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

    // The login link: single use, sets an HttpOnly SameSite=Strict cookie that then works.
    let out = std::process::Command::new(firma_tests::web::web_bin()?)
        .arg("login-url")
        .arg("--state-dir")
        .arg(web.state_dir())
        .arg("--listen")
        .arg(addr.to_string())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout)?.trim().to_owned();
    let path = url
        .split_once(&addr.to_string())
        .map(|(_, p)| p.to_owned())
        .context("login URL names another address")?;
    let r = http(addr, "GET", &path, &[], None).await?;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r.header("set-cookie").context("no cookie")?.to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    assert_eq!(
        http(addr, "GET", "/api/info", &h(&[("cookie", &pair)]), None)
            .await?
            .status,
        200
    );
    assert_eq!(
        http(addr, "GET", &path, &[], None).await?.status,
        403,
        "a login link worked twice"
    );
    // A browser's upgrade: cookie and same-origin Origin.
    let ws = ws_connect(addr, "/explorer", &h(&[("cookie", &pair), ("origin", &origin)])).await?;
    ws.close().await;
    Ok(())
}
