//! The receiving side of v2. A control stream carries the signed manifest; we verify it against
//! the connection's PeerId, apply size limits and the inbox policy, and answer with the chunks
//! we already hold (verified from the partial files, so resume works after a crash). Data
//! streams join the transfer's session; each chunk is checked against its hash from the
//! manifest before it is written at its offset and acknowledged. On Done, every document is
//! hashed whole; only then is it complete, and the signed receipt goes back.
//!
//! A chunk that fails its hash rejects the whole transfer: its partial files are deleted and
//! nothing of it is marked complete.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use super::manifest::{Manifest, Receipt, chunk_matches, chunk_range, sha256_hex};
use super::wire::{self, Accept, FrameError, Join, Kind, MAX_CONTROL_FRAME, MAX_DATA_FRAME, Reject, Signed, WireError};
use super::{Engine, PROTOCOL_V2, blobs};
use crate::config::InboxPolicy;
use crate::core::now_ms;
use crate::store::{Admission, ReceiptRecord, TransferDir, TransferPhase, TransferRecord};

/// How long we hold a sender's offer while the operator decides (inbox policy `ask`); then the
/// sender is told to come back, and does.
pub(crate) const ASK_HOLD: Duration = Duration::from_secs(25);
/// The first frame of a stream must arrive this soon.
const FIRST_FRAME: Duration = Duration::from_secs(30);
/// A data stream or a control stream waiting for Done with nothing arriving for this long is dead.
const IDLE: Duration = Duration::from_secs(120);

/// An incoming transfer whose data path is open.
pub(crate) struct Session {
    pub id: String,
    pub peer: PeerId,
    pub manifest: Manifest,
    /// Open partial files; `None` for documents already complete.
    files: Vec<Option<Arc<File>>>,
    /// The partial file of each document, for error messages.
    paths: Vec<PathBuf>,
    held: Mutex<Vec<Vec<bool>>>,
    /// Per document, the whole-document SHA-256 computed as chunks arrive in order, so that
    /// finishing does not need a second pass over the file. Lock order: `whole[d]` before `held`.
    whole: Vec<Mutex<WholeHash>>,
    /// Chunks that arrived although already held.
    resent: AtomicU64,
    failed: Mutex<Option<String>>,
    /// Cancelled when the transfer fails or reaches a final state: every stream of it stops.
    pub cancel: CancellationToken,
    _slot: OwnedSemaphorePermit,
}

/// The in-order prefix of a document hashed so far.
struct WholeHash {
    next: u64,
    hasher: Sha256,
}

impl Session {
    fn is_held(&self, d: usize, i: u64) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(d)
            .and_then(|h| h.get(i as usize))
            .copied()
            .unwrap_or(false)
    }

    /// Feeds the whole-document hash: chunk `i` from memory if it is next, then every chunk
    /// already held after it from the file (out-of-order arrivals, or a resume). Blocking.
    fn advance(&self, d: usize, i: u64, data: Option<&[u8]>, file: &File) -> std::io::Result<()> {
        let m = &self.manifest;
        let Some(doc) = m.documents.get(d) else { return Ok(()) };
        let Some(slot) = self.whole.get(d) else { return Ok(()) };
        let mut w = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(data) = data
            && w.next == i
        {
            w.hasher.update(data);
            w.next += 1;
        }
        let n = doc.chunks(m.chunk_size);
        let mut buf = Vec::new();
        while w.next < n && self.is_held(d, w.next) {
            let (start, len) = chunk_range(doc.size, m.chunk_size, w.next);
            blobs::read_at(file, &mut buf, start, len)?;
            w.hasher.update(&buf);
            w.next += 1;
        }
        Ok(())
    }

    /// The whole-document SHA-256 (hex), hashing from the file whatever is not hashed yet.
    fn whole_sha256(&self, d: usize, file: &File) -> std::io::Result<String> {
        self.advance(d, u64::MAX, None, file)?;
        let w = self.whole[d].lock().unwrap_or_else(PoisonError::into_inner);
        let n = self.manifest.documents[d].chunks(self.manifest.chunk_size);
        if w.next < n {
            return Err(std::io::Error::other("document incomplete"));
        }
        Ok(hex::encode(w.hasher.clone().finalize()))
    }

    fn all_held(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .all(|d| d.iter().all(|h| *h))
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

pub(super) async fn handle(engine: &Arc<Engine>, peer: PeerId, mut stream: Stream) {
    let mut buf = Vec::new();
    let kind = match tokio::time::timeout(FIRST_FRAME, wire::read_frame(&mut stream, &mut buf, MAX_CONTROL_FRAME)).await
    {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "transfer stream ended before its first frame"),
        Err(_) => return tracing::debug!(%peer, "transfer stream sent nothing; closed"),
    };
    match kind {
        Kind::Manifest => control(engine, peer, stream, buf).await,
        Kind::Join => data(engine, peer, stream, buf).await,
        other => {
            let _ = send_error(
                &mut stream,
                &format!("a stream must begin with a manifest or a join, not {other:?}"),
            )
            .await;
        }
    }
}

