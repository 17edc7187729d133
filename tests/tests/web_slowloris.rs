//! firma-web's connection bounds: half-sent requests are cut at the header-read timeout
//! (`--header-read-timeout-ms`) while `/health` goes on answering, and the connection cap
//! (`--max-connections`) makes extra clients wait instead of growing without bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use firma_tests::web::{Web, WebOpts, http};
use firma_tests::{Daemon, DaemonOpts, wait_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Slowloris clients opened at once (the number the issue saw held for 40 s and more).
const SLOW_CLIENTS: usize = 3000;
const HEADER_TIMEOUT: Duration = Duration::from_millis(2000);
/// Slack for a loaded 2-core machine on top of the timeout.
const SLACK: Duration = Duration::from_secs(8);

/// Open a connection, send half a request head, then trickle one header byte at a time (as a
/// slowloris does, so that an idle timer alone would not catch it) until the server closes;
/// `opened` and `closed` count them.
async fn slow_client(addr: SocketAddr, opened: Arc<AtomicUsize>, closed: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nx-slow: ").as_bytes())
        .await?;
    opened.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => {
                if matches!(r, Ok(0) | Err(_)) {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(400)) => {
                if s.write_all(b"a").await.is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_at_the_header_timeout() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("slowloris")).await?;
    let mut opts = WebOpts::new("slowloris", a.socket());
    opts.args.extend([
        "--header-read-timeout-ms".into(),
        HEADER_TIMEOUT.as_millis().to_string(),
    ]);
    let web = Web::spawn(opts).await?;
    let addr = web.addr();
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..SLOW_CLIENTS {
        clients.spawn(slow_client(addr, opened.clone(), closed.clone()));
    }
    wait_for(SLACK, "the slowloris clients to connect", || async {
        opened.load(Ordering::Relaxed) == SLOW_CLIENTS || closed.load(Ordering::Relaxed) > 0
    })
    .await?;
    // While they all hold their connections, /health answers.
    let health = http(addr, "GET", "/health", &[], None).await?;
    assert_eq!(health.status, 200, "{}", health.text());
    wait_for(
        HEADER_TIMEOUT + SLACK,
        "every half-sent request to be closed",
        || async { closed.load(Ordering::Relaxed) == SLOW_CLIENTS },
    )
    .await?;
    let took = started.elapsed();
    assert!(took >= HEADER_TIMEOUT / 2, "closed before the timeout: {took:?}");
    while let Some(r) = clients.join_next().await {
        r??;
    }
    let health = http(addr, "GET", "/health", &[], None).await?;
    assert_eq!(health.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_clients_wait_for_a_free_slot() -> anyhow::Result<()> {
    const CAP: usize = 20;
    let a = Daemon::spawn(DaemonOpts::named("conncap")).await?;
    let mut opts = WebOpts::new("conncap", a.socket());
    opts.args.extend([
        "--max-connections".into(),
        CAP.to_string(),
        "--header-read-timeout-ms".into(),
        HEADER_TIMEOUT.as_millis().to_string(),
    ]);
    let web = Web::spawn(opts).await?;
    let addr = web.addr();
    // Fill every slot with a slowloris client; connections are accepted in the order they were
    // made, so until one of these is cut a request made now can only be answered when a slot frees.
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..CAP {
        clients.spawn(slow_client(addr, opened.clone(), closed.clone()));
    }
    wait_for(SLACK, "the slowloris clients to connect", || async {
        opened.load(Ordering::Relaxed) == CAP
    })
    .await?;
    let health = http(addr, "GET", "/health", &[], None).await?;
    let waited = started.elapsed();
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        waited >= HEADER_TIMEOUT / 4,
        "answered in {waited:?} with all {CAP} slots taken: there is no cap"
    );
    assert!(waited < HEADER_TIMEOUT + SLACK, "waited {waited:?}");
    while let Some(r) = clients.join_next().await {
        r??;
    }
    Ok(())
}
