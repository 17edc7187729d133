//! The fan-out's back-pressure: a client that stops reading falls behind alone, is told it lagged
//! and is resynced with a snapshot, while the other clients keep the full stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, spawn_churn, ws_connect_with};
use firma_tests::{Daemon, DaemonOpts, wait_for};

/// How long the churn may take to push a stalled client past its queue.
const LAG_TIMEOUT: Duration = Duration::from_secs(60);
/// Events made while the stalled client does not read: far more than its buffers and queue hold.
const STALL_EVENTS: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_told_it_lagged_and_resynced() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("lag-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("lag-b")).await?;
    let mut opts = WebOpts::new("lag", a.socket());
    // A short queue and small kernel send buffers, so the stall shows within seconds.
    opts.args.extend([
        "--ws-queue".into(),
        "16".into(),
        "--tcp-send-buffer".into(),
        "8192".into(),
    ]);
    let web = Web::spawn(opts).await?;

    // The stalled client: a 4 KiB receive buffer, and it stops reading after its snapshot.
    let mut h = web.auth();
    h.push(("origin".into(), web.origin()));
    let mut stalled = ws_connect_with(web.addr(), "/ws", &h, Some(4096)).await?;
    assert_eq!(stalled.recv_json(IO_TIMEOUT).await?["type"], "snapshot");
    let mut reader = web.ws("/ws").await?;
    let first = reader.recv_json(IO_TIMEOUT).await?;
    let mut last = first["seq"].as_u64().context("snapshot without seq")?;

    let stop = Arc::new(AtomicBool::new(false));
    let churn = spawn_churn(
        a.socket().to_owned(),
        b.tcp_addr().await?,
        b.peer_id().to_owned(),
        stop.clone(),
        Duration::ZERO,
    );
    // The reading client keeps up (gapless) while the stalled one falls far behind: its kernel
    // buffers hold a hundred-odd events, its queue 16, the churn makes hundreds more.
    let start = last;
    let lagged = wait_for(LAG_TIMEOUT, "the daemon to emit 500 more events", || async {
        a.status().await.is_ok_and(|s| s.event_head >= start + STALL_EVENTS)
    });
    let read = async {
        loop {
            let v = reader.recv_json(IO_TIMEOUT).await?;
            if let Some(seq) = v["seq"].as_u64().filter(|_| v["type"] != "snapshot") {
                anyhow::ensure!(seq == last + 1, "the reading client saw a gap: {seq} after {last}: {v}");
                last = seq;
            } else if v["type"] == "resync" {
                anyhow::bail!("the reading client was resynced: {v}");
            }
        }
    };
    tokio::select! {
        r = lagged => { r?; }
        r = read => { r?; }
    }
    stop.store(true, Ordering::Relaxed);
    churn.await??;

    // Reading again, the stalled client finds a resync (reason: lagged) followed by a snapshot.
    let resync = stalled
        .wait_json(LAG_TIMEOUT, "a resync", |v| v["type"] == "resync")
        .await?;
    assert_eq!(resync["reason"], "lagged", "{resync}");
    let snap = stalled.recv_json(IO_TIMEOUT).await?;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    let metrics = web.get("/metrics").await?.text();
    assert!(
        !metrics.contains("firma_web_ws_lagged_total 0\n"),
        "the lag was not counted:\n{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_up_a_reload() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("stall-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("stall-b")).await?;
    let mut opts = WebOpts::new("stall", a.socket());
    opts.args.extend([
        "--ws-queue".into(),
        "16".into(),
        "--tcp-send-buffer".into(),
        "8192".into(),
    ]);
    let web = Web::spawn(opts).await?;
    let mut h = web.auth();
    h.push(("origin".into(), web.origin()));
    let mut stalled = ws_connect_with(web.addr(), "/ws", &h, Some(4096)).await?;
    let snap = stalled.recv_json(IO_TIMEOUT).await?;
    let start = snap["seq"].as_u64().context("snapshot without seq")?;

    let stop = Arc::new(AtomicBool::new(false));
    let churn = spawn_churn(
        a.socket().to_owned(),
        b.tcp_addr().await?,
        b.peer_id().to_owned(),
        stop.clone(),
        Duration::ZERO,
    );
    wait_for(LAG_TIMEOUT, "the daemon to emit 500 more events", || async {
        a.status().await.is_ok_and(|s| s.event_head >= start + STALL_EVENTS)
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    churn.await??;
    // The drain deadline is 5 s; a client blocked on a full socket must not use it up.
    let took = web.reload().await?;
    eprintln!("reload with a stalled client took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "a reload with a stalled client took {took:?}"
    );
    Ok(())
}
