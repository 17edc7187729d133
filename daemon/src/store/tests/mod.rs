//! Unit tests of the store, each on its own temporary directory. They reach into the store's
//! private fields to damage data with raw heed calls, as a crash or a bad disk would.

mod failures;
mod open;
mod ops;
mod transfers;
mod writer;

use std::path::{Path, PathBuf};

use firma_ipc::types;
use tempfile::TempDir;

use super::schema::Schema;
use super::{OpenOptions, Store, StoreOp};

/// A fixed "now" for opens, so closed_ms values are predictable.
const NOW: u64 = 1_700_000_000_000;

struct TestStore {
    /// Kept so the directory lives as long as the test.
    _tmp: TempDir,
    dir: PathBuf,
}

impl TestStore {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Store::dir_in(tmp.path());
        TestStore { _tmp: tmp, dir }
    }

    fn open(&self) -> Store {
        Store::open_with(&self.dir, options(), NOW).unwrap()
    }

    fn open_with(&self, opts: OpenOptions, now_ms: u64) -> Store {
        Store::open_with(&self.dir, opts, now_ms).unwrap()
    }
}

fn options() -> OpenOptions {
    OpenOptions {
        map_size: 16 << 20,
        map_ceiling: 64 << 20,
        history_retention: 1000,
        audit_retention: 1000,
        schema: Schema::CURRENT,
    }
}

fn seen(peer: &str, addr: &str, at_ms: u64) -> StoreOp {
    StoreOp::PeerSeen {
        peer_id: peer.into(),
        addrs: vec![(addr.into(), types::AddrSource::Mdns)],
        at_ms,
    }
}

fn connected(peer: &str, addr: &str, at_ms: u64) -> StoreOp {
    StoreOp::PeerConnected {
        peer_id: peer.into(),
        addr: addr.into(),
        direction: types::Direction::Outbound,
        at_ms,
    }
}

fn disconnected(peer: &str, at_ms: u64) -> StoreOp {
    StoreOp::PeerDisconnected {
        peer_id: peer.into(),
        reason: Some("closed by peer".into()),
        at_ms,
    }
}

fn audit(n: u64) -> StoreOp {
    StoreOp::Audit(types::AuditRecord {
        at_ms: NOW + n,
        uid: 1000,
        pid: Some(42),
        action: "connect".into(),
        detail: format!("call {n}"),
        result: "ok".into(),
    })
}

/// Writes raw bytes into a table, bypassing every check: the damage a bad disk would do.
fn raw_put(store: &Store, table: &str, key: &[u8], value: &[u8]) {
    let t = &store.inner.tables;
    let db = t.all().into_iter().find(|(name, _)| *name == table).unwrap().1;
    let mut txn = store.inner.env.write_txn().unwrap();
    db.put(&mut txn, key, value).unwrap();
    txn.commit().unwrap();
}

fn raw_delete(store: &Store, table: &str, key: &[u8]) {
    let t = &store.inner.tables;
    let db = t.all().into_iter().find(|(name, _)| *name == table).unwrap().1;
    let mut txn = store.inner.env.write_txn().unwrap();
    db.delete(&mut txn, key).unwrap();
    txn.commit().unwrap();
}

fn stored_version(store: &Store) -> Option<u32> {
    let txn = store.inner.env.read_txn().unwrap();
    store
        .inner
        .tables
        .get_meta_u32(&txn, super::tables::META_SCHEMA_VERSION)
        .unwrap()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
