//! Damaged data, a full map, misaligned values.

use firma_ipc::types::StoreHealth;
use rkyv::util::AlignedVec;

use super::*;
use crate::store::error::Fail;
use crate::store::records::{AddrRecord, PeerRecord};
use crate::store::tables;
use crate::store::{AddrSource, StoreError, codec};

const GARBAGE: &[u8] = &[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3];

fn filled_store(ts: &TestStore) -> Store {
    let store = ts.open();
    store
        .apply(&[
            connected("good", "/ip4/127.0.0.1/tcp/1", 1),
            disconnected("good", 2),
            audit(1),
            StoreOp::ConfigCachePut {
                key: "k".into(),
                value: vec![9],
            },
        ])
        .unwrap();
    store
}

fn assert_unhealthy_and_refusing(store: &Store, key: &str) {
    let status = store.status();
    assert_eq!(status.health, StoreHealth::Unhealthy);
    let detail = status.detail.unwrap();
    assert!(
        detail.contains("`peers`") && detail.contains(key),
        "detail names table and key: {detail}"
    );
    assert!(detail.contains("restore from backup or move") && detail.contains(&store.dir().display().to_string()));
    let err = store.apply(&[seen("new", "/ip4/127.0.0.1/tcp/1", 5)]).unwrap_err();
    assert!(matches!(err, StoreError::Unhealthy(_)), "{err}");
    assert_eq!(store.get_peer("new").unwrap(), None, "nothing was written");
}

#[test]
fn corrupt_value_found_by_a_read_marks_unhealthy_and_refuses_writes() {
    let ts = TestStore::new();
    let store = filled_store(&ts);
    raw_put(&store, tables::PEERS, b"bad-peer", GARBAGE);
    assert_eq!(store.status().health, StoreHealth::Healthy, "nothing has read it yet");

    let err = store.get_peer("bad-peer").unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { table: "peers", ref key, .. } if key == "bad-peer"),
        "{err}"
    );
    assert_unhealthy_and_refusing(&store, "bad-peer");
    assert!(matches!(store.list_peers(), Err(StoreError::Corrupt { .. })));

    // Other tables, and valid records of the same table, still read.
    assert!(store.get_peer("good").unwrap().is_some());
    assert_eq!(store.history(None, 10).unwrap().len(), 1);
    assert_eq!(store.audit(10).unwrap().len(), 1);
    assert_eq!(store.config_cache_get("k").unwrap(), Some(vec![9]));
}

#[test]
fn corrupt_value_found_at_open_opens_unhealthy() {
    let ts = TestStore::new();
    {
        let store = filled_store(&ts);
        raw_put(&store, tables::PEERS, b"bad-peer", GARBAGE);
        // Writes some valid history that a crash left open, which must then stay untouched.
        store.apply(&[connected("good", "/ip4/127.0.0.1/tcp/1", 3)]).unwrap();
    }
    let store = ts.open();
    assert_unhealthy_and_refusing(&store, "bad-peer");
    let h = store.history(None, 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        h[0].closed_ms, None,
        "an unhealthy store writes nothing, not even crash recovery"
    );
    assert_eq!(store.audit(10).unwrap().len(), 1);
}

#[test]
fn record_filed_under_another_key_is_corrupt() {
    let ts = TestStore::new();
    let store = filled_store(&ts);
    let good = store.get_peer("good").unwrap().unwrap();
    raw_put(&store, tables::PEERS, b"impostor", &codec::encode(&good).unwrap());
    let err = store.get_peer("impostor").unwrap_err();
    assert!(err.to_string().contains("record names peer `good`"), "{err}");
}

#[test]
fn corrupt_schema_version_opens_unhealthy() {
    let ts = TestStore::new();
    {
        let store = filled_store(&ts);
        raw_put(&store, tables::META, tables::META_SCHEMA_VERSION.as_bytes(), &[1]);
    }
    let store = ts.open();
    let detail = store.status().detail.unwrap();
    assert!(
        detail.contains("`meta`") && detail.contains("schema_version"),
        "{detail}"
    );
    assert!(store.get_peer("good").unwrap().is_some());
}

#[test]
fn full_small_map_is_grown_instead_of_failing() {
    let ts = TestStore::new();
    let store = ts.open_with(
        OpenOptions {
            map_size: 1 << 20,
            map_ceiling: 64 << 20,
            ..options()
        },
        NOW,
    );
    assert_eq!(store.status().map_size_bytes, 1 << 20);
    // 24 values of 200 KiB need well over the 1 MiB map.
    for i in 0..24u8 {
        store
            .apply(&[StoreOp::ConfigCachePut {
                key: format!("k{i}"),
                value: vec![i; 200 << 10],
            }])
            .unwrap();
    }
    let status = store.status();
    assert_eq!(status.health, StoreHealth::Healthy);
    assert!(status.map_size_bytes >= 4 << 20, "map grew: {}", status.map_size_bytes);
    assert!(status.used_bytes <= status.map_size_bytes);
    for i in 0..24u8 {
        assert_eq!(
            store.config_cache_get(&format!("k{i}")).unwrap(),
            Some(vec![i; 200 << 10])
        );
    }
}

