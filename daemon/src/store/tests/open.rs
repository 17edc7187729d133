//! Opening: permissions, reopening, crash recovery, schema versions and migrations.

use firma_ipc::types;

use super::*;
use crate::store::error::Fail;
use crate::store::schema::{Migration, SCHEMA_VERSION};
use crate::store::tables::{self, Tables};
use crate::store::{StoreError, codec};

#[test]
fn directory_and_files_are_private() {
    let ts = TestStore::new();
    std::fs::create_dir_all(&ts.dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ts.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = ts.open();
    assert_eq!(mode_of(&ts.dir), 0o700);
    assert_eq!(mode_of(&ts.dir.join("data.mdb")), 0o600);
    assert_eq!(mode_of(&ts.dir.join("lock.mdb")), 0o600);
    assert_eq!(store.dir(), ts.dir);
    assert_eq!(stored_version(&store), Some(SCHEMA_VERSION));
    let status = store.status();
    assert_eq!(status.health, types::StoreHealth::Healthy);
    assert_eq!(status.map_size_bytes, 16 << 20);
    assert!(status.used_bytes > 0 && status.used_bytes < status.map_size_bytes);
}

#[test]
fn second_open_in_one_process_is_refused_with_a_clear_error() {
    let ts = TestStore::new();
    let _store = ts.open();
    let err = Store::open_with(&ts.dir, options(), NOW).err().unwrap();
    assert!(err.to_string().contains("already open"), "{err}");
}

#[test]
fn reopen_keeps_everything() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[
            seen("p1", "/ip4/127.0.0.1/tcp/1", 1),
            connected("p2", "/ip4/127.0.0.1/tcp/2", 2),
            disconnected("p2", 3),
            StoreOp::PeerIdentified {
                peer_id: "p2".into(),
                agent: "firma/1".into(),
                protocols: vec!["/firma/1".into()],
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/22".into()],
                at_ms: 4,
            },
            StoreOp::PeerRtt {
                peer_id: "p2".into(),
                rtt_us: 10,
            },
            StoreOp::SetPinned {
                peer_id: "p3".into(),
                pinned: true,
            },
            StoreOp::SetBanned {
                peer_id: "p4".into(),
                banned: true,
            },
            audit(1),
            StoreOp::ConfigCachePut {
                key: "net".into(),
                value: b"cfg".to_vec(),
            },
        ])
        .unwrap();
    let peers = store.list_peers().unwrap();
    let history = store.history(None, 10).unwrap();
    let audit_log = store.audit(10).unwrap();
    drop(store);
    let store = ts.open();
    assert_eq!(store.list_peers().unwrap(), peers);
    assert_eq!(store.history(None, 10).unwrap(), history);
    assert_eq!(store.audit(10).unwrap(), audit_log);
    assert_eq!(store.config_cache_get("net").unwrap(), Some(b"cfg".to_vec()));
    assert_eq!(peers.len(), 4);
}

#[test]
fn open_closes_history_left_open_by_a_crash() {
    let ts = TestStore::new();
    let store = ts.open();
    store
        .apply(&[
            connected("crashed", "/ip4/127.0.0.1/tcp/1", 10),
            connected("closed", "/ip4/127.0.0.1/tcp/2", 11),
            disconnected("closed", 12),
        ])
        .unwrap();
    // No DaemonStopping: the process "died".
    drop(store);
    let store = ts.open_with(options(), NOW + 5);
    let h = store.history(None, 10).unwrap();
    let crashed = h.iter().find(|r| r.peer_id == "crashed").unwrap();
    assert_eq!(crashed.closed_ms, Some(NOW + 5));
    assert_eq!(crashed.close_reason.as_deref(), Some("daemon stopped unexpectedly"));
    let closed = h.iter().find(|r| r.peer_id == "closed").unwrap();
    assert_eq!(closed.closed_ms, Some(12));
    assert_eq!(closed.close_reason.as_deref(), Some("closed by peer"));
    let redial: Vec<String> = store
        .peers_to_redial()
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect();
    assert_eq!(redial, ["crashed"], "a peer connected at the crash is redialled");
    let txn = store.inner.env.read_txn().unwrap();
    assert!(store.inner.tables.open_history(&txn).unwrap().is_empty());
}

/// A fake v0 -> v1 step: marks every peer pinned and counts its runs in the config cache.
fn fake_v0_to_v1(txn: &mut heed::RwTxn, t: &Tables) -> Result<(), Fail> {
    let mut peers = Vec::new();
    for item in t.peers.iter(txn)? {
        let (key, value) = item?;
        peers.push(tables::decode_peer(key, value)?);
    }
    for mut p in peers {
        p.pinned = true;
        p.refresh_trust();
        t.put_peer(txn, &p)?;
    }
    bump_runs(txn, t, "v0->v1")
}

fn fake_v1_to_v2(txn: &mut heed::RwTxn, t: &Tables) -> Result<(), Fail> {
    bump_runs(txn, t, "v1->v2")
}

