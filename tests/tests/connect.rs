//! Two and three daemons connect by explicit dial, through firmactl and through the API,
//! over TCP and QUIC; firmactl's status/peers/peer JSON shapes; exit 3 without a daemon.

use anyhow::{Context, ensure};
use firma_ipc::types::PeerFilter;
use firma_tests::harness::{CONNECT_TIMEOUT, spawn_many};
use firma_tests::{Daemon, DaemonOpts};
use serde_json::Value;

fn peer_ids(v: &Value) -> Vec<(String, bool)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["peer_id"].as_str().unwrap_or_default().to_owned(),
                p["connected"] == Value::Bool(true),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_connect_via_cli() -> anyhow::Result<()> {
    let ds = spawn_many("cli", 2).await?;
    let (a, b) = (&ds[0], &ds[1]);

    let st = a.cli(&["--json", "status"]).await?.ok()?.json()?;
    ensure!(
        st["peer_id"] == a.peer_id(),
        "status --json peer_id {} != {}",
        st["peer_id"],
        a.peer_id()
    );
    let addrs = st["listen_addrs"]
        .as_array()
        .context("status --json has no listen_addrs list")?;
    ensure!(
        addrs.iter().any(|x| x.as_str().is_some_and(|s| s.contains("/p2p/"))),
        "listen_addrs lack /p2p/: {st}"
    );

    let target = b.tcp_addr().await?;
    a.cli(&["--json", "connect", &target]).await?.ok()?;
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;

    let peers = a.cli(&["--json", "peers"]).await?.ok()?.json()?;
    ensure!(
        peer_ids(&peers).contains(&(b.peer_id().to_owned(), true)),
        "peers --json lacks connected b: {peers}"
    );
    let peer = a.cli(&["--json", "peer", b.peer_id()]).await?.ok()?.json()?;
    ensure!(
        peer["peer_id"] == b.peer_id() && peer["connected"] == true,
        "peer --json: {peer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_connect_via_api() -> anyhow::Result<()> {
    let ds = spawn_many("tri", 3).await?;
    // A ring: every daemon dials one other, so every one also accepts one.
    ds[0].connect_to(&ds[1]).await?;
    ds[1].connect_to(&ds[2]).await?;
    ds[2].connect_to(&ds[0]).await?;
    for d in &ds {
        let connected = d.peers(PeerFilter::Connected).await?;
        let mut ids: Vec<&str> = connected.iter().map(|p| p.peer_id.as_str()).collect();
        ids.sort_unstable();
        let mut want: Vec<&str> = ds
            .iter()
            .filter(|o| o.peer_id() != d.peer_id())
            .map(|o| o.peer_id())
            .collect();
        want.sort_unstable();
        ensure!(ids == want, "`{}` is connected to {ids:?}, expected {want:?}", d.name());
        let st = d.status().await?;
        ensure!(
            st.connected_peers == 2,
            "`{}` status.connected_peers = {}",
            d.name(),
            st.connected_peers
        );
    }
    // Dialling an already connected peer is not an error and dials nothing.
    let again = ds[0].connect(&ds[1].tcp_addr().await?).await?;
    ensure!(again.already_connected, "second connect to a connected peer: {again:?}");
    // A known peer id alone is a valid target too.
    let by_id = ds[0].connect(ds[1].peer_id()).await?;
    ensure!(
        by_id.peer_id == ds[1].peer_id(),
        "connect by peer id reached {}",
        by_id.peer_id
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_connect_over_quic() -> anyhow::Result<()> {
    let opts = |n: &str| DaemonOpts {
        quic: true,
        ..DaemonOpts::named(n)
    };
    let (a, b) = tokio::try_join!(Daemon::spawn(opts("quic-a")), Daemon::spawn(opts("quic-b")))?;
    let target = b.listen_addr("/quic-v1").await?;
    let out = a.connect(&target).await?;
    ensure!(
        out.addr.contains("/quic-v1"),
        "connected over {} instead of QUIC",
        out.addr
    );
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nobody_fails_cleanly() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("nodial")).await?;
    // A port nobody listens on: bind one, learn its number, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let target = format!("/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWR1uNGhJ9ZR4iF83j5HRLru7c2VuguuKBMZEhX18feU7S");
    ensure!(a.connect(&target).await.is_err(), "connect to a closed port succeeded");
    let bad = a.cli(&["--json", "connect", "not-a-multiaddr"]).await?;
    ensure!(bad.code != 0, "firmactl connect with garbage exited 0: {bad:?}");
    ensure!(a.status().await.is_ok(), "daemon stopped answering after failed dials");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmactl_exits_3_without_daemon() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("nothing.sock");
    let socket = socket.to_string_lossy();
    let out = firma_tests::cli::run_cli(&["--socket", &socket, "--json", "status"]).await?;
    ensure!(out.code == 3, "expected exit 3, got {}: {out:?}", out.code);
    ensure!(
        out.stderr.contains(&*socket),
        "the error does not name the socket: {}",
        out.stderr
    );
    Ok(())
}
