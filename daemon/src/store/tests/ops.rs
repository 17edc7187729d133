//! Every op, applied and read back.

use firma_ipc::types;

use super::*;
use crate::store::{AddrSource, MAX_ADDRS, MAX_PROTOCOLS, MAX_TEXT, StoreError, Trust};

#[test]
fn peer_seen_creates_and_merges_addresses() {
    let ts = TestStore::new();
    let store = ts.open();
    store.apply(&[seen("p1", "/ip4/127.0.0.1/tcp/1", 10)]).unwrap();
    store
        .apply(&[StoreOp::PeerSeen {
            peer_id: "p1".into(),
            addrs: vec![
                ("/ip4/127.0.0.1/tcp/1".into(), types::AddrSource::Dht),
                ("/ip4/127.0.0.1/tcp/2".into(), types::AddrSource::Manual),
            ],
            at_ms: 20,
        }])
        .unwrap();
    let p = store.get_peer("p1").unwrap().unwrap();
    assert_eq!(p.first_seen_ms, 10);
    assert_eq!(p.last_seen_ms, 20);
    assert_eq!(p.addrs.len(), 2);
    assert_eq!(
        p.addrs[0].source,
        AddrSource::Dht,
        "a non-manual source is replaced by the newest report"
    );
    assert_eq!(p.addrs[0].last_seen_ms, 20);
    assert_eq!(p.addrs[1].source, AddrSource::Manual);
    assert_eq!(p.trust, Trust::Unknown);
    assert!(!p.was_connected);
    assert_eq!(store.get_peer("nobody").unwrap(), None);
}

#[test]
fn address_list_is_capped_dropping_oldest_unsuccessful() {
    let ts = TestStore::new();
    let store = ts.open();
    // The first address connects successfully, then many never-successful ones follow.
    store.apply(&[connected("p1", "/ip4/127.0.0.1/tcp/100", 1)]).unwrap();
    for i in 0..30u64 {
        store
            .apply(&[seen("p1", &format!("/ip4/127.0.0.1/tcp/{}", 200 + i), 10 + i)])
            .unwrap();
    }
    let p = store.get_peer("p1").unwrap().unwrap();
    assert_eq!(p.addrs.len(), MAX_ADDRS);
    assert!(
        p.addrs.iter().any(|a| a.addr == "/ip4/127.0.0.1/tcp/100"),
        "the successful address survives"
    );
    // The newest 15 unsuccessful ones are kept, the older ones dropped.
    for i in 0..15u64 {
        assert!(
            !p.addrs
                .iter()
                .any(|a| a.addr == format!("/ip4/127.0.0.1/tcp/{}", 200 + i))
        );
    }
    for i in 15..30u64 {
        assert!(
            p.addrs
                .iter()
                .any(|a| a.addr == format!("/ip4/127.0.0.1/tcp/{}", 200 + i))
        );
    }
}

#[test]
fn connect_and_disconnect_update_peer_and_history() {
    let ts = TestStore::new();
    let store = ts.open();
    store.apply(&[connected("p1", "/ip4/127.0.0.1/tcp/1", 100)]).unwrap();
    let p = store.get_peer("p1").unwrap().unwrap();
    assert_eq!(p.connect_count, 1);
    assert!(p.was_connected);
    assert_eq!(p.trust, Trust::Known);
    assert_eq!(p.addrs[0].last_success_ms, Some(100));
    assert_eq!(p.addrs[0].source, AddrSource::Connection);
    let h = store.history(Some("p1"), 10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].closed_ms, None);
    assert_eq!(h[0].direction, types::Direction::Outbound);

    store.apply(&[disconnected("p1", 150)]).unwrap();
    let p = store.get_peer("p1").unwrap().unwrap();
    assert!(!p.was_connected);
    assert_eq!(p.trust, Trust::Known, "ever connected stays Known");
    let h = store.history(Some("p1"), 10).unwrap();
    assert_eq!(h[0].closed_ms, Some(150));
    assert_eq!(h[0].close_reason.as_deref(), Some("closed by peer"));
    assert_eq!(
        store
            .inner
            .tables
            .history_open
            .len(&store.inner.env.read_txn().unwrap())
            .unwrap(),
        0
    );
}

#[test]
fn inbound_connection_does_not_add_its_ephemeral_address() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[StoreOp::PeerConnected {
            peer_id: "p1".into(),
            addr: "/ip4/127.0.0.1/tcp/54321".into(),
            direction: types::Direction::Inbound,
            at_ms: 5,
        }])
        .unwrap();
    let p = store.get_peer("p1").unwrap().unwrap();
    assert!(p.addrs.is_empty());
    assert_eq!(p.connect_count, 1);
    assert_eq!(store.history(None, 10).unwrap()[0].direction, types::Direction::Inbound);
}

#[test]
fn connect_and_disconnect_in_one_batch() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[connected("p1", "/ip4/127.0.0.1/tcp/1", 1), disconnected("p1", 2)])
        .unwrap();
    let h = store.history(None, 10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].closed_ms, Some(2));
}