fn failing_step(_: &mut heed::RwTxn, _: &Tables) -> Result<(), Fail> {
    Err(Fail::Store(StoreError::Invalid {
        op: "migration",
        detail: "deliberate failure".into(),
    }))
}

fn bump_runs(txn: &mut heed::RwTxn, t: &Tables, key: &str) -> Result<(), Fail> {
    let runs = t.config_cache.get(txn, key.as_bytes())?.map_or(0, |v| v[0]);
    t.config_cache.put(txn, key.as_bytes(), &[runs + 1])?;
    Ok(())
}

const FAKE_MIGRATIONS: &[Migration] = &[
    Migration {
        from: 0,
        run: fake_v0_to_v1,
    },
    Migration {
        from: 1,
        run: fake_v1_to_v2,
    },
];

fn schema(version: u32, migrations: &'static [Migration]) -> OpenOptions {
    OpenOptions {
        schema: Schema { version, migrations },
        ..options()
    }
}

/// A store with one peer and no schema version key: what a "v0" store looks like.
fn v0_store(ts: &TestStore) {
    let store = ts.open();
    store.apply(&[seen("p1", "/ip4/127.0.0.1/tcp/1", 1)]).unwrap();
    raw_delete(&store, tables::META, tables::META_SCHEMA_VERSION.as_bytes());
    assert_eq!(stored_version(&store), None);
}

#[test]
fn fake_v0_store_is_migrated_once() {
    let ts = TestStore::new();
    v0_store(&ts);
    let store = ts.open_with(schema(1, FAKE_MIGRATIONS), NOW);
    assert_eq!(stored_version(&store), Some(1));
    assert!(
        store.get_peer("p1").unwrap().unwrap().pinned,
        "the step rewrote the peers table"
    );
    assert_eq!(store.config_cache_get("v0->v1").unwrap(), Some(vec![1]));
    assert_eq!(
        store.config_cache_get("v1->v2").unwrap(),
        None,
        "no step beyond the target runs"
    );
    drop(store);
    let store = ts.open_with(schema(1, FAKE_MIGRATIONS), NOW);
    assert_eq!(
        store.config_cache_get("v0->v1").unwrap(),
        Some(vec![1]),
        "a migrated store is not migrated again"
    );
}

#[test]
fn migration_runs_consecutive_steps() {
    let ts = TestStore::new();
    v0_store(&ts);
    let store = ts.open_with(schema(2, FAKE_MIGRATIONS), NOW);
    assert_eq!(stored_version(&store), Some(2));
    assert_eq!(store.config_cache_get("v0->v1").unwrap(), Some(vec![1]));
    assert_eq!(store.config_cache_get("v1->v2").unwrap(), Some(vec![1]));
}

#[test]
fn failed_migration_leaves_the_old_version_intact() {
    const FAILING: &[Migration] = &[
        Migration {
            from: 0,
            run: fake_v0_to_v1,
        },
        Migration {
            from: 1,
            run: failing_step,
        },
    ];
    let ts = TestStore::new();
    v0_store(&ts);
    let err = Store::open_with(&ts.dir, schema(2, FAILING), NOW).err().unwrap();
    assert!(err.to_string().contains("deliberate failure"), "{err}");
    let store = ts.open_with(schema(1, FAKE_MIGRATIONS), NOW);
    assert_eq!(
        store.config_cache_get("v0->v1").unwrap(),
        Some(vec![1]),
        "the first step was rolled back"
    );
}

#[test]
fn missing_migration_step_fails_open() {
    let ts = TestStore::new();
    v0_store(&ts);
    let err = Store::open_with(&ts.dir, options(), NOW).err().unwrap();
    assert!(matches!(err, StoreError::NoMigration { from: 0, .. }), "{err}");
    assert!(err.to_string().contains(&ts.dir.display().to_string()));
}

#[test]
fn newer_schema_fails_open() {
    let ts = TestStore::new();
    {
        let store = ts.open();
        raw_put(
            &store,
            tables::META,
            tables::META_SCHEMA_VERSION.as_bytes(),
            &codec::encode(&99u32).unwrap(),
        );
    }
    let err = Store::open_with(&ts.dir, options(), NOW).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn map_grown_in_an_earlier_run_is_kept() {
    let ts = TestStore::new();
    let small = OpenOptions {
        map_size: 1 << 20,
        ..options()
    };
    {
        let store = ts.open_with(small, NOW);
        for i in 0..8u8 {
            store
                .apply(&[StoreOp::ConfigCachePut {
                    key: format!("k{i}"),
                    value: vec![i; 256 << 10],
                }])
                .unwrap();
        }
        assert!(store.status().map_size_bytes > 1 << 20);
    }
    let store = ts.open_with(small, NOW);
    let file_len = std::fs::metadata(ts.dir.join("data.mdb")).unwrap().len();
    assert!(store.status().map_size_bytes >= file_len);
    assert_eq!(store.config_cache_get("k7").unwrap(), Some(vec![7; 256 << 10]));
}
