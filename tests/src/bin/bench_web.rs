//! bench_web: firma-web measured from outside, as its clients see it.
//!
//! Usage: bench_web [--reloads N] [--clients N,N,..] [--churn-secs S] [--peers N] [--pace-ms MS]
//!                  [--peer-nice N]
//! (build release binaries first: `cargo build --release -p firma-daemon -p firma-web`, then
//! `cargo run --release -p firma-tests --bin bench_web`).
//!
//! 1. Reload downtime: SIGUSR2 to the first `/health` answer 200 from the new instance, p50/p99
//!    over N reloads, while a second client polls `/health` on fresh connections the whole time
//!    and counts refused connections and failed requests.
//! 2. Event fan-out: N WebSocket clients on `/ws` while peer daemons connect to and disconnect
//!    from the followed daemon; events per second delivered (all clients together), p50/p99
//!    latency from the daemon's event timestamp (`at_ms`, ms resolution) to a client reading it,
//!    resyncs (clients that lagged), and the web process's RSS growth per connected client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use firma_tests::web::{IO_TIMEOUT, Web, WebOpts, WsMsg, http, spawn_churn};
use firma_tests::{Daemon, DaemonOpts};
use hdrhistogram::Histogram;
use nix::sys::signal::Signal;
use tokio::sync::watch;

struct Args {
    reloads: usize,
    clients: Vec<usize>,
    churn: Duration,
    peers: usize,
    /// Pause between a peer's connect/disconnect rounds; zero churns as fast as the daemon goes.
    pace: Duration,
    /// Niceness of the churning peer daemons.
    peer_nice: i32,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        reloads: 20,
        clients: vec![100, 1000],
        churn: Duration::from_secs(10),
        peers: 4,
        pace: Duration::ZERO,
        peer_nice: 19,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reloads" => a.reloads = v.parse::<usize>()?.max(1),
            "--clients" => a.clients = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--churn-secs" => a.churn = Duration::from_secs(v.parse::<u64>()?.max(1)),
            "--peers" => a.peers = v.parse::<usize>()?.max(1),
            "--pace-ms" => a.pace = Duration::from_millis(v.parse()?),
            "--peer-nice" => a.peer_nice = v.parse()?,
            _ => bail!(
                "usage: bench_web [--reloads N] [--clients N,N] [--churn-secs S] [--peers N] [--pace-ms MS] [--peer-nice N]"
            ),
        }
    }
    Ok(a)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The unsigned number right after `key` in `text`, e.g. `"seq":` in an event.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: nix::unistd::Pid) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
}

async fn bench_reloads(daemon: &Daemon, reloads: usize) -> anyhow::Result<()> {
    let web = Web::spawn(WebOpts::new("bench-reload", daemon.socket())).await?;
    let addr = web.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let poller = {
        let (stop, counts) = (stop.clone(), counts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = match http(addr, "GET", "/health", &[], None).await {
                    Ok(r) if r.status == 200 => 0,
                    Err(e) if e.is_refused() => 1,
                    _ => 2,
                };
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..reloads {
        let old = web.instance_id().await.context("no instance_id before a reload")?;
        let t0 = Instant::now();
        web.signal(Signal::SIGUSR2)?;
        loop {
            // The instance is named in /api/info only (/health is upstream's public shape).
            if let Ok(r) = http(addr, "GET", "/api/info", &web.auth(), None).await
                && r.status == 200
                && r.json()
                    .ok()
                    .and_then(|v| v["instance_id"].as_str().map(str::to_owned))
                    .is_some_and(|id| id != old)
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("reload {i} did not come back within 15 s:\n{}", web.log_tail());
            }
        }
        hist.record(t0.elapsed().as_micros() as u64)?;
    }
    stop.store(true, Ordering::Relaxed);
    poller.await?;
    let [ok, refused, failed] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "reload downtime (SIGUSR2 -> first healthy answer of the new instance), {reloads} reloads: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; background /health poller: {ok} ok, {refused} refused, {failed} failed",
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max())
    );
    Ok(())
}

/// What one WebSocket client saw.
struct ClientReport {
    latencies_ms: Histogram<u64>,
    events: u64,
    resyncs: u64,
}

