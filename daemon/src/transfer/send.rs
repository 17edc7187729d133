//! One delivery attempt of an outgoing transfer over v2: connect, offer the signed manifest,
//! stream the chunks the recipient lacks over several streams, collect the signed receipt.
//! The outbox (outbox.rs) decides when to attempt and what an outcome means for the schedule.
//!
//! Data path: every data stream takes the next missing chunk from a shared cursor, reads it
//! from the file on the blocking pool into a buffer it reuses, and writes it as one frame. A
//! second task per stream reads the recipient's acks (sent after the chunk is verified and
//! written), which drive progress and the acked set used to count re-sent chunks. Memory per
//! stream: one chunk buffer; yamux's flow control bounds what is in flight.

use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::OpenStreamError;
use tokio_util::sync::CancellationToken;

use super::manifest::{Manifest, Receipt, chunk_range};
use super::wire::{self, Accept, FrameError, Join, Kind, MAX_CONTROL_FRAME, Reject, Signed};
use super::{Engine, PROTOCOL_V1, PROTOCOL_V2, blobs, legacy};
use crate::store::{ReceiptRecord, TransferPhase, TransferRecord};

/// Opening a stream (protocol negotiation included).
const OPEN_DEADLINE: Duration = Duration::from_secs(20);
/// The recipient may hold our offer while its operator decides (inbox policy `ask`).
const ANSWER_DEADLINE: Duration = super::receive::ASK_HOLD.saturating_add(Duration::from_secs(30));
/// A pending transfer's detail while the recipient has the offer and has not answered.
const OFFERED: &str = "offered; waiting for the recipient to accept it";
/// No ack for this long on a data stream: the link is dead even if TCP has not noticed.
const ACK_DEADLINE: Duration = Duration::from_secs(60);

/// What an attempt came to; the outbox turns it into a state and a schedule.
#[derive(Debug)]
pub(crate) enum Outcome {
    Delivered,
    /// Final: no retry (rejected, forged, impossible).
    Failed(String),
    /// Try again later with backoff (offline, connection lost, busy).
    Retry(String),
    /// The recipient is deciding; ask again soon.
    Wait(String),
    /// Cancelled by an operator or shutdown.
    Stopped,
}

pub(crate) async fn attempt(engine: &Arc<Engine>, rec: TransferRecord, cancel: &CancellationToken) -> Outcome {
    let Ok(peer) = rec.peer_id.parse::<PeerId>() else {
        return Outcome::Failed(format!("recipient `{}` is not a peer id", rec.peer_id));
    };
    let m = match Manifest::decode(&rec.manifest) {
        Ok(m) => m,
        Err(e) => return Outcome::Failed(format!("stored manifest unreadable: {e}")),
    };
    let pid = rec.peer_id.clone();
    let protocols = engine
        .core
        .read(move |s| s.get_peer(&pid))
        .await
        .ok()
        .flatten()
        .map(|p| p.protocols)
        .unwrap_or_default();
    let speaks = |p: &libp2p::StreamProtocol| protocols.iter().any(|x| x == p.as_ref());
    let legacy_only = speaks(&PROTOCOL_V1) && !speaks(&PROTOCOL_V2);
    if let Err(e) = engine.core.net.dial(rec.peer_id.clone()).await {
        return Outcome::Retry(format!("recipient not reachable: {}", e.message));
    }
    if legacy_only {
        return legacy::send(engine, &rec, &m, peer).await;
    }
    let mut control = engine.streams.clone();
    let stream = match tokio::time::timeout(OPEN_DEADLINE, control.open_stream(peer, PROTOCOL_V2)).await {
        Err(_) => return Outcome::Retry("opening a stream to the recipient timed out".into()),
        // Identify said it speaks v2: it is starting up or busy, not an upstream peer. Falling
        // back would deliver without a receipt, so try v2 again later.
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) if speaks(&PROTOCOL_V2) => {
            return Outcome::Retry("the recipient does not take v2 streams yet; it may be starting".into());
        }
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
            // No identify information said otherwise: an upstream peer speaks only v1.
            return legacy::send(engine, &rec, &m, peer).await;
        }
        Ok(Err(e)) => return Outcome::Retry(e.to_string()),
        Ok(Ok(s)) => s,
    };
    tokio::select! {
        () = cancel.cancelled() => Outcome::Stopped,
        o = deliver(engine, &rec, &m, peer, stream, cancel) => o,
    }
}

