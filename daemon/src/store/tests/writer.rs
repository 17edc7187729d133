//! The async writer task.

use std::time::Duration;

use firma_ipc::types::StoreHealth;

use super::*;
use crate::store::{StoreError, StoreWriter, tables};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn flush_resolves_after_everything_sent_before_is_committed() {
    let ts = TestStore::new();
    let store = ts.open();
    let (writer, task) = StoreWriter::spawn(store.clone(), 8);
    // More than one batch and more than the queue: send waits (backpressure) instead of failing.
    for i in 0..1200u64 {
        writer.send(audit(i)).await.unwrap();
    }
    tokio::time::timeout(DEADLINE, writer.flush()).await.unwrap().unwrap();
    let newest = store.audit(1).unwrap();
    assert_eq!(newest[0].detail, "call 1199");
    assert_eq!(
        store.audit(5000).unwrap().len(),
        1000,
        "retention applies through the writer too"
    );
    drop(writer);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_every_handle_commits_the_queue_and_ends_the_task() {
    let ts = TestStore::new();
    let store = ts.open();
    let (writer, task) = StoreWriter::spawn(store.clone(), 64);
    let clone = writer.clone();
    for i in 0..50u64 {
        clone
            .send(seen(&format!("p{i}"), "/ip4/127.0.0.1/tcp/1", i))
            .await
            .unwrap();
    }
    drop(clone);
    drop(writer);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(store.list_peers().unwrap().len(), 50);
}

#[tokio::test]
async fn invalid_op_is_refused_at_send() {
    let ts = TestStore::new();
    let store = ts.open();
    let (writer, task) = StoreWriter::spawn(store.clone(), 4);
    let err = writer.send(seen("", "/ip4/127.0.0.1/tcp/1", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    writer.send(seen("ok", "/ip4/127.0.0.1/tcp/1", 1)).await.unwrap();
    writer.flush().await.unwrap();
    assert!(store.get_peer("ok").unwrap().is_some());
    drop(writer);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn failed_batch_is_reported_to_flush_and_status_and_the_task_lives_on() {
    let ts = TestStore::new();
    let store = ts.open();
    raw_put(&store, tables::PEERS, b"bad", &[0xff; 5]);
    let (writer, task) = StoreWriter::spawn(store.clone(), 4);
    // Merging into the damaged record finds the corruption while writing.
    writer.send(seen("bad", "/ip4/127.0.0.1/tcp/1", 1)).await.unwrap();
    let err = writer.flush().await.unwrap_err();
    assert!(
        matches!(err, StoreError::WriteFailed(ref d) if d.contains("`peers`")),
        "{err}"
    );
    assert_eq!(store.status().health, StoreHealth::Unhealthy);
    // The task still answers; later writes are refused by the unhealthy store.
    writer.send(audit(1)).await.unwrap();
    let err = writer.flush().await.unwrap_err();
    assert!(err.to_string().contains("unhealthy"), "{err}");
    assert!(store.audit(10).unwrap().is_empty());
    drop(writer);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}
