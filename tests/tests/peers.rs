//! The shapes of what the daemon says about peers: peers/peer, pin, ban, history, topology,
//! identify results and error codes, on three real daemons.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::ErrorCode;
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::types::{HistoryQuery, PeerFilter};
use firma_tests::harness::{CONNECT_TIMEOUT, flatten, spawn_many};
use firma_tests::wait_for;

/// A valid PeerId that no daemon in these tests has.
const STRANGER: &str = "12D3KooWR1uNGhJ9ZR4iF83j5HRLru7c2VuguuKBMZEhX18feU7S";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_info_pin_ban_history_topology() -> anyhow::Result<()> {
    let ds = spawn_many("shape", 3).await?;
    let (a, b, c) = (&ds[0], &ds[1], &ds[2]);
    a.connect_to(b).await?;
    let c_addr = c.tcp_addr().await?;
    a.cli(&["--json", "connect", &c_addr]).await?.ok()?;
    a.wait_connected(c.peer_id(), CONNECT_TIMEOUT).await?;

    // Identify fills in agent and protocols shortly after the connection.
    wait_for(Duration::from_secs(10), "identify info of b at a", || async {
        a.peer(b.peer_id())
            .await
            .is_ok_and(|p| p.agent.is_some() && !p.protocols.is_empty())
    })
    .await?;
    let pb = a.peer(b.peer_id()).await?;
    let agent = pb.agent.clone().unwrap_or_default();
    ensure!(agent.starts_with("firma-transportd/"), "agent of b: {agent:?}");
    for proto in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"] {
        ensure!(
            pb.protocols.iter().any(|p| p == proto),
            "b's protocols lack {proto}: {:?}",
            pb.protocols
        );
    }
    ensure!(pb.connected && pb.connect_count >= 1, "b: {pb:?}");
    ensure!(!pb.addrs.is_empty(), "a knows no address of b: {pb:?}");
    ensure!(
        pb.first_seen_ms <= pb.last_seen_ms && pb.first_seen_ms > 0,
        "seen times of b: {pb:?}"
    );
    ensure!(!pb.pinned && !pb.banned, "b starts pinned or banned: {pb:?}");

    let known = a.peers(PeerFilter::Known).await?;
    for o in [b, c] {
        ensure!(
            known.iter().any(|p| p.peer_id == o.peer_id()),
            "known peers lack `{}`",
            o.name()
        );
    }

    // Errors are coded: a malformed id is Invalid, an unknown one NotFound.
    let conn = a.client().await?;
    let e = conn
        .client
        .peer(ctx(CALL_TIMEOUT), "not-a-peer-id".into())
        .await?
        .err()
        .context("bad id accepted")?;
    ensure!(e.code == ErrorCode::Invalid, "malformed peer id gave {e:?}");
    let e = conn
        .client
        .peer(ctx(CALL_TIMEOUT), STRANGER.into())
        .await?
        .err()
        .context("stranger found")?;
    ensure!(e.code == ErrorCode::NotFound, "unknown peer id gave {e:?}");

    // Pin.
    let pinned = flatten(conn.client.pin(ctx(CALL_TIMEOUT), b.peer_id().into(), true).await)?;
    ensure!(
        pinned.pinned && pinned.peer_id == b.peer_id(),
        "pin answered {pinned:?}"
    );
    let list = a.peers(PeerFilter::Pinned).await?;
    ensure!(
        list.len() == 1 && list[0].peer_id == b.peer_id(),
        "pinned list: {list:?}"
    );
    ensure!(a.status().await?.pinned_peers == 1, "status.pinned_peers after one pin");
    let unpinned = flatten(conn.client.pin(ctx(CALL_TIMEOUT), b.peer_id().into(), false).await)?;
    ensure!(!unpinned.pinned, "unpin answered {unpinned:?}");
    ensure!(
        a.peers(PeerFilter::Pinned).await?.is_empty(),
        "pinned list not empty after unpin"
    );

    // Ban: the banned peer is dropped, and dialling it is refused until unbanned.
    let banned = flatten(conn.client.ban(ctx(CALL_TIMEOUT), c.peer_id().into(), true).await)?;
    ensure!(banned.banned, "ban answered {banned:?}");
    wait_for(Duration::from_secs(10), "a to drop banned c", || async {
        !a.is_connected_to(c.peer_id()).await
    })
    .await?;
    ensure!(a.connect(&c_addr).await.is_err(), "a dialled banned c");
    ensure!(a.peer(c.peer_id()).await?.banned, "ban not kept");
    flatten(conn.client.ban(ctx(CALL_TIMEOUT), c.peer_id().into(), false).await)?;
    a.connect(&c_addr).await?;
    a.wait_connected(c.peer_id(), CONNECT_TIMEOUT).await?;

    // History: newest first, only the peer asked for, the live connection still open.
    let q = HistoryQuery {
        peer_id: Some(b.peer_id().into()),
        limit: 10,
    };
    let hist = flatten(conn.client.history(ctx(CALL_TIMEOUT), q).await)?;
    ensure!(!hist.is_empty(), "no history for b");
    ensure!(
        hist.iter().all(|r| r.peer_id == b.peer_id()),
        "history for b holds others: {hist:?}"
    );
    ensure!(
        hist[0].closed_ms.is_none(),
        "newest record of b is closed although connected: {hist:?}"
    );
    ensure!(
        hist.windows(2).all(|w| w[0].opened_ms >= w[1].opened_ms),
        "history not newest first: {hist:?}"
    );
    let hist_c = flatten(
        conn.client
            .history(
                ctx(CALL_TIMEOUT),
                HistoryQuery {
                    peer_id: Some(c.peer_id().into()),
                    limit: 10,
                },
            )
            .await,
    )?;
    ensure!(
        hist_c.iter().any(|r| r.closed_ms.is_some()),
        "the ban-closed connection to c is not in history: {hist_c:?}"
    );
    let one = flatten(
        conn.client
            .history(
                ctx(CALL_TIMEOUT),
                HistoryQuery {
                    peer_id: None,
                    limit: 1,
                },
            )
            .await,
    )?;
    ensure!(one.len() == 1, "history limit 1 gave {} records", one.len());

    // Topology: a itself (local), b and c, and an edge from a to each.
    let topo = flatten(conn.client.topology(ctx(CALL_TIMEOUT)).await)?;
    let local: Vec<_> = topo.nodes.iter().filter(|n| n.local).collect();
    ensure!(
        local.len() == 1 && local[0].peer_id == a.peer_id(),
        "local nodes: {local:?}"
    );
    for o in [b, c] {
        ensure!(
            topo.nodes.iter().any(|n| n.peer_id == o.peer_id() && n.connected),
            "topology lacks `{}`",
            o.name()
        );
        let edge = topo
            .edges
            .iter()
            .any(|e| (e.from == a.peer_id() && e.to == o.peer_id()) || (e.to == a.peer_id() && e.from == o.peer_id()));
        ensure!(edge, "topology has no edge a-`{}`: {:?}", o.name(), topo.edges);
    }

    // The audit log saw the operator's state changes.
    let audit = flatten(conn.client.audit(ctx(CALL_TIMEOUT), 100).await)?;
    for action in ["pin", "ban"] {
        ensure!(
            audit.iter().any(|r| r.action == action && r.result == "ok"),
            "audit lacks {action}: {audit:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_connections_in_order() -> anyhow::Result<()> {
    let ds = spawn_many("ev", 2).await?;
    let (a, b) = (&ds[0], &ds[1]);
    let head = a.status().await?.event_head;
    a.connect_to(b).await?;
    let conn = a.client().await?;
    let batch = flatten(
        conn.client
            .events(ctx(Duration::from_secs(15)), head, 1024, 5_000)
            .await,
    )?;
    ensure!(!batch.resync, "resync asked although head {head} is current");
    ensure!(
        batch.events.first().map(|e| e.seq) == Some(head + 1),
        "first event is not head+1: {batch:?}"
    );
    ensure!(
        batch.events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "seq gaps: {batch:?}"
    );
    let connected = batch
        .events
        .iter()
        .any(|e| matches!(&e.event, firma_ipc::event::Event::PeerConnected { peer_id, .. } if peer_id == b.peer_id()));
    ensure!(connected, "no peer_connected for b after seq {head}: {batch:?}");
    // Asking from the future (as after a daemon restart) must say resync.
    let future = flatten(
        conn.client
            .events(ctx(Duration::from_secs(15)), batch.head + 1000, 10, 0)
            .await,
    )?;
    ensure!(
        future.resync,
        "events after a future seq did not ask for resync: {future:?}"
    );
    Ok(())
}
