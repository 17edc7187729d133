//! bench: measures the daemon from outside, as its clients see it, and prints each figure next to
//! a baseline that shows what the figure could at best be on this machine.
//!
//! Usage: bench daemon [--calls N] [--throughput-calls N] [--peers N] [--restarts N]
//! (build the release daemon first: `cargo build --release -p firma-daemon`, then
//! `cargo run --release -p firma-tests --bin bench -- daemon`).
//!
//! 1. Control RPC round trip (`status`) p50/p99, against a raw Unix-socket ping-pong in this
//!    process carrying the same number of bytes each way: the ratio is the price of tarpc,
//!    MessagePack and the daemon's work.
//! 2. RPC throughput with 32 calls in flight on one connection, against the same raw ping-pong
//!    run by 32 concurrent connections.
//! 3. Restart to all peers reconnected (20 peer daemons), against restart to ready (the socket
//!    answers): the ratio shows what redialling adds to the bare restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use firma_ipc::ControlRequest;
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::types::PeerFilter;
use firma_tests::harness::flatten;
use firma_tests::{Daemon, DaemonOpts, wait_for};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Concurrency of the throughput measurement, as the brief of this bench fixes it.
const IN_FLIGHT: usize = 32;

struct Args {
    calls: usize,
    throughput_calls: usize,
    peers: usize,
    restarts: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("daemon") => {}
        _ => bail!("usage: bench daemon [--calls N] [--throughput-calls N] [--peers N] [--restarts N]"),
    }
    let mut a = Args {
        calls: 5_000,
        throughput_calls: 50_000,
        peers: 20,
        restarts: 3,
    };
    while let Some(flag) = args.next() {
        let v: usize = args.next().with_context(|| format!("{flag} needs a number"))?.parse()?;
        match flag.as_str() {
            "--calls" => a.calls = v.max(100),
            "--throughput-calls" => a.throughput_calls = v.max(IN_FLIGHT),
            "--peers" => a.peers = v.max(1),
            "--restarts" => a.restarts = v.max(1),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A server that answers each length-prefixed request of `req` bytes with `resp` bytes: the
/// cheapest possible request/response over a Unix socket, the floor under the RPC figures.
async fn raw_server(path: &Path, resp_len: usize) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let resp = framed(resp_len);
                let mut len = [0u8; 4];
                let mut buf = Vec::new();
                loop {
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    buf.resize(u32::from_be_bytes(len) as usize, 0);
                    if s.read_exact(&mut buf).await.is_err() || s.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    }))
}

fn framed(len: usize) -> Vec<u8> {
    let mut f = (len as u32).to_be_bytes().to_vec();
    f.resize(4 + len, 0xA5);
    f
}