#[test]
fn identify_caps_hostile_peer_data() {
    let ts = TestStore::new();
    let store = ts.open();
    let long_agent = "é".repeat(300) + "\u{1b}[31m";
    let mut protocols: Vec<String> = (0..100).map(|i| format!("/proto/{i}")).collect();
    protocols.insert(0, "x".repeat(MAX_TEXT + 1));
    protocols.insert(1, "/evil\u{7}bell".into());
    let listen: Vec<String> = (0..40).map(|i| format!("/ip4/127.0.0.1/tcp/{i}")).collect();
    store
        .apply(&[StoreOp::PeerIdentified {
            peer_id: "p1".into(),
            agent: long_agent,
            protocols,
            listen_addrs: listen,
            at_ms: 7,
        }])
        .unwrap();
    let p = store.get_peer("p1").unwrap().unwrap();
    let agent = p.agent.unwrap();
    assert!(
        agent.len() <= MAX_TEXT && agent.len() >= MAX_TEXT - 1,
        "agent cut at a char boundary: {}",
        agent.len()
    );
    assert!(agent.chars().all(|c| c == 'é'));
    assert_eq!(p.protocols.len(), MAX_PROTOCOLS);
    assert!(p.protocols.iter().all(|x| x.len() <= MAX_TEXT));
    assert_eq!(p.protocols[0], "/evil\u{fffd}bell", "control characters are replaced");
    assert_eq!(p.addrs.len(), MAX_ADDRS);
    assert!(p.addrs.iter().all(|a| a.source == AddrSource::Identify));
}

#[test]
fn rtt_only_for_known_peers() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[StoreOp::PeerRtt {
            peer_id: "ghost".into(),
            rtt_us: 5,
        }])
        .unwrap();
    assert_eq!(store.get_peer("ghost").unwrap(), None);
    store
        .apply(&[
            seen("p1", "/ip4/127.0.0.1/tcp/1", 1),
            StoreOp::PeerRtt {
                peer_id: "p1".into(),
                rtt_us: 900,
            },
        ])
        .unwrap();
    assert_eq!(store.get_peer("p1").unwrap().unwrap().last_rtt_us, Some(900));
}

#[test]
fn pin_and_ban_create_records_and_steer_redial() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[StoreOp::SetPinned {
            peer_id: "unpin-ghost".into(),
            pinned: false,
        }])
        .unwrap();
    assert_eq!(
        store.get_peer("unpin-ghost").unwrap(),
        None,
        "clearing a flag creates nothing"
    );
    store
        .apply(&[
            StoreOp::SetPinned {
                peer_id: "pinned".into(),
                pinned: true,
            },
            StoreOp::SetBanned {
                peer_id: "banned".into(),
                banned: true,
            },
            connected("was-connected", "/ip4/127.0.0.1/tcp/1", 1),
            connected("gone", "/ip4/127.0.0.1/tcp/2", 1),
            disconnected("gone", 2),
            connected("banned-too", "/ip4/127.0.0.1/tcp/3", 1),
            StoreOp::SetBanned {
                peer_id: "banned-too".into(),
                banned: true,
            },
        ])
        .unwrap();
    let pinned = store.get_peer("pinned").unwrap().unwrap();
    assert_eq!(pinned.trust, Trust::Trusted);
    assert!(store.get_peer("banned").unwrap().unwrap().banned);
    let mut redial: Vec<String> = store
        .peers_to_redial()
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect();
    redial.sort();
    assert_eq!(redial, ["pinned", "was-connected"]);
    store
        .apply(&[StoreOp::SetPinned {
            peer_id: "pinned".into(),
            pinned: false,
        }])
        .unwrap();
    assert_eq!(store.get_peer("pinned").unwrap().unwrap().trust, Trust::Unknown);
    assert_eq!(store.list_peers().unwrap().len(), 5);
}

#[test]
fn audit_round_trip_newest_first_and_capped() {
    let ts = TestStore::new();
    let store = ts.open();
    let mut big = types::AuditRecord {
        at_ms: 1,
        uid: 0,
        pid: None,
        action: "ban".into(),
        detail: "d".repeat(5000),
        result: "ok".into(),
    };
    store.apply(&[StoreOp::Audit(big.clone()), audit(2), audit(3)]).unwrap();
    let a = store.audit(10).unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].detail, "call 3");
    assert_eq!(a[1].detail, "call 2");
    assert_eq!(a[2].detail.len(), crate::store::MAX_AUDIT_DETAIL);
    big.detail.truncate(crate::store::MAX_AUDIT_DETAIL);
    assert_eq!(a[2], big);
    assert_eq!(store.audit(1).unwrap().len(), 1);
    assert!(store.audit(0).unwrap().is_empty());
}

#[test]
fn config_cache_round_trip() {
    let ts = TestStore::new();
    let store = ts.open();
    assert_eq!(store.config_cache_get("k").unwrap(), None);
    store
        .apply(&[StoreOp::ConfigCachePut {
            key: "k".into(),
            value: vec![1, 2, 3],
        }])
        .unwrap();
    store
        .apply(&[StoreOp::ConfigCachePut {
            key: "k".into(),
            value: vec![4],
        }])
        .unwrap();
    assert_eq!(store.config_cache_get("k").unwrap(), Some(vec![4]));
}

