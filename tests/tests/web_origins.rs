//! `--allow-origin`: a page on another origin (upstream's Vite dev server on :3000) may open the
//! WebSockets and call the API with its credential, CORS answers name that origin only and allow
//! credentials for it only, and every other origin stays refused.

use firma_tests::web::{Web, WebOpts, http, web_bin, ws_connect};
use firma_tests::{Daemon, DaemonOpts};

const DEV: &str = "http://localhost:3000";

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_may_connect_with_credentials_only() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("origin")).await?;
    let mut opts = WebOpts::new("origin", a.socket());
    opts.args.extend(["--allow-origin".into(), DEV.into()]);
    let web = Web::spawn(opts).await?;
    let bearer = format!("Bearer {}", web.token());
    let addr = web.addr();

    // WebSockets: the allowed origin with the token is let in; without a credential it is not;
    // any other origin is refused even with the token.
    for path in ["/explorer", "/ws"] {
        ws_connect(addr, path, &h(&[("origin", DEV), ("authorization", &bearer)]))
            .await
            .map_err(|e| anyhow::anyhow!("{path} from {DEV}: {e}"))?;
        let anon = ws_connect(addr, path, &h(&[("origin", DEV)])).await;
        assert_eq!(
            anon.err().and_then(|e| e.status()),
            Some(401),
            "{path} without a credential"
        );
        for other in ["http://localhost:3001", "https://localhost:3000", "http://evil.example"] {
            let r = ws_connect(addr, path, &h(&[("origin", other), ("authorization", &bearer)])).await;
            assert_eq!(r.err().and_then(|e| e.status()), Some(403), "{path} from {other}");
        }
    }

    // CORS preflight of an authenticated API call from the page.
    let preflight = |origin: &str| {
        let hs = h(&[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization,content-type"),
        ]);
        async move { http(addr, "OPTIONS", "/api/peers/connect", &hs, None).await }
    };
    let ok = preflight(DEV).await?;
    assert!(ok.status < 300, "preflight answered {}: {}", ok.status, ok.text());
    assert_eq!(ok.header("access-control-allow-origin"), Some(DEV));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let allowed_headers = ok
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    let methods = ok.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");
    let foreign = preflight("http://evil.example").await?;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    assert_eq!(foreign.header("access-control-allow-credentials"), None);

    // The real calls: readable by the page (its origin and credentials allowed), still needing
    // the credential, and a state-changing call is not refused for its origin.
    let r = http(
        addr,
        "GET",
        "/api/peers",
        &h(&[("origin", DEV), ("authorization", &bearer)]),
        None,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(DEV));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = http(addr, "GET", "/api/peers", &h(&[("origin", DEV)]), None).await?;
    assert_eq!(r.status, 401, "{}", r.text());
    let body = br#"{"target":"not-a-multiaddr"}"#;
    let hs = h(&[
        ("origin", DEV),
        ("authorization", &bearer),
        ("content-type", "application/json"),
    ]);
    let r = http(addr, "POST", "/api/peers/connect", &hs, Some(body)).await?;
    assert_ne!(
        r.status,
        403,
        "a POST from the allowed origin was refused: {}",
        r.text()
    );
    let hs = h(&[
        ("origin", "http://evil.example"),
        ("authorization", &bearer),
        ("content-type", "application/json"),
    ]);
    let r = http(addr, "POST", "/api/peers/connect", &hs, Some(body)).await?;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        addr,
        "GET",
        "/api/peers",
        &h(&[("origin", "http://evil.example"), ("authorization", &bearer)]),
        None,
    )
    .await?;
    assert_eq!(r.header("access-control-allow-origin"), None);
    Ok(())
}

/// With no `--allow-origin` (the default) nothing cross-origin is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_is_allowed_by_default() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("origin-none")).await?;
    let web = Web::spawn(WebOpts::new("origin-none", a.socket())).await?;
    let bearer = format!("Bearer {}", web.token());
    let r = ws_connect(
        web.addr(),
        "/explorer",
        &h(&[("origin", DEV), ("authorization", &bearer)]),
    )
    .await;
    assert_eq!(r.err().and_then(|e| e.status()), Some(403));
    let hs = h(&[("origin", DEV), ("access-control-request-method", "GET")]);
    let r = http(web.addr(), "OPTIONS", "/api/peers", &hs, None).await?;
    assert_eq!(r.header("access-control-allow-origin"), None);
    Ok(())
}

/// A malformed origin is refused at start with a message that names the flag and the form.
#[test]
fn a_bad_origin_is_refused_at_start() -> anyhow::Result<()> {
    for bad in ["localhost:3000", "*", "http://localhost:3000/app"] {
        let out = std::process::Command::new(web_bin()?)
            .args(["--listen", "127.0.0.1:0", "--allow-origin", bad])
            .env("FIRMA_STATE_DIR", tempfile::tempdir()?.path())
            .output()?;
        assert!(!out.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--allow-origin") && err.contains("http://localhost:3000"),
            "{bad}: {err}"
        );
    }
    Ok(())
}
