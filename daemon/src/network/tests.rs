//! Real swarms on 127.0.0.1, port 0, mDNS off: two or three networks in one process talking
//! over TCP (and QUIC). Every wait has a deadline; no fixed sleeps.

use std::time::Duration;

use firma_ipc::ErrorCode;
use firma_ipc::types::Direction;
use libp2p::identity::Keypair;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{NetworkConfig, RetryConfig};

const WAIT: Duration = Duration::from_secs(15);

fn test_config(listen: &[&str]) -> NetworkConfig {
    NetworkConfig {
        listen: listen.iter().map(|s| (*s).to_owned()).collect(),
        mdns: false,
        dht: false,
        bootstrap: Vec::new(),
        retry: RetryConfig {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 0,
        },
        ping_interval: Duration::from_secs(1),
        ..NetworkConfig::default()
    }
}

struct Node {
    net: Network,
    token: CancellationToken,
    key: Keypair,
}

impl Node {
    async fn start(key: Keypair, cfg: &NetworkConfig) -> Node {
        let token = CancellationToken::new();
        let net = spawn(key.clone(), cfg, false, Vec::new(), Vec::new(), token.clone(), &[])
            .await
            .unwrap_or_else(|e| panic!("network did not start: {e:#}"));
        Node { net, token, key }
    }

    async fn tcp(listen: &str) -> Node {
        Node::start(Keypair::generate_ed25519(), &test_config(&[listen])).await
    }

    fn id(&self) -> String {
        self.net.handle.local_peer_id()
    }

    /// The first listen address containing `proto` (e.g. "/tcp/"), with /p2p.
    fn addr(&self, proto: &str) -> String {
        self.net
            .listen_addrs
            .iter()
            .find(|a| a.contains(proto))
            .cloned()
            .unwrap_or_else(|| panic!("no {proto} listen address in {:?}", self.net.listen_addrs))
    }