#[test]
fn daemon_stopping_closes_history_but_keeps_redial_set() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[
            connected("p1", "/ip4/127.0.0.1/tcp/1", 1),
            connected("p2", "/ip4/127.0.0.1/tcp/2", 2),
        ])
        .unwrap();
    store.apply(&[StoreOp::DaemonStopping { at_ms: 9 }]).unwrap();
    let h = store.history(None, 10).unwrap();
    assert!(
        h.iter()
            .all(|r| r.closed_ms == Some(9) && r.close_reason.as_deref() == Some("daemon stopped"))
    );
    assert_eq!(store.peers_to_redial().unwrap().len(), 2);
}

#[test]
fn history_filters_by_peer_and_limits_newest_first() {
    let ts = TestStore::new();
    let store = ts.open();
    for i in 0..6u64 {
        let peer = if i % 2 == 0 { "even" } else { "odd" };
        store
            .apply(&[connected(peer, "/ip4/127.0.0.1/tcp/1", i), disconnected(peer, i)])
            .unwrap();
    }
    let all = store.history(None, 100).unwrap();
    assert_eq!(all.iter().map(|r| r.opened_ms).collect::<Vec<_>>(), [5, 4, 3, 2, 1, 0]);
    let even = store.history(Some("even"), 2).unwrap();
    assert_eq!(even.iter().map(|r| r.opened_ms).collect::<Vec<_>>(), [4, 2]);
    assert!(store.history(None, 0).unwrap().is_empty());
}

#[test]
fn invalid_op_refuses_the_whole_batch() {
    let ts = TestStore::new();
    let store = ts.open();
    let err = store
        .apply(&[
            seen("ok", "/ip4/127.0.0.1/tcp/1", 1),
            seen("", "/ip4/127.0.0.1/tcp/1", 1),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { op: "PeerSeen", .. }), "{err}");
    assert_eq!(store.get_peer("ok").unwrap(), None);
    let too_long = "p".repeat(crate::store::MAX_PEER_ID + 1);
    assert!(
        store
            .apply(&[StoreOp::SetPinned {
                peer_id: too_long,
                pinned: true
            }])
            .is_err()
    );
    let huge = StoreOp::ConfigCachePut {
        key: "k".into(),
        value: vec![0; crate::store::MAX_CONFIG_VALUE + 1],
    };
    assert!(store.apply(&[huge]).is_err());
    assert_eq!(
        store.status().health,
        types::StoreHealth::Healthy,
        "refused input is not a store failure"
    );
}

#[test]
fn to_info_converts_every_field() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[
            connected("p1", "/ip4/127.0.0.1/tcp/1", 3),
            StoreOp::PeerRtt {
                peer_id: "p1".into(),
                rtt_us: 77,
            },
            StoreOp::SetPinned {
                peer_id: "p1".into(),
                pinned: true,
            },
        ])
        .unwrap();
    let info = store.get_peer("p1").unwrap().unwrap().to_info(true);
    assert_eq!(
        info,
        types::PeerInfo {
            peer_id: "p1".into(),
            connected: true,
            addrs: vec![types::PeerAddr {
                addr: "/ip4/127.0.0.1/tcp/1".into(),
                source: types::AddrSource::Connection,
                last_success_ms: Some(3),
            }],
            protocols: vec![],
            agent: None,
            first_seen_ms: 3,
            last_seen_ms: 3,
            connect_count: 1,
            last_rtt_us: Some(77),
            trust: types::Trust::Trusted,
            pinned: true,
            banned: false,
        }
    );
}

#[test]
fn history_and_audit_are_pruned_to_retention() {
    let ts = TestStore::new();
    let opts = OpenOptions {
        history_retention: 5,
        audit_retention: 3,
        ..options()
    };
    let store = ts.open_with(opts, NOW);
    for i in 0..8u64 {
        // Every other connection stays open, so pruning also meets open records.
        let peer = format!("p{i}");
        let mut batch = vec![connected(&peer, "/ip4/127.0.0.1/tcp/1", i), audit(i)];
        if i % 2 == 0 {
            batch.push(disconnected(&peer, i));
        }
        store.apply(&batch).unwrap();
    }
    let h = store.history(None, 100).unwrap();
    assert_eq!(h.iter().map(|r| r.opened_ms).collect::<Vec<_>>(), [7, 6, 5, 4, 3]);
    let a = store.audit(100).unwrap();
    assert_eq!(
        a.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>(),
        ["call 7", "call 6", "call 5"]
    );
    let txn = store.inner.env.read_txn().unwrap();
    let open: Vec<u64> = store
        .inner
        .tables
        .open_history(&txn)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(open, [3, 5, 7], "the index of pruned open records is pruned too");
    drop(txn);
    // Ids keep increasing after pruning, also across a reopen.
    drop(store);
    let store = ts.open_with(opts, NOW);
    store.apply(&[audit(100)]).unwrap();
    assert_eq!(store.audit(1).unwrap()[0].detail, "call 100");
    assert_eq!(store.audit(100).unwrap().len(), 3);
}