async fn send_error(s: &mut Stream, reason: &str) -> Result<(), FrameError> {
    wire::send_msg(
        s,
        Kind::Error,
        &WireError {
            reason: reason.to_owned(),
        },
    )
    .await?;
    let _ = s.close().await;
    Ok(())
}

async fn refuse(s: &mut Stream, reason: &str, retry_later: bool) {
    let _ = wire::send_msg(
        s,
        Kind::Reject,
        &Reject {
            reason: reason.to_owned(),
            retry_later,
        },
    )
    .await;
    let _ = s.close().await;
}

/// Outcome of the inbox policy for one offer.
enum Admit {
    Go,
    Refuse(String, bool),
    Ask(watch::Receiver<Option<bool>>),
}

async fn control(engine: &Arc<Engine>, peer: PeerId, mut s: Stream, mut buf: Vec<u8>) {
    let signed: Signed = match wire::decode(Kind::Manifest, Kind::Manifest, "manifest", &buf) {
        Ok(x) => x,
        Err(e) => return drop(send_error(&mut s, &e.to_string()).await),
    };
    let m = match Manifest::open(&peer, &signed) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a transfer manifest");
            return drop(send_error(&mut s, &format!("manifest refused: {e}")).await);
        }
    };
    let me = engine.local.to_string();
    if !m.recipients.is_empty() && !m.recipients.iter().any(|r| r.peer_id == me) {
        return refuse(&mut s, "this transfer is not addressed to this peer", false).await;
    }
    let cfg = &engine.cfg;
    if m.total_bytes() > cfg.max_transfer_bytes {
        let why = format!(
            "transfer of {} bytes is over this recipient's limit of {}",
            m.total_bytes(),
            cfg.max_transfer_bytes
        );
        return refuse(&mut s, &why, false).await;
    }
    if let Some(d) = m.documents.iter().find(|d| d.size > cfg.max_document_bytes) {
        let why = format!(
            "document {} of {} bytes is over this recipient's limit of {}",
            d.id, d.size, cfg.max_document_bytes
        );
        return refuse(&mut s, &why, false).await;
    }
    let admit = match admit(engine, &peer, &m, &signed).await {
        Ok(a) => a,
        Err(e) => return refuse(&mut s, &format!("recipient error: {}", e.message), true).await,
    };
    match admit {
        Admit::Go => {}
        Admit::Refuse(why, retry) => return refuse(&mut s, &why, retry).await,
        Admit::Ask(mut rx) => {
            let decided = tokio::time::timeout(ASK_HOLD, rx.wait_for(Option::is_some)).await;
            match decided.ok().and_then(Result::ok).and_then(|v| *v) {
                Some(true) => {}
                Some(false) => return refuse(&mut s, "rejected by the recipient", false).await,
                None => return refuse(&mut s, "waiting for the recipient to accept", true).await,
            }
        }
    }
    let Ok(slot) = engine.incoming_slots.clone().try_acquire_owned() else {
        return refuse(&mut s, "the recipient is busy with other transfers", true).await;
    };
    let rec = match engine.load(&m.transfer_id).await {
        Ok(Some(r)) => r,
        _ => return refuse(&mut s, "recipient error: transfer record missing", true).await,
    };
    let session = match open_session(engine, &rec, peer, m, slot).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(transfer = %rec.id, error = %e, "could not prepare the partial files");
            return refuse(&mut s, "the recipient cannot store the documents right now", true).await;
        }
    };
    let held: Vec<serde_bytes::ByteBuf> = {
        let held = session.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter().map(|d| serde_bytes::ByteBuf::from(bitmap(d))).collect()
    };
    if wire::send_msg(&mut s, Kind::Accept, &Accept { held }).await.is_err() {
        return unregister(engine, &session);
    }
    // Wait for Done (or for a failure of the data path).
    let done = tokio::select! {
        () = session.cancel.cancelled() => Err(session.failure().unwrap_or_else(|| "transfer stopped".into())),
        r = tokio::time::timeout(IDLE.saturating_mul(30), wire::read_frame(&mut s, &mut buf, 64)) => match r {
            Ok(Ok(Kind::Done)) => Ok(()),
            Ok(Ok(k)) => Err(format!("expected done, got {k:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the sender went quiet".into()),
        },
    };
    if let Err(why) = done {
        tracing::debug!(transfer = %session.id, %why, "transfer attempt ended before done");
        let _ = send_error(&mut s, &why).await;
        return unregister(engine, &session);
    }
    if !session.all_held() {
        let _ = send_error(&mut s, "done, but chunks are missing; send them again").await;
        return unregister(engine, &session);
    }
    match finish(engine, &session, &signed.bytes).await {
        Ok(receipt) => {
            let _ = wire::send_msg(&mut s, Kind::Receipt, &receipt).await;
            let _ = s.close().await;
        }
        Err(why) => {
            let _ = send_error(&mut s, &why).await;
        }
    }
    unregister(engine, &session);
}