fn frame_outcome(what: &str, e: FrameError) -> Outcome {
    match e {
        FrameError::Malformed { detail, .. } if detail.starts_with("the peer gave up") => {
            Outcome::Retry(format!("{what}: {detail}"))
        }
        other => Outcome::Retry(format!("{what}: {other}")),
    }
}

async fn deliver(
    engine: &Arc<Engine>,
    rec: &TransferRecord,
    m: &Manifest,
    peer: PeerId,
    mut ctl: Stream,
    cancel: &CancellationToken,
) -> Outcome {
    let mut buf = Vec::new();
    let offer = Signed {
        bytes: rec.manifest.clone(),
        signature: rec.manifest_signature.clone(),
    };
    if let Err(e) = wire::send_msg(&mut ctl, Kind::Manifest, &offer).await {
        return frame_outcome("sending the manifest", e);
    }
    // The recipient may hold the offer for its operator (inbox `ask`): say so meanwhile, rather
    // than let the transfer read as if the recipient were unreachable.
    let _ = engine
        .update(&rec.id, |r| {
            if r.phase == TransferPhase::Pending {
                r.error = Some(OFFERED.to_owned());
            }
            Ok(())
        })
        .await;
    let kind =
        match tokio::time::timeout(ANSWER_DEADLINE, wire::read_frame(&mut ctl, &mut buf, MAX_CONTROL_FRAME)).await {
            Err(_) => return Outcome::Retry("the recipient did not answer the offer".into()),
            Ok(Err(e)) => return frame_outcome("waiting for the answer", e),
            Ok(Ok(k)) => k,
        };
    let accept: Accept = match kind {
        Kind::Reject => {
            return match wire::decode::<Reject>(kind, Kind::Reject, "reject", &buf) {
                Ok(r) if r.retry_later => Outcome::Wait(clip(&r.reason)),
                Ok(r) => Outcome::Failed(format!("rejected by the recipient: {}", clip(&r.reason))),
                Err(e) => frame_outcome("reading the answer", e),
            };
        }
        Kind::Error => {
            let e: Result<wire::WireError, _> = wire::decode(kind, Kind::Error, "error", &buf);
            return Outcome::Failed(format!(
                "the recipient refused the manifest: {}",
                e.map_or_else(|e| e.to_string(), |e| clip(&e.reason))
            ));
        }
        _ => match wire::decode(kind, Kind::Accept, "accept", &buf) {
            Ok(a) => a,
            Err(e) => return frame_outcome("reading the answer", e),
        },
    };
    if accept.held.len() != m.documents.len() {
        return Outcome::Retry("the recipient's accept does not match the manifest".into());
    }
    // What is missing, and how much of it the recipient had acknowledged before.
    let mut missing = Vec::new();
    let mut held_bytes = Vec::new();
    let acked_before = engine
        .acked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&rec.id)
        .cloned();
    let mut resent = 0u64;
    for (d, doc) in m.documents.iter().enumerate() {
        let bits = &accept.held[d];
        let mut held = 0u64;
        for i in 0..doc.chunks(m.chunk_size) {
            let has = bits.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0);
            let (_, len) = chunk_range(doc.size, m.chunk_size, i);
            if has {
                held += len as u64;
            } else {
                missing.push((d as u32, i as u32));
                if acked_before
                    .as_ref()
                    .and_then(|a| a.get(d))
                    .and_then(|a| a.get(i as usize))
                    .copied()
                    .unwrap_or(false)
                {
                    resent += 1;
                }
            }
        }
        held_bytes.push(held);
    }
    let sizes: Vec<u64> = m.documents.iter().map(|d| d.size).collect();
    let live = engine.live_for(&rec.id, &sizes);
    live.reset(&held_bytes);
    if engine
        .update(&rec.id, |r| {
            if !super::is_final(r.phase) {
                r.phase = TransferPhase::Sending;
                r.error = None;
                r.chunks_resent += resent;
            }
            Ok(())
        })
        .await
        .is_err()
    {
        return Outcome::Retry("could not record the transfer's progress".into());
    }
    if !missing.is_empty()
        && let Err(o) = send_chunks(engine, rec, m, peer, missing, cancel).await
    {
        return o;
    }
    if let Err(e) = wire::send_empty(&mut ctl, Kind::Done).await {
        return frame_outcome("sending done", e);
    }
    let _ = engine.set_phase(&rec.id, TransferPhase::Sent, None).await;
    // The recipient hashes every document whole before it signs; allow for large ones.
    let hash_time = Duration::from_secs(60 + m.total_bytes() / (50 << 20));
    let signed: Signed =
        match tokio::time::timeout(hash_time, wire::recv_msg(&mut ctl, &mut buf, Kind::Receipt, "receipt")).await {
            Err(_) => return Outcome::Retry("no receipt from the recipient".into()),
            Ok(Err(e)) => return frame_outcome("waiting for the receipt", e),
            Ok(Ok(s)) => s,
        };
    let _ = ctl.close().await;
    let receipt = match Receipt::open(&peer, &signed, &rec.manifest, m) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("the recipient's receipt does not verify: {e}")),
    };
    let total = m.total_bytes();
    let stored = engine
        .update(&rec.id, |r| {
            if super::is_final(r.phase) {
                return Ok(());
            }
            r.phase = TransferPhase::Delivered;
            r.error = None;
            r.bytes_done = total;
            r.docs_complete = vec![true; r.docs_complete.len()];
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
        .await;
    match stored {
        Ok(_) => Outcome::Delivered,
        Err(e) => Outcome::Retry(format!("could not store the receipt: {}", e.message)),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(512).collect()
}

/// State shared by the data streams of one attempt.
struct Shared {
    missing: Vec<(u32, u32)>,
    next: AtomicUsize,
    files: Vec<Arc<File>>,
    acked_count: AtomicU64,
}

async fn send_chunks(
    engine: &Arc<Engine>,
    rec: &TransferRecord,
    m: &Manifest,
    peer: PeerId,
    missing: Vec<(u32, u32)>,
    cancel: &CancellationToken,
) -> Result<(), Outcome> {
    let blobs = engine.blobs.clone();
    let tid = rec.id.clone();
    let n_docs = m.documents.len();
    let files = tokio::task::spawn_blocking(move || {
        (0..n_docs)
            .map(|i| File::open(blobs.outgoing_doc(&tid, i)).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Outcome::Retry(format!("file task: {e}")))?
    .map_err(|e| Outcome::Failed(format!("outgoing document missing from the blob store: {e}")))?;
    let count = missing.len();
    let shared = Arc::new(Shared {
        missing,
        next: AtomicUsize::new(0),
        files,
        acked_count: AtomicU64::new(0),
    });
    let streams = (engine.cfg.parallel_streams as usize).clamp(1, count);
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (engine, shared, m, id) = (engine.clone(), shared.clone(), m.clone(), rec.id.clone());
        // Spawned, so that streams run in parallel; the token ends them with the attempt.
        let cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => Err("stopped".to_owned()),
                r = data_stream(&engine, &shared, &m, &id, peer) => r,
            }
        }));
    }
    let mut first_err = None;
    for t in tasks {
        let r = t.await.unwrap_or_else(|e| Err(format!("data stream task: {e}")));
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(Outcome::Retry(e));
    }
    if shared.acked_count.load(Ordering::Relaxed) != count as u64 {
        return Err(Outcome::Retry("not every chunk was acknowledged".into()));
    }
    Ok(())
}