async fn bench_fanout(
    daemon: &Daemon,
    peers: &[Daemon],
    n: usize,
    churn: Duration,
    pace: Duration,
) -> anyhow::Result<()> {
    let web = Web::spawn(WebOpts::new(&format!("bench-fanout-{n}"), daemon.socket())).await?;
    let pid = web.pid().context("web not running")?;
    let rss_before = rss_kib(pid)?;
    // The seq every client must reach before it reports; set when the churn is over.
    let (target_tx, target_rx) = watch::channel(u64::MAX);
    let mut tasks = Vec::with_capacity(n);
    let ready = Arc::new(AtomicU64::new(0));
    for _ in 0..n {
        let mut ws = web.ws("/ws").await?;
        let snap = ws.recv_json(IO_TIMEOUT).await?;
        if snap["type"] != "snapshot" {
            bail!("first message is not a snapshot: {snap}");
        }
        let mut target = target_rx.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            ready.fetch_add(1, Ordering::Relaxed);
            let mut r = ClientReport {
                latencies_ms: Histogram::<u64>::new(3)?,
                events: 0,
                resyncs: 0,
            };
            let mut last = snap["seq"].as_u64().unwrap_or(0);
            loop {
                if last >= *target.borrow() {
                    return anyhow::Ok(r);
                }
                let msg = tokio::select! {
                    m = ws.recv() => m?,
                    _ = target.changed() => continue,
                };
                let t = match msg {
                    WsMsg::Text(t) => t,
                    WsMsg::Ping => continue,
                    other => bail!("unexpected {other:?}"),
                };
                // Events are read the cheap way (two numbers out of the text), so that a thousand
                // clients in this process measure the server rather than this process's parsing.
                if let (Some(seq), Some(at)) = (number_after(&t, "\"seq\":"), number_after(&t, "\"at_ms\":")) {
                    r.latencies_ms.record(now_ms().saturating_sub(at))?;
                    r.events += 1;
                    last = seq;
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&t)?;
                match v["type"].as_str() {
                    Some("resync") => r.resyncs += 1,
                    Some("snapshot") => last = v["seq"].as_u64().unwrap_or(last),
                    _ => {}
                }
            }
        }));
    }
    let rss_after = rss_kib(pid)?;
    let head_before = daemon.status().await?.event_head;

    // Churn: each peer connects and disconnects as fast as the daemon completes it (or paced).
    let stop = Arc::new(AtomicBool::new(false));
    let mut churners = Vec::new();
    for p in peers {
        let target = p.tcp_addr().await?;
        churners.push(spawn_churn(
            daemon.socket().to_owned(),
            target,
            p.peer_id().to_owned(),
            stop.clone(),
            pace,
        ));
    }
    let t0 = Instant::now();
    tokio::time::sleep(churn).await;
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.await??;
    }
    let head_after = daemon.status().await?.event_head;
    target_tx.send(head_after)?;
    let mut all = Histogram::<u64>::new(3)?;
    let (mut events, mut resyncs) = (0u64, 0u64);
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .context("a client never caught up")???;
        all.add(&r.latencies_ms)?;
        events += r.events;
        resyncs += r.resyncs;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let daemon_events = head_after - head_before;
    let paced = if pace.is_zero() {
        "as fast as it goes".to_owned()
    } else {
        format!("paced {pace:?}")
    };
    println!(
        "fan-out to {n} /ws clients (churn {paced}): {daemon_events} daemon events in {elapsed:.1} s ({:.0}/s), {events} delivered \
         ({:.0}/s); latency daemon event -> client p50 {} ms, p99 {} ms, max {} ms; {resyncs} resyncs; \
         web RSS {} KiB -> {} KiB ({:.1} KiB per client)",
        daemon_events as f64 / elapsed,
        events as f64 / elapsed,
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.max(),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before) as f64 / n as f64,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!("web binary: {}", firma_tests::web::web_bin()?.display());
    let daemon = Daemon::spawn(DaemonOpts::named("bench-web")).await?;
    bench_reloads(&daemon, args.reloads).await?;
    // The churning peers stand in for other machines: on this one they only get the CPU the
    // followed daemon, firma-web and the clients leave, instead of competing with what is measured.
    let peers = futures::future::try_join_all((0..args.peers).map(|i| {
        let mut o = DaemonOpts::named(&format!("bench-web-peer{i}"));
        o.wrapper = vec!["nice".to_owned(), "-n".to_owned(), args.peer_nice.to_string()];
        Daemon::spawn(o)
    }))
    .await?;
    for &n in &args.clients {
        bench_fanout(&daemon, &peers, n, args.churn, args.pace).await?;
    }
    Ok(())
}
