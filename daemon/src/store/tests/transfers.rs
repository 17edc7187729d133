//! The transfer index tables: kept in step with the records by every write, enforced limits
//! on pending transfers, and rebuilt from the records by the migration to schema 2.

use super::*;
use crate::store::tables;
use crate::store::{Admission, PendingLimits, TransferDir, TransferPhase, TransferRecord};

const LIMITS: PendingLimits = PendingLimits {
    max_transfers: 4,
    max_bytes: 8_000,
    max_transfers_per_peer: 2,
    max_bytes_per_peer: 6_000,
};

fn rec(id: &str, peer: &str, direction: TransferDir, phase: TransferPhase, held: u64) -> TransferRecord {
    TransferRecord {
        id: id.into(),
        direction,
        phase,
        peer_id: peer.into(),
        protocol: "/firma-sign/transfer/1.0.0".into(),
        manifest: vec![7; 100],
        manifest_signature: Vec::new(),
        docs_complete: vec![true],
        bytes_done: held,
        chunks_resent: 0,
        created_ms: NOW,
        updated_ms: NOW,
        error: None,
        receipt: None,
    }
}

fn pending(id: &str, peer: &str, held: u64) -> TransferRecord {
    rec(id, peer, TransferDir::Incoming, TransferPhase::Pending, held)
}

#[test]
fn pending_limits_hold_per_peer_and_in_total() {
    let ts = TestStore::new();
    let store = ts.open();
    assert_eq!(
        store.insert_pending(&pending("a1", "A", 1000), &LIMITS).unwrap(),
        Admission::Stored
    );
    assert_eq!(
        store.insert_pending(&pending("a2", "A", 1000), &LIMITS).unwrap(),
        Admission::Stored
    );
    let Admission::Refused(why) = store.insert_pending(&pending("a3", "A", 10), &LIMITS).unwrap() else {
        panic!("a third transfer from one peer was stored");
    };
    assert!(why.contains("transfer.pending_max_transfers_per_peer"), "{why}");
    // Bytes per peer: 5,000 + 100 of manifest would put B over 6,000 with the next one.
    assert_eq!(
        store.insert_pending(&pending("b1", "B", 5000), &LIMITS).unwrap(),
        Admission::Stored
    );
    let Admission::Refused(why) = store.insert_pending(&pending("b2", "B", 1000), &LIMITS).unwrap() else {
        panic!("a peer went over its bytes");
    };
    assert!(why.contains("transfer.pending_max_bytes_per_peer"), "{why}");
    let Admission::Refused(why) = store.insert_pending(&pending("c1", "C", 1000), &LIMITS).unwrap() else {
        panic!("the pending transfers went over their bytes in total");
    };
    assert!(why.contains("transfer.pending_max_bytes ="), "{why}");
    assert_eq!(
        store.insert_pending(&pending("c1", "C", 500), &LIMITS).unwrap(),
        Admission::Stored
    );
    let Admission::Refused(why) = store.insert_pending(&pending("d1", "D", 1), &LIMITS).unwrap() else {
        panic!("a fifth pending transfer was stored");
    };
    assert!(why.contains("transfer.pending_max_transfers ="), "{why}");
    let Admission::Refused(why) = store.insert_pending(&pending("a1", "C", 1), &LIMITS).unwrap() else {
        panic!("a taken id was stored again");
    };
    assert!(why.contains("already in use"), "{why}");
    assert!(store.get_transfer("a3").unwrap().is_none() && store.get_transfer("d1").unwrap().is_none());

    let u = store.pending_usage("A").unwrap();
    assert_eq!((u.transfers, u.peer_transfers, u.peer_bytes), (4, 2, 2200));
    assert_eq!(u.bytes, 2200 + 5100 + 600);

    // A decision takes the transfer out of the index, which frees its place.
    let mut decided = pending("a1", "A", 1000);
    decided.phase = TransferPhase::Rejected;
    store.put_transfer(&decided).unwrap();
    assert_eq!(store.pending_usage("A").unwrap().peer_transfers, 1);
    assert_eq!(
        store.insert_pending(&pending("d1", "D", 1), &LIMITS).unwrap(),
        Admission::Stored
    );
    let ids: Vec<String> = store
        .pending_transfers()
        .unwrap()
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, ["a2", "b1", "c1", "d1"]);
}

#[test]
fn exchanged_peers_are_indexed() {
    let ts = TestStore::new();
    let store = ts.open();
    store.put_transfer(&pending("p1", "P", 0)).unwrap();
    assert!(
        !store.peer_exchanged("P").unwrap(),
        "a pending transfer vouches for nobody"
    );
    store
        .put_transfer(&rec("p1", "P", TransferDir::Incoming, TransferPhase::Received, 0))
        .unwrap();
    assert!(store.peer_exchanged("P").unwrap());
    store
        .put_transfer(&rec("o1", "Q", TransferDir::Outgoing, TransferPhase::Pending, 0))
        .unwrap();
    assert!(store.peer_exchanged("Q").unwrap());
    assert!(!store.peer_exchanged("R").unwrap());
}

#[test]
fn migration_to_schema_2_builds_the_indexes() {
    let ts = TestStore::new();
    {
        let store = ts.open();
        store.put_transfer(&pending("p1", "P", 10)).unwrap();
        store
            .put_transfer(&rec("r1", "R", TransferDir::Incoming, TransferPhase::Received, 0))
            .unwrap();
        // What a schema 1 store looks like: records without index entries.
        raw_delete(&store, tables::TRANSFERS_PENDING, b"P\0p1");
        raw_delete(&store, tables::TRANSFER_PEERS, b"R");
        raw_put(
            &store,
            tables::META,
            tables::META_SCHEMA_VERSION.as_bytes(),
            &crate::store::codec::encode(&1u32).unwrap(),
        );
        assert_eq!(store.pending_usage("P").unwrap().transfers, 0);
    }
    let store = ts.open();
    assert_eq!(stored_version(&store), Some(2));
    let u = store.pending_usage("P").unwrap();
    assert_eq!((u.transfers, u.peer_transfers, u.peer_bytes), (1, 1, 110));
    assert!(store.peer_exchanged("R").unwrap());
}

#[test]
fn a_damaged_index_entry_marks_the_store_unhealthy() {
    let ts = TestStore::new();
    {
        let store = ts.open();
        raw_put(&store, tables::TRANSFERS_PENDING, b"no-separator", &[1, 2, 3]);
    }
    let store = ts.open();
    assert!(
        store
            .status()
            .detail
            .is_some_and(|d| d.contains(tables::TRANSFERS_PENDING))
    );
}
