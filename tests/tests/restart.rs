//! The daemon survives its own restarts: after SIGTERM it is connected to its peer again within
//! 2 s with discovery off (it redials what it remembers), and after SIGKILL its store is intact.

use std::time::{Duration, Instant};

use anyhow::ensure;
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::types::{PeerFilter, StoreHealth};
use firma_tests::harness::{CONNECT_TIMEOUT, flatten, spawn_many};

/// The promise: restarted with discovery off, connected to its peer again within this.
const RECONNECT_BUDGET: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_reconnects_within_2s() -> anyhow::Result<()> {
    let mut ds = spawn_many("term", 2).await?;
    ds[0].connect_to(&ds[1]).await?;

    // The dialler restarts: it must redial the listener it remembers.
    ds[0].stop().await?;
    let t0 = Instant::now();
    ds[0].start().await?;
    let ready = t0.elapsed();
    let (a, b) = (&ds[0], &ds[1]);
    a.wait_connected(b.peer_id(), Duration::from_secs(10)).await?;
    let took = t0.elapsed();
    println!("dialler restart: ready after {ready:?}, reconnected after {took:?}");
    ensure!(
        took <= RECONNECT_BUDGET,
        "dialler reconnected after {took:?} (ready after {ready:?}), budget {RECONNECT_BUDGET:?}"
    );
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;

    // The listener restarts on a new port: the other side cannot reach it at the old one, so the
    // restarted daemon itself must dial out to the peer it was connected to.
    ds[1].stop().await?;
    let t0 = Instant::now();
    ds[1].start().await?;
    let (a, b) = (&ds[0], &ds[1]);
    b.wait_connected(a.peer_id(), Duration::from_secs(10)).await?;
    let took = t0.elapsed();
    println!("listener restart: reconnected after {took:?}");
    ensure!(
        took <= RECONNECT_BUDGET,
        "listener reconnected after {took:?}, budget {RECONNECT_BUDGET:?}"
    );
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_keeps_store() -> anyhow::Result<()> {
    let mut ds = spawn_many("kill", 3).await?;
    ds[0].connect_to(&ds[1]).await?;
    ds[0].connect_to(&ds[2]).await?;
    let (b_id, c_id) = (ds[1].peer_id().to_owned(), ds[2].peer_id().to_owned());
    let a_id = ds[0].peer_id().to_owned();
    {
        let conn = ds[0].client().await?;
        flatten(conn.client.pin(ctx(CALL_TIMEOUT), b_id.clone(), true).await)?;
    }
    let key = ds[0].state_dir().join("identity.key");
    let key_before = std::fs::read(&key)?;

    ds[0].kill9().await?;
    // A killed daemon leaves its socket file; the next start must probe it and take over.
    let st = ds[0].start().await?;
    ensure!(
        st.peer_id == a_id,
        "peer id changed across SIGKILL: {a_id} -> {}",
        st.peer_id
    );
    ensure!(
        std::fs::read(&key)? == key_before,
        "identity.key changed across SIGKILL"
    );
    ensure!(
        st.store.health == StoreHealth::Healthy,
        "store after SIGKILL: {:?}",
        st.store
    );
    ensure!(st.pinned_peers == 1, "pinned_peers after SIGKILL: {}", st.pinned_peers);

    let a = &ds[0];
    let known = a.peers(PeerFilter::Known).await?;
    for id in [&b_id, &c_id] {
        ensure!(
            known.iter().any(|p| &p.peer_id == id),
            "peer {id} forgotten after SIGKILL: {known:?}"
        );
    }
    let pb = a.peer(&b_id).await?;
    ensure!(pb.pinned, "b no longer pinned after SIGKILL: {pb:?}");
    ensure!(!pb.addrs.is_empty(), "b's addresses forgotten after SIGKILL: {pb:?}");
    ensure!(!a.peer(&c_id).await?.pinned, "c became pinned");
    // The pinned peer is redialled.
    a.wait_connected(&b_id, Duration::from_secs(10)).await?;
    Ok(())
}
