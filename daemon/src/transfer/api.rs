//! What the control API calls: uploads into the blob store, creating transfers, listing,
//! decisions (cancel / accept / reject) and downloads. The control service only authorises and
//! delegates here.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use firma_ipc::IpcError;
use firma_ipc::transfer::{
    MAX_IPC_CHUNK, NewTransfer, StagedDocument, TransferFilter, TransferInfo, TransferState, UploadStart,
};
use libp2p::PeerId;

use super::blobs::{self, BlobMeta};
use super::manifest::{MAX_DOCUMENTS, MAX_FILE_NAME, MAX_MESSAGE, MAX_MIME, Manifest, ManifestDoc, ManifestRecipient};
use super::{Engine, PROTOCOL_V2, is_final};
use crate::core::now_ms;
use crate::store::{TransferDir, TransferPhase, TransferRecord};

/// Uploads open at once; past this `upload_begin` is refused until one finishes.
const MAX_OPEN_UPLOADS: usize = 64;

/// A fresh random id: 32 hex digits.
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn check_id(what: &str, id: &str) -> Result<(), IpcError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(IpcError::invalid(format!("`{id}` is not a {what} id (32 hex digits)")))
    }
}

fn no_upload(id: &str, idle: std::time::Duration) -> IpcError {
    IpcError::not_found(format!(
        "no open upload {id}: it finished, or it received nothing for transfer.upload_idle_timeout ({}) \
         and was removed; begin a new one",
        humantime_serde::re::humantime::format_duration(idle)
    ))
}

fn io(e: std::io::Error) -> IpcError {
    IpcError::internal(e.to_string())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, IpcError> + Send + 'static) -> Result<T, IpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IpcError::internal(format!("blocking task failed: {e}")))?
}

impl Engine {
    pub async fn upload_begin(&self, start: UploadStart) -> Result<String, IpcError> {
        if start.file_name.is_empty() || start.file_name.len() > MAX_FILE_NAME {
            return Err(IpcError::invalid(format!(
                "file_name must be 1 to {MAX_FILE_NAME} bytes"
            )));
        }
        if start.mime_type.len() > MAX_MIME {
            return Err(IpcError::invalid(format!("mime_type is longer than {MAX_MIME} bytes")));
        }
        if start.size > self.cfg.max_document_bytes {
            return Err(IpcError::invalid(format!(
                "{} bytes is over transfer.max_document_bytes ({}); raise it in the daemon's config",
                start.size, self.cfg.max_document_bytes
            )));
        }
        let blobs = self.blobs.clone();
        let (idle, cap) = (self.cfg.upload_idle_timeout, self.cfg.max_staged_bytes);
        let _admitting = self.uploads_lock.lock().await;
        blocking(move || {
            // Abandoned uploads must not hold places or bytes until the next sweep.
            blobs.prune_idle(idle, super::STAGED_MAX_AGE);
            let idle_text = humantime_serde::re::humantime::format_duration(idle);
            if blobs.open_uploads() >= MAX_OPEN_UPLOADS {
                return Err(IpcError::unavailable(format!(
                    "{MAX_OPEN_UPLOADS} uploads are open; finish one first (an upload that receives nothing \
                     for transfer.upload_idle_timeout = {idle_text} is removed, and its place freed)"
                )));
            }
            let held = blobs.staged_bytes();
            if held.saturating_add(start.size) > cap {
                return Err(IpcError::unavailable(format!(
                    "staging {} more bytes would exceed transfer.max_staged_bytes ({cap}): {held} bytes are \
                     held by open uploads and staged documents not yet sent; send or finish those first \
                     (idle uploads go after {idle_text}, unsent staged documents after 7 days), or raise \
                     transfer.max_staged_bytes in the daemon's config",
                    start.size
                )));
            }
            let id = new_id();
            blobs::open_part(&blobs.upload_part(&id), 0).map_err(io)?;
            let meta = BlobMeta {
                file_name: start.file_name,
                size: start.size,
                mime_type: if start.mime_type.is_empty() {
                    "application/octet-stream".to_owned()
                } else {
                    start.mime_type
                },
                created_ms: now_ms(),
                sha256: None,
                chunk_size: 0,
                chunk_hashes_hex: String::new(),
            };
            blobs::write_meta(&blobs.upload_meta(&id), &meta).map_err(io)?;
            Ok(id)
        })
        .await
    }