    /// Waits for the first event matching `pred`, skipping others.
    async fn expect(&mut self, what: &str, pred: impl Fn(&NetEvent) -> bool) -> NetEvent {
        let events = &mut self.net.events;
        let found = tokio::time::timeout(WAIT, async {
            while let Some(ev) = events.recv().await {
                if pred(&ev) {
                    return Some(ev);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }

    /// Cancels and joins the task; returns the peers it reported connected.
    async fn stop(self) -> (Vec<String>, tokio::sync::mpsc::Receiver<NetEvent>, Keypair) {
        self.token.cancel();
        let peers = tokio::time::timeout(WAIT, self.net.task)
            .await
            .unwrap_or_else(|_| panic!("network task did not stop within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("network task failed: {e}"));
        (peers, self.net.events, self.key)
    }
}

fn is_connected_to(peer: &str) -> impl Fn(&NetEvent) -> bool + '_ {
    move |e| matches!(e, NetEvent::Connected { peer_id, .. } if peer_id == peer)
}

fn is_disconnected_from(peer: &str) -> impl Fn(&NetEvent) -> bool + '_ {
    move |e| matches!(e, NetEvent::Disconnected { peer_id, .. } if peer_id == peer)
}

#[tokio::test]
async fn two_nodes_connect_identify_ping_and_disconnect() {
    let mut a = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let mut b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let (a_id, b_id) = (a.id(), b.id());
    assert!(a.addr("/tcp/").ends_with(&format!("/p2p/{a_id}")));

    let outcome = a
        .net
        .handle
        .dial(b.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("dial: {e}"));
    assert_eq!(outcome.peer_id, b_id);
    assert!(!outcome.already_connected);

    let ev = a.expect("A connected to B", is_connected_to(&b_id)).await;
    assert!(
        matches!(
            ev,
            NetEvent::Connected {
                direction: Direction::Outbound,
                ..
            }
        ),
        "{ev:?}"
    );
    let ev = b.expect("B connected to A", is_connected_to(&a_id)).await;
    assert!(
        matches!(
            ev,
            NetEvent::Connected {
                direction: Direction::Inbound,
                ..
            }
        ),
        "{ev:?}"
    );

    let agent = format!("firma-transportd/{}", env!("CARGO_PKG_VERSION"));
    for (node, other) in [(&mut a, &b_id), (&mut b, &a_id)] {
        let ev = node
            .expect(
                "Identified",
                |e| matches!(e, NetEvent::Identified { peer_id, .. } if peer_id == other),
            )
            .await;
        let NetEvent::Identified {
            agent: got, protocols, ..
        } = ev
        else {
            unreachable!()
        };
        assert_eq!(got, agent);
        assert!(protocols.iter().any(|p| p == "/ipfs/id/1.0.0"), "{protocols:?}");
        assert!(protocols.iter().any(|p| p == "/ipfs/ping/1.0.0"), "{protocols:?}");
    }
    a.expect(
        "Rtt for B",
        |e| matches!(e, NetEvent::Rtt { peer_id, .. } if *peer_id == b_id),
    )
    .await;

    let connected = a
        .net
        .handle
        .connected()
        .await
        .unwrap_or_else(|e| panic!("connected: {e}"));
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0].peer_id, b_id);
    assert!(connected[0].rtt_us.is_some());

    // Dialling again while connected dials nothing.
    let again = a
        .net
        .handle
        .dial(b_id.clone())
        .await
        .unwrap_or_else(|e| panic!("dial again: {e}"));
    assert!(again.already_connected);

    a.net
        .handle
        .disconnect(b_id.clone())
        .await
        .unwrap_or_else(|e| panic!("disconnect: {e}"));
    a.expect("A disconnected from B", is_disconnected_from(&b_id)).await;
    b.expect("B disconnected from A", is_disconnected_from(&a_id)).await;
    assert!(
        a.net
            .handle
            .connected()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    let err = a.net.handle.disconnect(b_id.clone()).await.err().map(|e| e.code);
    assert_eq!(err, Some(ErrorCode::NotFound));

    // The address book remembered B: a bare peer id is enough now.
    let back = a
        .net
        .handle
        .dial(b_id.clone())
        .await
        .unwrap_or_else(|e| panic!("dial by id: {e}"));
    assert_eq!(back.peer_id, b_id);

    let (peers, _, _) = a.stop().await;
    assert_eq!(peers, vec![b_id]);
    b.stop().await;
}

#[tokio::test]
async fn pinned_peer_is_redialled_after_it_restarts() {
    let mut a = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let (a_id, b_id) = (a.id(), b.id());
    let b_addr = b.addr("/tcp/");
    a.net
        .handle
        .dial(b_addr.clone())
        .await
        .unwrap_or_else(|e| panic!("dial: {e}"));
    a.net
        .handle
        .set_redial(b_id.clone(), true)
        .await
        .unwrap_or_else(|e| panic!("pin: {e}"));
    a.expect("A connected to B", is_connected_to(&b_id)).await;

    let (b_peers, mut b_events, b_key) = b.stop().await;
    assert_eq!(b_peers, vec![a_id.clone()]);
    // Nothing after the token fired may claim A disconnected: the daemon keeps "was connected".
    while let Ok(ev) = b_events.try_recv() {
        assert!(
            !matches!(ev, NetEvent::Disconnected { .. }),
            "Disconnected after shutdown: {ev:?}"
        );
    }
    a.expect("A disconnected from B", is_disconnected_from(&b_id)).await;

    // Same key, same port: A's redials (backoff capped at 400 ms) find it again.
    let listen = b_addr.trim_end_matches(&format!("/p2p/{b_id}")).to_owned();
    let b2 = Node::start(b_key, &test_config(&[&listen])).await;
    assert_eq!(b2.addr("/tcp/"), b_addr);
    let ev = a.expect("A reconnected to B", is_connected_to(&b_id)).await;
    assert!(
        matches!(
            ev,
            NetEvent::Connected {
                direction: Direction::Outbound,
                ..
            }
        ),
        "{ev:?}"
    );

    a.stop().await;
    b2.stop().await;
}

#[tokio::test]
async fn banned_peer_is_disconnected_and_refused() {
    let mut a = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let b_id = b.id();
    a.net
        .handle
        .dial(b.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("dial: {e}"));
    a.expect("A connected to B", is_connected_to(&b_id)).await;

    a.net
        .handle
        .set_banned(b_id.clone(), true)
        .await
        .unwrap_or_else(|e| panic!("ban: {e}"));
    a.expect("A disconnected from banned B", is_disconnected_from(&b_id))
        .await;

    let err = a.net.handle.dial(b.addr("/tcp/")).await.err().map(|e| e.code);
    assert_eq!(err, Some(ErrorCode::Invalid), "dial of a banned peer id");
    // Without /p2p the ban is only known after the handshake: the connection is refused then.
    let bare = b.addr("/tcp/").trim_end_matches(&format!("/p2p/{b_id}")).to_owned();
    let err = a.net.handle.dial(bare.clone()).await.err();
    assert_eq!(err.as_ref().map(|e| e.code), Some(ErrorCode::Unavailable), "{err:?}");
    let err = a.net.handle.set_redial(b_id.clone(), true).await.err().map(|e| e.code);
    assert_eq!(err, Some(ErrorCode::Invalid), "pinning a banned peer");

    a.net
        .handle
        .set_banned(b_id.clone(), false)
        .await
        .unwrap_or_else(|e| panic!("unban: {e}"));
    a.net
        .handle
        .dial(bare)
        .await
        .unwrap_or_else(|e| panic!("dial after unban: {e}"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid() {
    let a = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let h = &a.net.handle;
    for target in ["", "garbage", "/ip4/127.0.0.1/tcp/notaport", "/dns9/x", &a.id()] {
        let err = h.dial(target.to_owned()).await.err().map(|e| e.code);
        assert_eq!(err, Some(ErrorCode::Invalid), "dial {target:?}");
    }
    assert_eq!(
        h.set_banned("nope".into(), true).await.err().map(|e| e.code),
        Some(ErrorCode::Invalid)
    );
    assert_eq!(
        h.set_redial(a.id(), true).await.err().map(|e| e.code),
        Some(ErrorCode::Invalid)
    );
    let other = libp2p::PeerId::random().to_string();
    let err = h
        .add_addresses(other.clone(), vec!["/ip4/1.2.3.4/tcp/x".into()])
        .await
        .err()
        .map(|e| e.code);
    assert_eq!(err, Some(ErrorCode::Invalid));
    // Valid, but nothing is known about it: NotFound, and nothing was dialled outside.
    assert_eq!(h.dial(other).await.err().map(|e| e.code), Some(ErrorCode::NotFound));
    // The DHT is off in this node.
    assert_eq!(h.bootstrap().await.err().map(|e| e.code), Some(ErrorCode::Unavailable));
    assert_eq!(
        h.find_peer(libp2p::PeerId::random().to_string())
            .await
            .err()
            .map(|e| e.code),
        Some(ErrorCode::Unavailable)
    );
    // mDNS stays off (it is never switched on in tests: it would reach the machine's own network).
    let state = h.set_mdns(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!state.mdns_enabled && !state.dht_enabled);
    a.stop().await;
}

#[tokio::test]
async fn taken_port_fails_with_the_address_unless_dev() {
    // Held by plain sockets, as another program would hold them.
    let tcp_holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let udp_holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let tcp_port = tcp_holder.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let udp_port = udp_holder.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    for wanted in [
        format!("/ip4/127.0.0.1/tcp/{tcp_port}"),
        format!("/ip4/127.0.0.1/udp/{udp_port}/quic-v1"),
    ] {
        let cfg = test_config(&[&wanted]);
        let err = spawn(
            Keypair::generate_ed25519(),
            &cfg,
            false,
            Vec::new(),
            Vec::new(),
            CancellationToken::new(),
            &[],
        )
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_else(|| panic!("listening on taken {wanted} succeeded"));
        assert!(err.contains(&wanted), "error does not name the address: {err}");
        assert!(
            err.contains("network.listen"),
            "error does not say what to change: {err}"
        );

        let token = CancellationToken::new();
        let net = spawn(
            Keypair::generate_ed25519(),
            &cfg,
            true,
            Vec::new(),
            Vec::new(),
            token.clone(),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("dev mode should pick a free port instead of {wanted}: {e:#}"));
        assert_eq!(net.listen_addrs.len(), 1);
        assert!(
            !net.listen_addrs[0].starts_with(&format!("{wanted}/")),
            "{:?}",
            net.listen_addrs
        );
        token.cancel();
        tokio::time::timeout(WAIT, net.task).await.ok();
    }
    drop((tcp_holder, udp_holder));
}

#[tokio::test]
async fn quic_and_tcp_listen_and_quic_dials() {
    let cfg = test_config(&["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    let a = Node::start(Keypair::generate_ed25519(), &cfg).await;
    let mut b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    assert_eq!(a.net.listen_addrs.len(), 2, "{:?}", a.net.listen_addrs);
    let got = a.net.handle.listen_addrs().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, a.net.listen_addrs);

    let outcome = b
        .net
        .handle
        .dial(a.addr("/quic-v1"))
        .await
        .unwrap_or_else(|e| panic!("quic dial: {e}"));
    assert!(outcome.addr.contains("/quic-v1"), "{outcome:?}");
    b.expect("B connected to A", is_connected_to(&a.id())).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn find_peer_through_the_dht() {
    let mut cfg = test_config(&["/ip4/127.0.0.1/tcp/0"]);
    cfg.dht = true;
    let mut a = Node::start(Keypair::generate_ed25519(), &cfg).await;
    let mut b = Node::start(Keypair::generate_ed25519(), &cfg).await;
    let c = Node::start(Keypair::generate_ed25519(), &cfg).await;
    let (b_id, c_id) = (b.id(), c.id());
    assert!(
        a.net
            .handle
            .discovery()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .dht_enabled
    );

    // B knows C, A knows only B; identify puts each DHT server into the other's routing table.
    b.net
        .handle
        .dial(c.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("B dials C: {e}"));
    b.expect(
        "B identified C",
        |e| matches!(e, NetEvent::Identified { peer_id, .. } if *peer_id == c_id),
    )
    .await;
    a.net
        .handle
        .dial(b.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("A dials B: {e}"));
    a.expect(
        "A identified B",
        |e| matches!(e, NetEvent::Identified { peer_id, .. } if *peer_id == b_id),
    )
    .await;

    let found = a
        .net
        .handle
        .find_peer(c_id.clone())
        .await
        .unwrap_or_else(|e| panic!("find C: {e}"));
    let c_tcp = c.addr("/tcp/").trim_end_matches(&format!("/p2p/{c_id}")).to_owned();
    assert!(found.contains(&c_tcp), "{found:?} lacks {c_tcp}");
    a.net
        .handle
        .bootstrap()
        .await
        .unwrap_or_else(|e| panic!("bootstrap with a known peer: {e}"));
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn pinned_seeds_are_dialled_at_start_and_banned_ids_refused() {
    let b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let c = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let (b_id, c_id) = (b.id(), c.id());
    let seeds = vec![
        SeedPeer {
            peer_id: b_id.clone(),
            addrs: vec![b.addr("/tcp/")],
            redial: true,
        },
        // Known but not pinned: remembered, not dialled.
        SeedPeer {
            peer_id: c_id.clone(),
            addrs: vec![c.addr("/tcp/")],
            redial: false,
        },
        SeedPeer {
            peer_id: "not-a-peer-id".into(),
            addrs: vec!["garbage".into()],
            redial: true,
        },
    ];
    let banned = vec![c_id.clone(), "also-garbage".into()];
    let token = CancellationToken::new();
    let cfg = test_config(&["/ip4/127.0.0.1/tcp/0"]);
    let key = Keypair::generate_ed25519();
    let net = spawn(key.clone(), &cfg, false, seeds, banned, token.clone(), &[])
        .await
        .unwrap_or_else(|e| panic!("spawn with seeds: {e:#}"));
    let mut a = Node {
        net,
        token,
        key: Keypair::generate_ed25519(),
    };
    let ev = a.expect("A dialled its pinned seed B", is_connected_to(&b_id)).await;
    assert!(
        matches!(
            ev,
            NetEvent::Connected {
                direction: Direction::Outbound,
                ..
            }
        ),
        "{ev:?}"
    );
    let err = a.net.handle.dial(c_id).await.err().map(|e| e.code);
    assert_eq!(err, Some(ErrorCode::Invalid), "a peer banned at start is never dialled");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn reload_changes_limits_without_dropping_connections() {
    let cfg = test_config(&["/ip4/127.0.0.1/tcp/0"]);
    let a = Node::start(Keypair::generate_ed25519(), &cfg).await;
    let b = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    let c = Node::tcp("/ip4/127.0.0.1/tcp/0").await;
    a.net
        .handle
        .dial(b.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("dial B: {e}"));

    let mut tight = cfg.clone();
    tight.limits.max_established_outgoing = 1;
    tight.retry.max_delay = Duration::from_secs(1);
    a.net
        .handle
        .reload(tight)
        .await
        .unwrap_or_else(|e| panic!("reload: {e}"));
    let connected = a.net.handle.connected().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connected.len(), 1, "reload dropped a connection: {connected:?}");
    let err = a.net.handle.dial(c.addr("/tcp/")).await.err();
    assert_eq!(err.as_ref().map(|e| e.code), Some(ErrorCode::Unavailable), "{err:?}");
    assert!(err.is_some_and(|e| e.message.contains("refused by local policy")));

    a.net
        .handle
        .reload(cfg)
        .await
        .unwrap_or_else(|e| panic!("reload back: {e}"));
    a.net
        .handle
        .dial(c.addr("/tcp/"))
        .await
        .unwrap_or_else(|e| panic!("dial C after the limit was raised: {e}"));
    assert_eq!(
        a.net.handle.connected().await.unwrap_or_else(|e| panic!("{e}")).len(),
        2
    );

    let mut bad = test_config(&["/ip4/127.0.0.1/tcp/0"]);
    bad.bootstrap = vec!["/ip4/127.0.0.1/tcp/1".into()];
    assert_eq!(
        a.net.handle.reload(bad).await.err().map(|e| e.code),
        Some(ErrorCode::Invalid)
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}
