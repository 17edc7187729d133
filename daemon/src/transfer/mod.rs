//! The document-transfer engine (issue 3): streamed, resumable, verified transfers with signed
//! receipts over `/firma-sign/transfer/2.0.0`, and upstream's legacy `/firma-sign/transfer/1.0.0`.
//!
//! Tasks and who owns what:
//! - acceptors (receive.rs, legacy.rs): one per protocol, take incoming streams from
//!   libp2p-stream's `Control` and spawn a bounded number of stream handlers.
//! - outbox (outbox.rs): the durable outbox; starts delivery attempts (send.rs, legacy.rs) for
//!   outgoing transfers in LMDB, retries with the network's retry strategy until the deadline,
//!   and retries at once when the recipient connects (it follows the event log for that).
//! - control calls (api.rs): uploads, creating transfers, decisions, downloads.
//! - upkeep (inbox.rs): rejects incoming transfers that waited too long for a decision, removes
//!   idle uploads; inbox.rs also holds the limits on what unknown peers may leave here.
//!
//! Records live in LMDB (store/transfers.rs); bytes in the blob store (blobs.rs). Every
//! read-modify-write of a record goes through [`Engine::update`], which holds `record_lock`,
//! so a cancel never races an attempt's result into a lost update. Lock order: `record_lock`
//! (async) before any of the std mutexes, which are never held across an await.

mod api;
mod blobs;
mod inbox;
mod legacy;
mod manifest;
mod outbox;
mod receive;
mod send;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use firma_ipc::IpcError;
use firma_ipc::event::Event;
use firma_ipc::transfer::{DocumentInfo, ReceiptInfo, RecipientInfo, TransferDirection, TransferInfo, TransferState};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{RetryConfig, TransferConfig};
use crate::core::{Core, now_ms};
use crate::store::{TransferDir, TransferPhase, TransferRecord};

pub use blobs::Blobs;
pub use wire::{PROTOCOL_V1, PROTOCOL_V2};

/// Progress events per transfer at most this often (~4/s).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Staged documents not touched for this long are removed (uploads in progress go sooner, after
/// `transfer.upload_idle_timeout`).
const STAGED_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Streams handled at once per transfer slot (control + data streams + slack).
const STREAMS_PER_SLOT: usize = 20;

/// Live counters of a transfer that is moving; the record holds the last checkpoint.
pub(crate) struct Live {
    pub id: String,
    pub total: u64,
    pub docs: Vec<AtomicU64>,
    done: AtomicU64,
    /// (when the last progress event went out, bytes at that moment).
    last: Mutex<(Instant, u64)>,
}