    pub async fn upload_chunk(&self, id: String, offset: u64, data: Vec<u8>) -> Result<u64, IpcError> {
        check_id("upload", &id)?;
        if data.len() > MAX_IPC_CHUNK {
            return Err(IpcError::invalid(format!("chunks are at most {MAX_IPC_CHUNK} bytes")));
        }
        let blobs = self.blobs.clone();
        let idle = self.cfg.upload_idle_timeout;
        blocking(move || {
            let meta = blobs::read_meta(&blobs.upload_meta(&id)).map_err(|_| no_upload(&id, idle))?;
            let path = blobs.upload_part(&id);
            let f = fs::OpenOptions::new().write(true).mode(0o600).open(&path).map_err(io)?;
            let held = f.metadata().map_err(io)?.len();
            if offset > held {
                return Err(IpcError::invalid(format!(
                    "offset {offset} is past the {held} bytes held; continue from {held}"
                )));
            }
            let end = offset + data.len() as u64;
            if end > meta.size {
                return Err(IpcError::invalid(format!(
                    "{end} bytes would exceed the announced size {}",
                    meta.size
                )));
            }
            f.write_all_at(&data, offset).map_err(io)?;
            Ok(held.max(end))
        })
        .await
    }

    pub async fn upload_finish(&self, id: String) -> Result<StagedDocument, IpcError> {
        check_id("upload", &id)?;
        let blobs = self.blobs.clone();
        let chunk = self.cfg.chunk_size;
        let idle = self.cfg.upload_idle_timeout;
        blocking(move || {
            let meta_path = blobs.upload_meta(&id);
            let mut meta = blobs::read_meta(&meta_path).map_err(|_| no_upload(&id, idle))?;
            let part = blobs.upload_part(&id);
            let (sha, chunks, len) = blobs::hash_file(&part, chunk).map_err(io)?;
            if len != meta.size {
                return Err(IpcError::invalid(format!(
                    "upload {id} holds {len} of {} bytes; send the rest from offset {len}",
                    meta.size
                )));
            }
            meta.sha256 = Some(sha.clone());
            meta.chunk_size = chunk;
            meta.chunk_hashes_hex = hex::encode(chunks);
            fs::rename(&part, blobs.staged(&id)).map_err(io)?;
            blobs::write_meta(&blobs.staged_meta(&id), &meta).map_err(io)?;
            let _ = fs::remove_file(&meta_path);
            Ok(StagedDocument {
                id,
                file_name: meta.file_name,
                size: meta.size,
                mime_type: meta.mime_type,
                sha256: sha,
            })
        })
        .await
    }