async fn data_stream(
    engine: &Arc<Engine>,
    shared: &Arc<Shared>,
    m: &Manifest,
    id: &str,
    peer: PeerId,
) -> Result<(), String> {
    let mut control = engine.streams.clone();
    let mut stream = tokio::time::timeout(OPEN_DEADLINE, control.open_stream(peer, PROTOCOL_V2))
        .await
        .map_err(|_| "opening a data stream timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    wire::send_msg(
        &mut stream,
        Kind::Join,
        &Join {
            transfer_id: id.to_owned(),
        },
    )
    .await
    .map_err(|e| format!("joining: {e}"))?;
    let (mut rd, mut wr) = stream.split();
    let sent = AtomicU64::new(0);
    let finished = std::sync::atomic::AtomicBool::new(false);
    // Acks, until the recipient closes the stream: it does so after acknowledging everything
    // that arrived before our end of stream. Reading is never cancelled mid-frame.
    let acks = async {
        let mut buf = Vec::with_capacity(16);
        let mut acked = 0u64;
        let live = engine.live_of(id);
        loop {
            let kind = match tokio::time::timeout(ACK_DEADLINE, wire::read_frame(&mut rd, &mut buf, 64)).await {
                Err(_) => return Err("no acknowledgement from the recipient in time".to_owned()),
                Ok(Err(FrameError::Closed)) => {
                    if finished.load(Ordering::Acquire) && acked == sent.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    return Err("the recipient closed a data stream early".to_owned());
                }
                Ok(Err(e)) => return Err(format!("reading acks: {e}")),
                Ok(Ok(k)) => k,
            };
            if kind == Kind::Error {
                let e: Result<wire::WireError, _> = wire::decode(kind, Kind::Error, "error", &buf);
                return Err(format!(
                    "the recipient stopped the transfer: {}",
                    e.map_or_else(|e| e.to_string(), |e| clip(&e.reason))
                ));
            }
            if kind != Kind::Ack {
                return Err(format!("expected an ack, got {kind:?}"));
            }
            let (d, i) = wire::parse_chunk_head(&buf).map_err(|e| e.to_string())?;
            let Some(doc) = m.documents.get(d as usize) else {
                return Err("ack for an unknown document".to_owned());
            };
            let (_, len) = chunk_range(doc.size, m.chunk_size, u64::from(i));
            acked += 1;
            shared.acked_count.fetch_add(1, Ordering::Relaxed);
            mark_acked(engine, id, m, d as usize, i as usize);
            if let Some(l) = &live {
                l.add(&engine.core, d as usize, len as u64);
            }
        }
    };
    let send = async {
        let mut buf = Vec::with_capacity(m.chunk_size as usize);
        loop {
            let k = shared.next.fetch_add(1, Ordering::Relaxed);
            let Some(&(d, i)) = shared.missing.get(k) else { break };
            let doc = &m.documents[d as usize];
            let (offset, len) = chunk_range(doc.size, m.chunk_size, u64::from(i));
            let file = shared.files[d as usize].clone();
            let mut b = std::mem::take(&mut buf);
            let (b, r) = tokio::task::spawn_blocking(move || {
                let r = blobs::read_at(&file, &mut b, offset, len);
                (b, r)
            })
            .await
            .map_err(|e| format!("read task: {e}"))?;
            buf = b;
            r.map_err(|e| format!("reading chunk {i} of document {}: {e}", doc.id))?;
            wire::send_chunk(&mut wr, d, i, &buf)
                .await
                .map_err(|e| format!("sending: {e}"))?;
            sent.fetch_add(1, Ordering::Release);
        }
        finished.store(true, Ordering::Release);
        // End of our half: the recipient acks what it has and closes its half.
        wr.close().await.map_err(|e| format!("closing: {e}"))?;
        Ok::<_, String>(())
    };
    // The first error ends both halves: a recipient that stopped reading must not leave the
    // writer blocked on a full window.
    futures::future::try_join(send, acks).await.map(|_| ())
}

fn mark_acked(engine: &Engine, id: &str, m: &Manifest, doc: usize, index: usize) {
    let mut acked = engine.acked.lock().unwrap_or_else(PoisonError::into_inner);
    let per_doc = acked.entry(id.to_owned()).or_insert_with(|| {
        m.documents
            .iter()
            .map(|d| vec![false; d.chunks(m.chunk_size) as usize])
            .collect()
    });
    if let Some(slot) = per_doc.get_mut(doc).and_then(|d| d.get_mut(index)) {
        *slot = true;
    }
}