impl Live {
    fn new(id: &str, sizes: &[u64]) -> Live {
        Live {
            id: id.to_owned(),
            total: sizes.iter().sum(),
            docs: sizes.iter().map(|_| AtomicU64::new(0)).collect(),
            done: AtomicU64::new(0),
            last: Mutex::new((Instant::now(), 0)),
        }
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Sets the per-document counters (at the start of an attempt, from what is held).
    pub fn reset(&self, per_doc: &[u64]) {
        for (slot, v) in self.docs.iter().zip(per_doc) {
            slot.store(*v, Ordering::Relaxed);
        }
        self.done.store(per_doc.iter().sum(), Ordering::Relaxed);
    }

    /// Counts `n` verified bytes of document `doc`; emits a progress event if one is due.
    pub fn add(&self, core: &Core, doc: usize, n: u64) {
        if let Some(d) = self.docs.get(doc) {
            d.fetch_add(n, Ordering::Relaxed);
        }
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = last.0.elapsed();
        if elapsed >= PROGRESS_EVERY || done == self.total {
            let rate = (done.saturating_sub(last.1) as f64 / elapsed.as_secs_f64().max(1e-3)) as u64;
            *last = (Instant::now(), done);
            drop(last);
            core.events.append(
                Event::TransferProgress {
                    id: self.id.clone(),
                    bytes_done: done,
                    bytes_total: self.total,
                    rate_bps: rate,
                },
                now_ms(),
            );
        }
    }
}

/// What the engine needs from the daemon at start.
pub struct EngineParts {
    pub core: Arc<Core>,
    pub keypair: Keypair,
    pub config: TransferConfig,
    pub retry: RetryConfig,
    pub state_dir: std::path::PathBuf,
    pub streams: libp2p_stream::Control,
    /// Inbound streams of [`PROTOCOLS`], in that order, registered before the swarm started.
    pub incoming: Vec<libp2p_stream::IncomingStreams>,
}

/// The protocols the engine accepts, in the order `EngineParts::incoming` holds them.
pub const PROTOCOLS: [libp2p::StreamProtocol; 2] = [PROTOCOL_V2, PROTOCOL_V1];

pub struct Engine {
    core: Arc<Core>,
    key: Keypair,
    local: PeerId,
    cfg: TransferConfig,
    retry: RetryConfig,
    blobs: Blobs,
    streams: libp2p_stream::Control,
    /// Serialises read-modify-write of transfer records.
    record_lock: tokio::sync::Mutex<()>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Incoming transfers with open data paths (receive.rs).
    sessions: Mutex<HashMap<String, Arc<receive::Session>>>,
    /// Operator decisions on `pending` incoming transfers: true = accept.
    decisions: Mutex<HashMap<String, watch::Sender<Option<bool>>>>,
    /// Sender side: chunks the recipient acknowledged in earlier attempts of this process, per
    /// transfer; a resume that asks for one of them again counts it in `chunks_resent`.
    acked: Mutex<HashMap<String, Vec<Vec<bool>>>>,
    outbox: outbox::Outbox,
    /// Incoming streams handled at once.
    stream_slots: Arc<Semaphore>,
    /// Incoming transfers moving data at once.
    incoming_slots: Arc<Semaphore>,
    /// Held while an upload is admitted against the upload limits, and while idle ones are
    /// removed, so two admissions never both take the last room.
    uploads_lock: tokio::sync::Mutex<()>,
    /// Ids of the v1 transfers whose bodies are being written now (legacy.rs): a second body
    /// with the same id is refused instead of writing into, or deleting, the first one's folder.
    v1_writing: Mutex<std::collections::HashSet<String>>,
    shutdown: CancellationToken,
}

/// The running engine and its tasks.
pub struct Running {
    pub engine: Arc<Engine>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and sending; waits a little for the tasks. Partial files stay, so the
    /// next start resumes.
    pub async fn stop(self) {
        self.engine.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Takes incoming streams of one protocol and runs `handle` on each, at most `slots` at once;
/// a stream over the limit is dropped (the sender retries), and shutdown ends every handler.
async fn accept_loop<F, Fut>(
    engine: Arc<Engine>,
    mut incoming: libp2p_stream::IncomingStreams,
    slots: Arc<Semaphore>,
    what: &'static str,
    handle: F,
) where
    F: Fn(Arc<Engine>, PeerId, libp2p::Stream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    loop {
        let next = tokio::select! {
            () = engine.shutdown.cancelled() => break,
            n = incoming.next() => n,
        };
        let Some((peer, stream)) = next else { break };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many transfers arriving; refusing a {what}");
            continue;
        };
        let cancel = engine.shutdown.clone();
        let work = handle(engine.clone(), peer, stream);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
            }
        });
    }
}