/// One raw request/response on `s`; the response length is read from its prefix.
async fn raw_call(s: &mut UnixStream, req: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<()> {
    s.write_all(req).await?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    s.read_exact(buf).await?;
    Ok(())
}

/// One line of the results table, printed at the end so that progress notes don't split it.
fn row(rows: &mut Vec<String>, name: &str, figure: String, baseline: String, ratio: f64) {
    rows.push(format!("| {name} | {figure} | {baseline} | {ratio:.2}x |"));
}

async fn bench_rpc(a: &Daemon, args: &Args, tmp: &Path, rows: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = a.client().await?;
    let status = flatten(conn.client.status(ctx(CALL_TIMEOUT)).await)?;
    let req_len = rmp_serde::to_vec_named(&ControlRequest::Status {})?.len();
    let resp_len = rmp_serde::to_vec_named(&status)?.len();
    println!(
        "payload: request {req_len} B, response {resp_len} B (MessagePack bodies; the raw baseline sends the same)"
    );

    // Round trip, sequential.
    for _ in 0..200 {
        flatten(conn.client.status(ctx(CALL_TIMEOUT)).await)?;
    }
    let mut rpc = hist()?;
    for _ in 0..args.calls {
        let t = Instant::now();
        flatten(conn.client.status(ctx(CALL_TIMEOUT)).await)?;
        rpc.record(t.elapsed().as_nanos() as u64)?;
    }
    let raw_path = tmp.join("raw.sock");
    let server = raw_server(&raw_path, resp_len).await?;
    let req = framed(req_len);
    let mut s = UnixStream::connect(&raw_path).await?;
    let mut buf = Vec::new();
    for _ in 0..200 {
        raw_call(&mut s, &req, &mut buf).await?;
    }
    let mut raw = hist()?;
    for _ in 0..args.calls {
        let t = Instant::now();
        raw_call(&mut s, &req, &mut buf).await?;
        raw.record(t.elapsed().as_nanos() as u64)?;
    }
    for q in [0.5, 0.99] {
        let (f, b) = (rpc.value_at_quantile(q), raw.value_at_quantile(q));
        row(
            rows,
            &format!(
                "control RPC round trip p{} (`status`, {} calls)",
                (q * 100.0) as u32,
                args.calls
            ),
            format!("{:.1} µs", us(f)),
            format!("{:.1} µs raw Unix-socket ping-pong", us(b)),
            f as f64 / b.max(1) as f64,
        );
    }

    // Throughput: IN_FLIGHT calls outstanding on one multiplexed connection.
    let per_task = args.throughput_calls / IN_FLIGHT;
    let t = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = conn.client.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    flatten(client.status(ctx(CALL_TIMEOUT)).await)?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rpc_rate = (per_task * IN_FLIGHT) as f64 / t.elapsed().as_secs_f64();

    let req = Arc::new(req);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut s = UnixStream::connect(&raw_path).await?;
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            for _ in 0..per_task {
                raw_call(&mut s, &req, &mut buf).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let raw_rate = (per_task * IN_FLIGHT) as f64 / t.elapsed().as_secs_f64();
    server.abort();
    row(
        rows,
        &format!("control RPC throughput, {IN_FLIGHT} in flight on one connection"),
        format!("{rpc_rate:.0} calls/s"),
        format!("{raw_rate:.0} calls/s raw ping-pong, {IN_FLIGHT} connections"),
        raw_rate / rpc_rate.max(1.0),
    );
    Ok(())
}

async fn all_connected(a: &Daemon, want: usize) -> bool {
    a.peers(PeerFilter::Connected)
        .await
        .is_ok_and(|p| p.iter().filter(|p| p.connected).count() >= want)
}

async fn bench_restart(args: &Args, rows: &mut Vec<String>) -> anyhow::Result<()> {
    let t = Instant::now();
    let peers =
        futures::future::try_join_all((0..args.peers).map(|i| Daemon::spawn(quiet(&format!("bench-peer-{i}")))))
            .await?;
    println!("started {} peer daemons in {:.2?}", args.peers, t.elapsed());
    let mut a = Daemon::spawn(quiet("bench-main")).await?;
    let t = Instant::now();
    let addrs = futures::future::try_join_all(peers.iter().map(|p| p.tcp_addr())).await?;
    futures::future::try_join_all(addrs.iter().map(|addr| a.connect(addr))).await?;
    wait_for(Duration::from_secs(30), "all peers connected", || {
        all_connected(&a, args.peers)
    })
    .await?;
    println!(
        "fresh daemon: {} explicit dials, all connected in {:.2?}",
        args.peers,
        t.elapsed()
    );

    let mut ready = Vec::new();
    let mut connected = Vec::new();
    for _ in 0..args.restarts {
        a.stop().await?;
        let t = Instant::now();
        a.start().await?;
        ready.push(t.elapsed());
        let what = format!("all {} peers reconnected after restart", args.peers);
        wait_for(Duration::from_secs(60), &what, || all_connected(&a, args.peers)).await?;
        connected.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!("restart → ready: {ready:.2?}; restart → all connected: {connected:.2?}");
    let (r, c) = (median(&mut ready), median(&mut connected));
    row(
        rows,
        &format!(
            "restart → all {} peers Connected (median of {})",
            args.peers, args.restarts
        ),
        format!("{:.0} ms", c.as_secs_f64() * 1000.0),
        format!("{:.0} ms restart → socket ready", r.as_secs_f64() * 1000.0),
        c.as_secs_f64() / r.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn quiet(name: &str) -> DaemonOpts {
    DaemonOpts {
        echo_log_on_drop: false,
        ..DaemonOpts::named(name)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!("machine: {}", firma_tests::machine::describe());
    println!("daemon binary: {}", firma_tests::bins::daemon()?.display());
    let tmp = tempfile::Builder::new().prefix("firma-bench-").tempdir()?;
    let a = Daemon::spawn(quiet("bench-rpc")).await?;
    let mut rows = Vec::new();
    bench_rpc(&a, &args, tmp.path(), &mut rows).await?;
    drop(a);
    bench_restart(&args, &mut rows).await?;
    println!();
    println!("| measurement | figure | baseline | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("(latency and restart ratios are figure/baseline; the throughput ratio is baseline/figure)");
    Ok(())
}