    pub async fn send_transfer(&self, t: NewTransfer) -> Result<TransferInfo, IpcError> {
        if t.documents.is_empty() || t.documents.len() > MAX_DOCUMENTS {
            return Err(IpcError::invalid(format!("name 1 to {MAX_DOCUMENTS} staged documents")));
        }
        let mut peers: Vec<&str> = t.recipients.iter().map(|r| r.peer_id.as_str()).collect();
        peers.dedup();
        let [peer] = peers.as_slice() else {
            return Err(IpcError::invalid(
                "name exactly one recipient peer per transfer (send again for each further peer)",
            ));
        };
        let peer_id: PeerId = peer
            .parse()
            .map_err(|_| IpcError::invalid(format!("`{peer}` is not a peer id (expected 12D3KooW...)")))?;
        if peer_id == self.local {
            return Err(IpcError::invalid("this daemon cannot send a transfer to itself"));
        }
        if t.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
            return Err(IpcError::invalid(format!("message is longer than {MAX_MESSAGE} bytes")));
        }
        if t.deadline_ms.is_some_and(|d| d <= now_ms()) {
            return Err(IpcError::invalid("deadline_ms is in the past"));
        }
        for id in &t.documents {
            check_id("staged document", id)?;
        }
        if let Some(stray) = t
            .recipients
            .iter()
            .flat_map(|r| &r.document_ids)
            .find(|id| !t.documents.contains(id))
        {
            return Err(IpcError::invalid(format!(
                "recipient document `{stray}` is not one of this transfer's documents"
            )));
        }
        let id = super::api::new_id();
        let blobs = self.blobs.clone();
        let docs_ids = t.documents.clone();
        let tid = id.clone();
        let chunk = self.cfg.chunk_size;
        let docs = blocking(move || {
            blobs.mkdir(&blobs.outgoing_dir(&tid)).map_err(io)?;
            let mut out = Vec::new();
            for (i, d) in docs_ids.iter().enumerate() {
                let meta = blobs::read_meta(&blobs.staged_meta(d))
                    .map_err(|_| IpcError::not_found(format!("no staged document {d}; upload it first")))?;
                let fresh = meta.chunk_size == chunk && !meta.chunk_hashes_hex.is_empty();
                let (sha256, chunk_hashes) = match (&meta.sha256, fresh) {
                    (Some(s), true) => (
                        s.clone(),
                        hex::decode(&meta.chunk_hashes_hex).map_err(|e| IpcError::internal(e.to_string()))?,
                    ),
                    // Staged under another chunk size (config changed) or before chunk hashes were BLAKE3:
                    // hash again.
                    _ => {
                        let (s, c, _) = blobs::hash_file(&blobs.staged(d), chunk).map_err(io)?;
                        (s, c)
                    }
                };
                blobs::link_or_copy(&blobs.staged(d), &blobs.outgoing_doc(&tid, i)).map_err(io)?;
                out.push(ManifestDoc {
                    id: d.clone(),
                    file_name: meta.file_name,
                    size: meta.size,
                    mime_type: meta.mime_type,
                    sha256,
                    chunk_hashes,
                });
            }
            Ok(out)
        })
        .await?;
        let total: u64 = docs.iter().map(|d| d.size).sum();
        if total > self.cfg.max_transfer_bytes {
            return Err(IpcError::invalid(format!(
                "{total} bytes is over transfer.max_transfer_bytes ({})",
                self.cfg.max_transfer_bytes
            )));
        }
        let recipients = t
            .recipients
            .iter()
            .map(|r| ManifestRecipient {
                peer_id: r.peer_id.clone(),
                document_ids: if r.document_ids.is_empty() {
                    t.documents.clone()
                } else {
                    r.document_ids.clone()
                },
            })
            .collect();
        let now = now_ms();
        let m = Manifest {
            version: super::manifest::MANIFEST_VERSION,
            transfer_id: id.clone(),
            sender: self.local.to_string(),
            chunk_size: chunk,
            documents: docs,
            recipients,
            message: t.message,
            deadline_ms: t.deadline_ms,
            require_all_signatures: t.require_all_signatures,
            created_ms: now,
        };
        m.check().map_err(|e| IpcError::invalid(e.to_string()))?;
        let signed = m.sign(&self.key).map_err(|e| IpcError::internal(e.to_string()))?;
        let rec = TransferRecord {
            id: id.clone(),
            direction: TransferDir::Outgoing,
            phase: TransferPhase::Pending,
            peer_id: peer_id.to_string(),
            protocol: PROTOCOL_V2.to_string(),
            manifest: signed.bytes,
            manifest_signature: signed.signature,
            docs_complete: vec![false; m.documents.len()],
            bytes_done: 0,
            chunks_resent: 0,
            created_ms: now,
            updated_ms: now,
            error: None,
            receipt: None,
        };
        let rec = self.insert(rec).await?;
        self.outbox.wake();
        Ok(self.info(&rec))
    }

    pub async fn transfers(&self, filter: TransferFilter) -> Result<Vec<TransferInfo>, IpcError> {
        let mut recs = self.list().await?;
        recs.retain(|r| match filter {
            TransferFilter::All => true,
            TransferFilter::Outgoing => r.direction == TransferDir::Outgoing,
            TransferFilter::Incoming => r.direction == TransferDir::Incoming,
            TransferFilter::Active => !is_final(r.phase),
        });
        recs.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        Ok(recs.iter().map(|r| self.info(r)).collect())
    }

    pub async fn transfer(&self, id: String) -> Result<TransferInfo, IpcError> {
        self.load(&id)
            .await?
            .map(|r| self.info(&r))
            .ok_or_else(|| IpcError::not_found(format!("no transfer {id} (list them with `firmactl transfers`)")))
    }

    pub async fn cancel_transfer(&self, id: String) -> Result<TransferInfo, IpcError> {
        let rec = self
            .update(&id, |rec| {
                if is_final(rec.phase) {
                    return Err(IpcError::invalid(format!(
                        "transfer {} is already {:?}",
                        rec.id,
                        super::phase_state(rec.phase)
                    )));
                }
                // The receiving side has no `cancelled` state: stopping an incoming transfer is
                // refusing it, and the sender is told it was rejected.
                if rec.direction == TransferDir::Incoming {
                    rec.phase = TransferPhase::Rejected;
                    rec.error = Some("cancelled by the recipient".to_owned());
                } else {
                    rec.phase = TransferPhase::Cancelled;
                    rec.error = Some("cancelled by this side".to_owned());
                }
                Ok(())
            })
            .await?;
        self.outbox.cancel(&id);
        self.decide(&id, false);
        if rec.direction == TransferDir::Incoming {
            self.discard_incoming(&id).await;
        }
        Ok(self.info(&rec))
    }

    pub async fn accept_transfer(&self, id: String) -> Result<TransferInfo, IpcError> {
        let rec = self
            .update(&id, |rec| {
                if rec.direction != TransferDir::Incoming || rec.phase != TransferPhase::Pending {
                    return Err(IpcError::invalid(format!(
                        "transfer {} is not an incoming transfer waiting for a decision",
                        rec.id
                    )));
                }
                // A legacy v1 transfer arrived whole already; a v2 one starts receiving.
                rec.phase = if rec.protocol == super::PROTOCOL_V1.to_string() {
                    TransferPhase::Received
                } else {
                    TransferPhase::Receiving
                };
                Ok(())
            })
            .await?;
        self.decide(&id, true);
        Ok(self.info(&rec))
    }

    pub async fn reject_transfer(&self, id: String, reason: String) -> Result<TransferInfo, IpcError> {
        let reason: String = reason.chars().take(512).collect();
        let rec = self
            .update(&id, |rec| {
                if rec.direction != TransferDir::Incoming || is_final(rec.phase) {
                    return Err(IpcError::invalid(format!(
                        "transfer {} is not an incoming transfer in progress",
                        rec.id
                    )));
                }
                rec.phase = TransferPhase::Rejected;
                rec.error = Some(if reason.is_empty() {
                    "rejected by the recipient".to_owned()
                } else {
                    reason.clone()
                });
                Ok(())
            })
            .await?;
        self.decide(&id, false);
        self.discard_incoming(&id).await;
        Ok(self.info(&rec))
    }

    pub(super) fn decide(&self, id: &str, accept: bool) {
        if let Some(tx) = self
            .decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
        {
            let _ = tx.send(Some(accept));
        }
    }

    pub async fn download(
        &self,
        transfer_id: String,
        document_id: String,
        offset: u64,
        max_len: u32,
    ) -> Result<Vec<u8>, IpcError> {
        let rec = self
            .load(&transfer_id)
            .await?
            .ok_or_else(|| IpcError::not_found(format!("no transfer {transfer_id}")))?;
        let m = Manifest::decode(&rec.manifest).map_err(|e| IpcError::internal(e.to_string()))?;
        let (index, doc) = m
            .documents
            .iter()
            .enumerate()
            .find(|(_, d)| d.id == document_id)
            .ok_or_else(|| IpcError::not_found(format!("transfer {transfer_id} has no document {document_id}")))?;
        let path = match rec.direction {
            TransferDir::Incoming => {
                if rec.phase == TransferPhase::Pending {
                    return Err(IpcError::unavailable(format!(
                        "transfer {transfer_id} waits for acceptance before its documents can be downloaded: \
                         firmactl accept {transfer_id} (or firmactl reject {transfer_id})"
                    )));
                }
                if !rec.docs_complete.get(index).copied().unwrap_or(false)
                    || super::phase_state(rec.phase) != TransferState::Received
                {
                    return Err(IpcError::unavailable(format!(
                        "document {document_id} has not arrived complete and verified yet"
                    )));
                }
                self.blobs.incoming_doc(&rec.id, index, &doc.file_name, false)
            }
            TransferDir::Outgoing => self.blobs.outgoing_doc(&rec.id, index),
        };
        let size = doc.size;
        let len = (max_len as usize).min(MAX_IPC_CHUNK) as u64;
        let len = len.min(size.saturating_sub(offset)) as usize;
        blocking(move || {
            let f = File::open(&path).map_err(io)?;
            let mut buf = Vec::new();
            blobs::read_at(&f, &mut buf, offset, len).map_err(io)?;
            Ok(buf)
        })
        .await
    }
}