/// Creates the blob directories, registers both protocols and starts the tasks.
pub async fn start(parts: EngineParts, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let blobs = Blobs::new(&parts.state_dir);
    let (b, store, idle) = (
        blobs.clone(),
        parts.core.store.clone(),
        parts.config.upload_idle_timeout,
    );
    tokio::task::spawn_blocking(move || {
        b.prepare()?;
        let pruned = b.prune_idle(idle, STAGED_MAX_AGE);
        if pruned > 0 {
            tracing::info!(pruned, "removed abandoned uploads and staged documents");
        }
        let swept = inbox::sweep_incoming(&b, &store);
        if swept > 0 {
            tracing::info!(swept, "removed the documents of refused or unknown incoming transfers");
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("blob directory task: {e}"))?
    .map_err(|e| anyhow::anyhow!("preparing the blob store under {}: {e}", blobs.root().display()))?;
    let streams = parts.streams;
    let mut incoming = parts.incoming.into_iter();
    let (Some(v2), Some(v1)) = (incoming.next(), incoming.next()) else {
        anyhow::bail!("the network accepted {} transfer protocols, not 2", PROTOCOLS.len());
    };
    let slots = parts.config.concurrency as usize;
    let engine = Arc::new(Engine {
        local: parts.keypair.public().to_peer_id(),
        key: parts.keypair,
        core: parts.core,
        retry: parts.retry,
        blobs,
        streams,
        record_lock: tokio::sync::Mutex::new(()),
        live: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        decisions: Mutex::new(HashMap::new()),
        acked: Mutex::new(HashMap::new()),
        outbox: outbox::Outbox::new(slots),
        stream_slots: Arc::new(Semaphore::new(slots * STREAMS_PER_SLOT)),
        incoming_slots: Arc::new(Semaphore::new(slots)),
        uploads_lock: tokio::sync::Mutex::new(()),
        v1_writing: Mutex::new(std::collections::HashSet::new()),
        cfg: parts.config,
        shutdown,
    });
    let tasks = vec![
        tokio::spawn(accept_loop(
            engine.clone(),
            v2,
            engine.stream_slots.clone(),
            "v2 stream",
            |e, p, s| async move { receive::handle(&e, p, s).await },
        )),
        // v1 holds a whole transfer in memory: at most `concurrency` of them at once.
        tokio::spawn(accept_loop(
            engine.clone(),
            v1,
            engine.incoming_slots.clone(),
            "v1 transfer",
            |e, p, s| async move { legacy::receive(&e, p, s).await },
        )),
        tokio::spawn(outbox::run(engine.clone())),
        tokio::spawn(outbox::follow_connections(engine.clone())),
        tokio::spawn(inbox::upkeep(engine.clone())),
    ];
    tracing::info!(
        dir = %engine.blobs.root().display(),
        streams = engine.cfg.parallel_streams,
        chunk = engine.cfg.chunk_size,
        "transfer engine started"
    );
    Ok(Running { engine, tasks })
}

pub(crate) fn phase_state(p: TransferPhase) -> TransferState {
    match p {
        TransferPhase::Pending => TransferState::Pending,
        TransferPhase::Sending => TransferState::Sending,
        TransferPhase::Sent => TransferState::Sent,
        TransferPhase::Delivered => TransferState::Delivered,
        TransferPhase::Failed => TransferState::Failed,
        TransferPhase::Cancelled => TransferState::Cancelled,
        TransferPhase::Receiving => TransferState::Receiving,
        TransferPhase::Received => TransferState::Received,
        TransferPhase::Rejected => TransferState::Rejected,
    }
}

pub(crate) fn is_final(p: TransferPhase) -> bool {
    phase_state(p).is_final()
}

fn direction(d: TransferDir) -> TransferDirection {
    match d {
        TransferDir::Outgoing => TransferDirection::Outgoing,
        TransferDir::Incoming => TransferDirection::Incoming,
    }
}

fn store_err(e: crate::store::StoreError) -> IpcError {
    crate::core::store_error(e)
}

impl Engine {
    pub fn config(&self) -> &TransferConfig {
        &self.cfg
    }

    pub(crate) async fn load(&self, id: &str) -> Result<Option<TransferRecord>, IpcError> {
        let id = id.to_owned();
        self.core.read(move |s| s.get_transfer(&id)).await
    }

    pub(crate) async fn list(&self) -> Result<Vec<TransferRecord>, IpcError> {
        self.core.read(|s| s.list_transfers()).await
    }

    /// Writes a new record (no lock needed: nobody else knows its id yet) and announces it.
    pub(crate) async fn insert(&self, rec: TransferRecord) -> Result<TransferRecord, IpcError> {
        let _g = self.record_lock.lock().await;
        self.put(&rec).await?;
        self.announce(&rec);
        Ok(rec)
    }

    async fn put(&self, rec: &TransferRecord) -> Result<(), IpcError> {
        let store = self.core.store.clone();
        let r = rec.clone();
        tokio::task::spawn_blocking(move || store.put_transfer(&r))
            .await
            .map_err(|e| IpcError::internal(format!("store write task failed: {e}")))?
            .map_err(store_err)
    }

    fn announce(&self, rec: &TransferRecord) {
        self.core.events.append(
            Event::TransferUpdated {
                id: rec.id.clone(),
                direction: direction(rec.direction),
                state: phase_state(rec.phase),
                peer_id: rec.peer_id.clone(),
            },
            now_ms(),
        );
    }

    /// Read-modify-write of one record under `record_lock`; `f` may refuse with an error.
    /// Announces a state change. Returns the record as written.
    pub(crate) async fn update<F>(&self, id: &str, f: F) -> Result<TransferRecord, IpcError>
    where
        F: FnOnce(&mut TransferRecord) -> Result<(), IpcError>,
    {
        let _g = self.record_lock.lock().await;
        let mut rec = self
            .load(id)
            .await?
            .ok_or_else(|| IpcError::not_found(format!("no transfer {id} (list them with `firmactl transfers`)")))?;
        let before = rec.phase;
        f(&mut rec)?;
        if let Some(live) = self.live_of(id) {
            rec.bytes_done = rec.bytes_done.max(live.done());
        }
        rec.updated_ms = now_ms();
        self.put(&rec).await?;
        if rec.phase != before {
            self.announce(&rec);
            if is_final(rec.phase) {
                self.forget(id);
            }
        }
        Ok(rec)
    }

    /// Moves a record to `phase` unless it is already final (a cancel wins over a late result).
    pub(crate) async fn set_phase(
        &self,
        id: &str,
        phase: TransferPhase,
        error: Option<String>,
    ) -> Result<TransferRecord, IpcError> {
        self.update(id, |rec| {
            if !is_final(rec.phase) {
                rec.phase = phase;
                rec.error = error;
            }
            Ok(())
        })
        .await
    }

    pub(crate) fn live_of(&self, id: &str) -> Option<Arc<Live>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    pub(crate) fn live_for(&self, id: &str, sizes: &[u64]) -> Arc<Live> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Live::new(id, sizes)))
            .clone()
    }

    /// Drops in-memory state of a transfer that reached a final state.
    fn forget(&self, id: &str) {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        self.acked.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        self.decisions.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        if let Some(s) = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(id) {
            s.cancel.cancel();
        }
        self.outbox.forget(id);
    }

    /// The API's view of a record, with live byte counts while it moves.
    pub(crate) fn info(&self, rec: &TransferRecord) -> TransferInfo {
        let m = manifest::Manifest::decode(&rec.manifest).ok();
        let live = self.live_of(&rec.id);
        let docs: Vec<DocumentInfo> = m
            .as_ref()
            .map(|m| {
                m.documents
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let complete = rec.docs_complete.get(i).copied().unwrap_or(false);
                        let moving = live
                            .as_ref()
                            .and_then(|l| l.docs.get(i))
                            .map(|a| a.load(Ordering::Relaxed));
                        DocumentInfo {
                            id: d.id.clone(),
                            file_name: d.file_name.clone(),
                            size: d.size,
                            mime_type: d.mime_type.clone(),
                            sha256: d.sha256.clone(),
                            bytes_done: if complete {
                                d.size
                            } else {
                                moving.unwrap_or(0).min(d.size)
                            },
                            complete,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bytes_total = m.as_ref().map_or(0, manifest::Manifest::total_bytes);
        let bytes_done = if is_final(rec.phase) {
            rec.bytes_done
        } else {
            live.as_ref().map_or(rec.bytes_done, |l| l.done().max(rec.bytes_done))
        };
        TransferInfo {
            id: rec.id.clone(),
            direction: direction(rec.direction),
            state: phase_state(rec.phase),
            peer_id: rec.peer_id.clone(),
            documents: docs,
            recipients: m
                .as_ref()
                .map(|m| {
                    m.recipients
                        .iter()
                        .map(|r| RecipientInfo {
                            peer_id: r.peer_id.clone(),
                            document_ids: r.document_ids.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            message: m.as_ref().and_then(|m| m.message.clone()),
            deadline_ms: m.as_ref().and_then(|m| m.deadline_ms),
            require_all_signatures: m.as_ref().is_some_and(|m| m.require_all_signatures),
            created_ms: rec.created_ms,
            updated_ms: rec.updated_ms,
            bytes_total,
            bytes_done: bytes_done.min(bytes_total),
            protocol: rec.protocol.clone(),
            receipt: rec.receipt.as_ref().map(|r| ReceiptInfo {
                signer: r.signer.clone(),
                manifest_sha256: r.manifest_sha256.clone(),
                document_sha256: r.document_sha256.clone(),
                at_ms: r.at_ms,
                verified: r.verified,
            }),
            error: rec.error.clone(),
            chunks_resent: rec.chunks_resent,
        }
    }

    /// Pinned peers, and peers this daemon already exchanged a transfer with (sent one to, or
    /// accepted one from), skip the inbox policy.
    pub(crate) async fn is_known(&self, peer: &str) -> Result<bool, IpcError> {
        let p = peer.to_owned();
        let pinned = self
            .core
            .read(move |s| s.get_peer(&p))
            .await?
            .is_some_and(|r| r.pinned && !r.banned);
        if pinned {
            return Ok(true);
        }
        let p = peer.to_owned();
        self.core.read(move |s| s.peer_exchanged(&p)).await
    }
}
