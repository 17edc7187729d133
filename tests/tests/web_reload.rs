//! SIGUSR2 hot reload of firma-web with real processes: no connection is refused through 20
//! reloads, and a /ws client that resumes with `since` sees a gapless sequence while peers
//! connect and disconnect during the reloads. The daemon is never touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsClient, WsMsg, http, spawn_churn};
use firma_tests::{Daemon, DaemonOpts};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_refuse_no_connection() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("reload20")).await?;
    let web = Web::spawn(WebOpts::new("reload20", a.socket())).await?;
    let addr = web.addr();
    let daemon_pid = a.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, failed, not_ok) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let poller = {
        let (stop, ok, refused, failed, not_ok) = (
            stop.clone(),
            ok.clone(),
            refused.clone(),
            failed.clone(),
            not_ok.clone(),
        );
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http(addr, "GET", "/health", &[], None).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        errors.push(format!("status {}: {}", r.status, r.text()));
                        not_ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) if e.is_refused() => refused.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };
    let mut took = Vec::new();
    for i in 0..20 {
        let t = web.reload().await.with_context(|| format!("reload {i}"))?;
        took.push(t);
    }
    stop.store(true, Ordering::Relaxed);
    let errors = poller.await?;
    let (ok, refused, failed, not_ok) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        not_ok.load(Ordering::Relaxed),
    );
    eprintln!(
        "20 reloads: {ok} healthy answers, {refused} refused, {failed} failed, {not_ok} not 200; reload times {took:?}"
    );
    assert_eq!(refused, 0, "connections were refused during reloads");
    assert_eq!(failed + not_ok, 0, "requests failed during reloads: {errors:?}");
    assert!(ok > 20, "the poller hardly ran: {ok}");
    assert_eq!(a.pid(), daemon_pid, "the daemon must not be touched");
    // A login link is logged at the first start only, not at each reload.
    assert_eq!(
        web.log().matches("sign in from a browser").count(),
        1,
        "{}",
        web.log_tail()
    );
    Ok(())
}

/// Reads /ws events, following reloads by reconnecting with `since`, and checks each `seq` is
/// the one after the last.
struct Follower {
    ws: WsClient,
    last: u64,
    instance: String,
    reconnects: u32,
}

impl Follower {
    async fn start(web: &Web) -> anyhow::Result<Self> {
        let mut ws = web.ws("/ws").await?;
        let snap = ws.recv_json(IO_TIMEOUT).await?;
        if snap["type"] != "snapshot" {
            bail!("first message is not a snapshot: {snap}");
        }
        let last = snap["seq"].as_u64().context("snapshot without seq")?;
        let instance = snap["instance"]
            .as_str()
            .context("snapshot without instance")?
            .to_owned();
        Ok(Self {
            ws,
            last,
            instance,
            reconnects: 0,
        })
    }

    /// Handle one message; reconnects on a 1012 close.
    async fn step(&mut self, web: &Web) -> anyhow::Result<()> {
        match self.ws.recv_within(IO_TIMEOUT).await? {
            WsMsg::Text(t) => {
                let v: Value = serde_json::from_str(&t)?;
                match v["type"].as_str() {
                    Some("snapshot" | "resync") => bail!("the stream was resynced, not resumed: {v}"),
                    Some("pong" | "transport:status") => {}
                    _ => {
                        let seq = v["seq"].as_u64().with_context(|| format!("event without seq: {v}"))?;
                        if seq != self.last + 1 {
                            bail!("gap or repeat: got seq {seq} after {}", self.last);
                        }
                        self.last = seq;
                    }
                }
            }
            WsMsg::Close(code) => {
                if code != Some(1012) {
                    bail!("closed with {code:?}, expected 1012 (service restart)");
                }
                let path = format!("/ws?since={}&instance={}", self.last, self.instance);
                // The listening socket never closes, so the first attempt must get through.
                self.ws = web.ws(&path).await.context("reconnecting after the reload")?;
                self.reconnects += 1;
            }
            WsMsg::Ping => {}
            WsMsg::Binary(_) => bail!("unexpected binary message"),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_resumes_gapless_across_reloads_while_peers_churn() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("gap-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("gap-b")).await?;
    let web = Web::spawn(WebOpts::new("gap", a.socket())).await?;
    let mut f = Follower::start(&web).await?;

    // Peers connect and disconnect the whole time, reloads or not.
    let stop = Arc::new(AtomicBool::new(false));
    let target = b.tcp_addr().await?;
    let churn = spawn_churn(
        a.socket().to_owned(),
        target,
        b.peer_id().to_owned(),
        stop.clone(),
        Duration::ZERO,
    );
    // Fails the test with the churn's own error if it stopped early.
    let check_churn = |churn: &tokio::task::JoinHandle<anyhow::Result<u32>>| {
        if churn.is_finished() {
            bail!("the connect/disconnect churn stopped early")
        } else {
            Ok(())
        }
    };

    for _ in 0..3 {
        // Let some events through, then reload while they keep coming.
        let target = f.last + 4;
        while f.last < target {
            check_churn(&churn)?;
            f.step(&web).await?;
        }
        let reloaded = tokio::spawn({
            let pid = web.pid().context("web not running")?;
            async move { nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2) }
        });
        reloaded.await??;
        let before = f.reconnects;
        while f.reconnects == before {
            check_churn(&churn)?;
            f.step(&web).await?;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = churn.await??;
    let head = a.status().await?.event_head;
    while f.last < head {
        f.step(&web).await?;
    }
    eprintln!(
        "followed {rounds} connect/disconnect rounds through {} reloads up to seq {head}",
        f.reconnects
    );
    assert_eq!(f.reconnects, 3);
    assert_eq!(f.last, head);
    Ok(())
}