/// Bit i of the result is set when chunk i is held.
fn bitmap(held: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; held.len().div_ceil(8)];
    for (i, h) in held.iter().enumerate() {
        if *h {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

async fn admit(
    engine: &Arc<Engine>,
    peer: &PeerId,
    m: &Manifest,
    signed: &Signed,
) -> Result<Admit, firma_ipc::IpcError> {
    let existing = engine.load(&m.transfer_id).await?;
    let rec = match existing {
        Some(r) => {
            if r.direction != TransferDir::Incoming || r.peer_id != peer.to_string() || r.manifest != signed.bytes {
                return Ok(Admit::Refuse("transfer id already in use here".into(), false));
            }
            r
        }
        None => {
            let policy = if engine.is_known(&peer.to_string()).await? {
                InboxPolicy::Accept
            } else {
                engine.cfg.unknown_peers
            };
            let phase = match policy {
                InboxPolicy::Reject => {
                    return Ok(Admit::Refuse(
                        "this recipient does not accept transfers from unknown peers".into(),
                        false,
                    ));
                }
                InboxPolicy::Accept => TransferPhase::Receiving,
                InboxPolicy::Ask => TransferPhase::Pending,
            };
            let now = now_ms();
            let rec = TransferRecord {
                id: m.transfer_id.clone(),
                direction: TransferDir::Incoming,
                phase,
                peer_id: peer.to_string(),
                protocol: PROTOCOL_V2.to_string(),
                manifest: signed.bytes.clone(),
                manifest_signature: signed.signature.clone(),
                docs_complete: vec![false; m.documents.len()],
                bytes_done: 0,
                chunks_resent: 0,
                created_ms: now,
                updated_ms: now,
                error: None,
                receipt: None,
            };
            let rec = if phase == TransferPhase::Pending {
                // Checked against the pending index in the transaction that stores it.
                if let Admission::Refused(why) = engine.insert_pending(rec.clone()).await? {
                    // Debug only: a flood of offers must not flood the log as well.
                    tracing::debug!(transfer = %rec.id, %peer, %why, "refused an offer from an unknown peer");
                    return Ok(Admit::Refuse(why, true));
                }
                rec
            } else {
                engine.insert(rec).await?
            };
            tracing::info!(transfer = %rec.id, %peer, ?phase, docs = m.documents.len(), bytes = m.total_bytes(), "incoming transfer");
            rec
        }
    };
    Ok(match rec.phase {
        TransferPhase::Receiving | TransferPhase::Received => Admit::Go,
        TransferPhase::Pending => {
            let rx = engine
                .decisions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(rec.id.clone())
                .or_insert_with(|| watch::channel(None).0)
                .subscribe();
            // Decided between the load above and subscribing?
            match engine.load(&rec.id).await?.map(|r| r.phase) {
                Some(TransferPhase::Receiving) => Admit::Go,
                Some(TransferPhase::Pending) => Admit::Ask(rx),
                _ => Admit::Refuse("rejected by the recipient".into(), false),
            }
        }
        _ => Admit::Refuse(
            rec.error
                .unwrap_or_else(|| "this transfer was rejected or cancelled by the recipient".into()),
            false,
        ),
    })
}

async fn open_session(
    engine: &Arc<Engine>,
    rec: &TransferRecord,
    peer: PeerId,
    m: Manifest,
    slot: OwnedSemaphorePermit,
) -> std::io::Result<Arc<Session>> {
    let blobs = engine.blobs.clone();
    let (id, complete, m2) = (rec.id.clone(), rec.docs_complete.clone(), m.clone());
    let (files, paths, held) = tokio::task::spawn_blocking(move || {
        blobs.mkdir(&blobs.incoming_dir(&id))?;
        let mut files = Vec::new();
        let mut paths = Vec::new();
        let mut held = Vec::new();
        for (i, d) in m2.documents.iter().enumerate() {
            let n = d.chunks(m2.chunk_size) as usize;
            if complete.get(i).copied().unwrap_or(false) {
                files.push(None);
                paths.push(blobs.incoming_doc(&id, i, &d.file_name, false));
                held.push(vec![true; n]);
                continue;
            }
            let path = blobs.incoming_doc(&id, i, &d.file_name, true);
            // Stopped between moving a verified document into place and recording it: take the
            // file back as partial, so its chunks count as held instead of arriving again.
            let done_path = blobs.incoming_doc(&id, i, &d.file_name, false);
            if !path.exists() && done_path.exists() {
                std::fs::rename(&done_path, &path)?;
            }
            let f = blobs::open_part(&path, d.size)?;
            held.push(blobs::scan_part(&path, d, m2.chunk_size)?);
            files.push(Some(Arc::new(f)));
            paths.push(path);
        }
        Ok::<_, std::io::Error>((files, paths, held))
    })
    .await
    .map_err(std::io::Error::other)??;
    let per_doc: Vec<u64> = m
        .documents
        .iter()
        .zip(&held)
        .map(|(d, h)| {
            h.iter()
                .enumerate()
                .filter(|(_, x)| **x)
                .map(|(i, _)| chunk_range(d.size, m.chunk_size, i as u64).1 as u64)
                .sum()
        })
        .collect();
    let sizes: Vec<u64> = m.documents.iter().map(|d| d.size).collect();
    engine.live_for(&rec.id, &sizes).reset(&per_doc);
    let session = Arc::new(Session {
        id: rec.id.clone(),
        peer,
        manifest: m,
        files,
        paths,
        whole: (0..held.len())
            .map(|_| {
                Mutex::new(WholeHash {
                    next: 0,
                    hasher: Sha256::new(),
                })
            })
            .collect(),
        held: Mutex::new(held),
        resent: AtomicU64::new(0),
        failed: Mutex::new(None),
        cancel: engine.shutdown.child_token(),
        _slot: slot,
    });
    let old = engine
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(rec.id.clone(), session.clone());
    if let Some(old) = old {
        old.cancel.cancel();
    }
    Ok(session)
}

fn unregister(engine: &Engine, session: &Arc<Session>) {
    let mut map = engine.sessions.lock().unwrap_or_else(PoisonError::into_inner);
    if map.get(&session.id).is_some_and(|s| Arc::ptr_eq(s, session)) {
        map.remove(&session.id);
    }
}

/// Verifies every document whole, renames it into place, and signs the receipt.
async fn finish(engine: &Arc<Engine>, session: &Arc<Session>, manifest_bytes: &[u8]) -> Result<Signed, String> {
    let blobs = engine.blobs.clone();
    let rec = engine
        .load(&session.id)
        .await
        .ok()
        .flatten()
        .ok_or("transfer record missing")?;
    if rec.phase == TransferPhase::Received
        && let Some(r) = &rec.receipt
    {
        return Ok(Signed {
            bytes: r.bytes.clone(),
            signature: r.signature.clone(),
        });
    }
    let (s, complete) = (session.clone(), rec.docs_complete.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let (m, id) = (&s.manifest, &s.id);
        for (i, d) in m.documents.iter().enumerate() {
            if complete.get(i).copied().unwrap_or(false) {
                continue;
            }
            let part = blobs.incoming_doc(id, i, &d.file_name, true);
            let Some(file) = s.files.get(i).cloned().flatten() else {
                return Err(format!("document {} has no partial file", d.id));
            };
            let sha = s.whole_sha256(i, &file).map_err(|e| e.to_string())?;
            if sha != d.sha256 {
                return Err(format!("document {} failed its SHA-256 check", d.id));
            }
            std::fs::rename(&part, blobs.incoming_doc(id, i, &d.file_name, false)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Err(why) = checked {
        fail(engine, session, &why).await;
        return Err(why);
    }
    let receipt = Receipt {
        transfer_id: session.id.clone(),
        signer: engine.local.to_string(),
        manifest_sha256: sha256_hex(manifest_bytes),
        document_sha256: session.manifest.documents.iter().map(|d| d.sha256.clone()).collect(),
        at_ms: now_ms(),
    };
    let signed = receipt.sign(&engine.key).map_err(|e| e.to_string())?;
    let total = session.manifest.total_bytes();
    let resent = session.resent.load(Ordering::Relaxed);
    engine
        .update(&session.id, |r| {
            r.phase = TransferPhase::Received;
            r.error = None;
            r.docs_complete = vec![true; r.docs_complete.len()];
            r.bytes_done = total;
            r.chunks_resent += resent;
            r.receipt = Some(ReceiptRecord {
                bytes: signed.bytes.clone(),
                signature: signed.signature.clone(),
                signer: receipt.signer.clone(),
                manifest_sha256: receipt.manifest_sha256.clone(),
                document_sha256: receipt.document_sha256.clone(),
                at_ms: receipt.at_ms,
                verified: true,
            });
            Ok(())
        })
        .await
        .map_err(|e| e.message)?;
    tracing::info!(transfer = %session.id, peer = %session.peer, bytes = total, "transfer received and verified");
    Ok(signed)
}

/// Rejects the transfer for good: its files deleted, nothing marked complete.
async fn fail(engine: &Arc<Engine>, session: &Arc<Session>, why: &str) {
    {
        let mut f = session.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if f.is_some() {
            return;
        }
        *f = Some(why.to_owned());
    }
    tracing::warn!(transfer = %session.id, peer = %session.peer, %why, "incoming transfer rejected");
    // Record the verdict before cancelling the session: this may run inside one of the session's
    // own tasks, which the cancel ends at its next await, and a verdict that never reaches the
    // store lets the sender's retry be admitted again.
    let _ = engine
        .set_phase(&session.id, TransferPhase::Rejected, Some(why.to_owned()))
        .await;
    engine.discard_incoming(&session.id).await;
    session.cancel.cancel();
}

async fn data(engine: &Arc<Engine>, peer: PeerId, mut s: Stream, buf: Vec<u8>) {
    let join: Join = match wire::decode(Kind::Join, Kind::Join, "join", &buf) {
        Ok(j) => j,
        Err(e) => return drop(send_error(&mut s, &e.to_string()).await),
    };
    let session = engine
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&join.transfer_id)
        .filter(|x| x.peer == peer)
        .cloned();
    let Some(session) = session else {
        return drop(send_error(&mut s, "no such transfer in progress from you").await);
    };
    let live = engine.live_of(&session.id);
    let (mut rd, mut wr) = s.split();
    // Reading and storing overlap: while one chunk is verified and written on the blocking pool,
    // the next ones are read off the stream (so the sender's window keeps moving). At most
    // PIPELINE + 1 chunk buffers per stream.
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(PIPELINE);
    let (free_tx, mut free_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(PIPELINE + 1);
    for _ in 0..=PIPELINE {
        let _ = free_tx.try_send(Vec::new());
    }
    // `async move`: the reader owns `full_tx`, so when it ends the processor drains and ends.
    let (sref, rd) = (&session, &mut rd);
    let reader = async move {
        loop {
            let Some(mut buf) = free_rx.recv().await else {
                return Err(End::Quiet);
            };
            match tokio::time::timeout(IDLE, wire::read_frame(rd, &mut buf, MAX_DATA_FRAME)).await {
                Ok(Ok(Kind::Chunk)) => {
                    if full_tx.send(buf).await.is_err() {
                        return Err(End::Quiet);
                    }
                }
                Ok(Ok(other)) => return Err(End::Tell(format!("expected a chunk, got {other:?}"))),
                // The sender sent everything it had for this stream: let the rest drain.
                Ok(Err(FrameError::Closed)) => return Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(transfer = %sref.id, error = %e, "data stream ended");
                    return Err(End::Quiet);
                }
                Err(_) => {
                    tracing::debug!(transfer = %sref.id, "data stream idle; closed");
                    return Err(End::Quiet);
                }
            }
        }
    };
    let processor = async {
        while let Some(buf) = full_rx.recv().await {
            match on_chunk(engine, &session, buf).await {
                Ok((b, d, i, len, fresh)) => {
                    let _ = free_tx.try_send(b);
                    if fresh {
                        if let Some(l) = &live {
                            l.add(&engine.core, d as usize, len);
                        }
                    } else {
                        session.resent.fetch_add(1, Ordering::Relaxed);
                    }
                    if wire::send_ack(&mut wr, d, i).await.is_err() {
                        return Err(End::Quiet);
                    }
                }
                Err(ChunkFault::Peer(why)) => {
                    fail(engine, &session, &why).await;
                    return Err(End::Tell(why));
                }
                Err(ChunkFault::Local(why)) => {
                    tracing::warn!(transfer = %session.id, %why, "could not store a chunk; the sender will retry");
                    return Err(End::Tell(format!("the recipient could not store a chunk: {why}")));
                }
            }
        }
        Ok(())
    };
    let outcome = tokio::select! {
        () = session.cancel.cancelled() => Err(End::Tell(session.failure().unwrap_or_else(|| "transfer stopped".into()))),
        r = futures::future::try_join(reader, processor) => r.map(|_| ()),
    };
    match outcome {
        // Every chunk that arrived is stored and acknowledged; our end of stream says so.
        Ok(()) => {
            let _ = wr.close().await;
        }
        Err(End::Tell(reason)) => {
            let _ = wire::send_msg(&mut wr, Kind::Error, &WireError { reason }).await;
        }
        Err(End::Quiet) => {}
    }
}

/// Checks one chunk frame against the manifest and writes it; returns the buffer for reuse,
/// the chunk's position and length, and whether it was new.
/// How a data stream ended badly: quietly (the stream is gone) or with a reason for the sender.
enum End {
    Quiet,
    Tell(String),
}

/// Chunks read ahead on one data stream while the previous one is being stored.
const PIPELINE: usize = 2;

/// Why a chunk was not taken: the peer's fault (the transfer is rejected) or ours (the stream
/// ends and the sender retries later; nothing is held against it).
enum ChunkFault {
    Peer(String),
    Local(String),
}

async fn on_chunk(
    _engine: &Arc<Engine>,
    session: &Arc<Session>,
    frame: Vec<u8>,
) -> Result<(Vec<u8>, u32, u32, u64, bool), ChunkFault> {
    let (d, i) = wire::parse_chunk_head(&frame).map_err(|e| ChunkFault::Peer(e.to_string()))?;
    let m = &session.manifest;
    let doc = m
        .documents
        .get(d as usize)
        .ok_or_else(|| ChunkFault::Peer(format!("chunk for document {d}, which does not exist")))?;
    if u64::from(i) >= doc.chunks(m.chunk_size) {
        return Err(ChunkFault::Peer(format!(
            "chunk {i} of document {} does not exist",
            doc.id
        )));
    }
    let (offset, len) = chunk_range(doc.size, m.chunk_size, u64::from(i));
    if frame.len() - 8 != len {
        return Err(ChunkFault::Peer(format!(
            "chunk {i} of document {} has the wrong length",
            doc.id
        )));
    }
    let already = session
        .held
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(d as usize)
        .and_then(|h| h.get(i as usize))
        .copied()
        .unwrap_or(true);
    if already {
        return Ok((frame, d, i, len as u64, false));
    }
    let Some(file) = session.files.get(d as usize).cloned().flatten() else {
        return Ok((frame, d, i, len as u64, false));
    };
    let s = session.clone();
    let (frame, result) = tokio::task::spawn_blocking(move || {
        let doc = &s.manifest.documents[d as usize];
        if !chunk_matches(doc, u64::from(i), &frame[8..]) {
            let why = format!("chunk {i} of document {} failed verification", doc.id);
            return (frame, Err(ChunkFault::Peer(why)));
        }
        if let Err(e) = file.write_all_at(&frame[8..], offset) {
            let path = s
                .paths
                .get(d as usize)
                .map_or_else(String::new, |p| p.display().to_string());
            let hint = match e.kind() {
                std::io::ErrorKind::StorageFull => {
                    "; free space under the state dir and the sender resumes on its next try"
                }
                _ => "",
            };
            return (
                frame,
                Err(ChunkFault::Local(format!("writing chunk {i} to {path}: {e}{hint}"))),
            );
        }
        if let Some(slot) = s
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(d as usize)
            .and_then(|h| h.get_mut(i as usize))
        {
            *slot = true;
        }
        let r = s
            .advance(d as usize, u64::from(i), Some(&frame[8..]), &file)
            .map_err(|e| ChunkFault::Local(format!("reading back: {e}")));
        (frame, r)
    })
    .await
    .map_err(|e| ChunkFault::Local(e.to_string()))?;
    result?;
    Ok((frame, d, i, len as u64, true))
}

#[cfg(test)]
mod tests {
    use super::bitmap;

    #[test]
    fn bitmap_sets_bit_i_for_chunk_i() {
        assert_eq!(
            bitmap(&[true, false, false, true, false, false, false, false, true]),
            vec![0b1001, 1]
        );
        assert!(bitmap(&[]).is_empty());
    }
}
