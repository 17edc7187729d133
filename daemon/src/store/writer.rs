//! `StoreWriter`: the async side of the store. One task owns the write path; everyone else
//! queues `StoreOp`s into its bounded channel (and waits when it is full). The task drains
//! whatever is queued, up to `MAX_BATCH` ops, into one `Store::apply` on the blocking pool, so
//! a burst of swarm events costs one durable commit instead of one each.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Store, StoreError, StoreOp};

/// Ops committed together at most.
pub const MAX_BATCH: usize = 512;

enum Msg {
    Op(StoreOp),
    /// Answered once everything queued before it is committed (or failed to be).
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Queue handle of the writer task. Cheap to clone; the task ends once every clone is dropped,
/// after committing what was queued.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Msg>,
}

impl StoreWriter {
    /// Starts the writer task with a queue of `queue` messages (at least 1).
    pub fn spawn(store: Store, queue: usize) -> (StoreWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(run(store, rx));
        (StoreWriter { tx }, task)
    }

    /// Queues one op; waits while the queue is full. An invalid op is refused here, so that it
    /// can never make a whole batch fail.
    pub async fn send(&self, op: StoreOp) -> Result<(), StoreError> {
        op.validate()?;
        self.tx.send(Msg::Op(op)).await.map_err(|_| StoreError::WriterStopped)
    }

    /// Resolves after everything sent before it is committed. Fails if any batch since the
    /// previous flush failed (those ops are lost; the store is then unhealthy).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Flush(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Msg>) {
    // The first failure since the last flush, reported to that flush.
    let mut failed: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op) => batch.push(op),
                Msg::Flush(reply) => flushes.push(reply),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let count = batch.len();
            let store = store.clone();
            let outcome = match tokio::task::spawn_blocking(move || store.apply(&batch)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(join) => Err(format!("the store write panicked or was cancelled: {join}")),
            };
            if let Err(detail) = outcome {
                tracing::warn!(ops = count, error = %detail, "store batch not committed; its changes are lost");
                failed.get_or_insert(format!("{count} changes not committed: {detail}"));
            }
        }
        if !flushes.is_empty() {
            let result = match failed.take() {
                None => Ok(()),
                Some(detail) => Err(detail),
            };
            for reply in flushes {
                // A flusher that stopped waiting is no error.
                let _ = reply.send(result.clone().map_err(StoreError::WriteFailed));
            }
        }
    }
    tracing::debug!("store writer stopped: every handle dropped and the queue committed");
}