#[test]
fn map_full_at_the_ceiling_is_a_typed_error() {
    let ts = TestStore::new();
    let store = ts.open_with(
        OpenOptions {
            map_size: 1 << 20,
            map_ceiling: 2 << 20,
            ..options()
        },
        NOW,
    );
    let mut error = None;
    for i in 0..40u8 {
        if let Err(e) = store.apply(&[StoreOp::ConfigCachePut {
            key: format!("k{i}"),
            value: vec![i; 200 << 10],
        }]) {
            error = Some((i, e));
            break;
        }
    }
    let (failed_at, err) = error.expect("a 2 MiB map cannot hold 8 MB");
    assert!(
        failed_at >= 4,
        "the map was grown before failing (failed at value {failed_at})"
    );
    assert!(
        matches!(
            err,
            StoreError::MapFull {
                map_size_bytes: 2097152,
                ceiling_bytes: 2097152,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("store.map_size_mib"));
    let status = store.status();
    assert_eq!(status.health, StoreHealth::Unhealthy);
    assert!(status.detail.unwrap().contains("full"));
    assert!(matches!(store.apply(&[audit(1)]), Err(StoreError::Unhealthy(_))));
    assert_eq!(
        store.config_cache_get("k0").unwrap(),
        Some(vec![0; 200 << 10]),
        "committed data stays readable"
    );
}

fn sample_peer() -> PeerRecord {
    let mut p = PeerRecord::new("12D3KooWSample", 5);
    p.addrs.push(AddrRecord {
        addr: "/ip4/127.0.0.1/tcp/9092".into(),
        source: AddrSource::Manual,
        last_success_ms: Some(6),
        last_seen_ms: 7,
    });
    p.agent = Some("agent".into());
    p.connect_count = u64::MAX;
    p
}

#[test]
fn misaligned_value_still_validates() {
    let peer = sample_peer();
    let bytes = codec::encode(&peer).unwrap();
    // One pad byte in a 16-aligned buffer puts the value at an odd address.
    let mut buf = AlignedVec::<16>::new();
    buf.push(0);
    buf.extend_from_slice(&bytes);
    let misaligned = &buf[1..];
    assert_eq!(misaligned.as_ptr() as usize % 2, 1);
    assert!(
        rkyv::access::<<PeerRecord as rkyv::Archive>::Archived, rkyv::rancor::Error>(misaligned).is_err(),
        "rkyv itself refuses the misaligned root, so the copy is what makes it work"
    );
    let decoded: PeerRecord = codec::decode("peers", || "k".into(), misaligned).unwrap();
    assert_eq!(decoded, peer);
    let aligned: PeerRecord = codec::decode("peers", || "k".into(), &bytes).unwrap();
    assert_eq!(aligned, peer);
}

#[test]
fn garbage_is_reported_not_panicked() {
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        match codec::decode::<PeerRecord>("peers", || "k".into(), &junk) {
            Err(Fail::Corrupt { table: "peers", .. }) => {}
            other => panic!("{len} bytes of junk decoded as {other:?}"),
        }
    }
}

#[test]
fn values_at_odd_lmdb_offsets_read_back() {
    // LMDB stores a value right after its key, so odd-length keys put values at odd addresses.
    let ts = TestStore::new();
    let store = ts.open();
    let ids: Vec<String> = (1..=9).map(|n| "p".repeat(n)).collect();
    let ops: Vec<StoreOp> = ids.iter().map(|id| seen(id, "/ip4/127.0.0.1/tcp/1", 1)).collect();
    store.apply(&ops).unwrap();
    let txn = store.inner.env.read_txn().unwrap();
    let mut misaligned = 0;
    for id in &ids {
        let raw = store.inner.tables.peers.get(&txn, id.as_bytes()).unwrap().unwrap();
        if !(raw.as_ptr() as usize).is_multiple_of(8) {
            misaligned += 1;
        }
    }
    drop(txn);
    assert!(misaligned > 0, "at least one value sits misaligned in the map");
    for id in &ids {
        assert_eq!(store.get_peer(id).unwrap().unwrap().peer_id, *id);
    }
    assert_eq!(store.status().health, StoreHealth::Healthy);
}

/// Unmounts on drop, however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &std::path::Path) {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_disk_fails_the_batch_only_and_writing_resumes_when_there_is_room() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test mounts a tmpfs and needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let fs = tmp.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &fs);
    let _mounted = Mounted(fs.clone());
    let dir = Store::dir_in(&fs);
    let opts = OpenOptions {
        audit_retention: 1_000_000,
        ..options()
    };
    let store = Store::open_with(&dir, opts, NOW).unwrap();
    store.apply(&[seen("first", "/ip4/127.0.0.1/tcp/1", 1)]).unwrap();

    // Audit rows until the file system is full (1 MiB holds a few thousand).
    let mut n = 0u64;
    let err = loop {
        let batch: Vec<StoreOp> = (0..200).map(|i| audit(n * 200 + i)).collect();
        match store.apply(&batch) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 1000, "a 1 MiB file system never filled up");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.display().to_string()) && text.contains("free space"),
        "{text}"
    );
    assert_eq!(store.status().health, StoreHealth::Healthy);
    assert!(store.get_peer("first").unwrap().is_some(), "earlier data intact");

    // Room again: the same store writes, and everything is there.
    mount(&["-o", "remount,size=64m"], &fs);
    store.apply(&[seen("after", "/ip4/127.0.0.1/tcp/2", 2)]).unwrap();
    assert!(store.get_peer("first").unwrap().is_some() && store.get_peer("after").unwrap().is_some());
    assert_eq!(store.status().health, StoreHealth::Healthy);
    drop(store);
    let reopened = Store::open_with(&dir, opts, NOW).unwrap();
    assert!(
        reopened.get_peer("after").unwrap().is_some(),
        "committed after the full disk, and durable"
    );
}
