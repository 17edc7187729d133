//! Upstream Firma-Sign's `/firma-sign/transfer/1.0.0`: one JSON object with base64 documents per
//! stream, answered with `{"success":true}` or `{"success":false,"error":"..."}`.
//!
//! v1 has to be held in memory whole, so it is capped at `transfer.v1_max_bytes`. Where upstream
//! is sloppy we are strict: every hash present is checked, sizes are capped, and the sender is
//! the connection's authenticated PeerId, never what the JSON claims.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{
    MANIFEST_VERSION, MAX_DOCUMENTS, MAX_FILE_NAME, MAX_MIME, Manifest, ManifestDoc, chunk_digest, valid_id,
};
use super::send::Outcome;
use super::{Engine, PROTOCOL_V1};
use crate::config::InboxPolicy;
use crate::core::now_ms;
use crate::store::{TransferDir, TransferPhase, TransferRecord};

/// Reading the whole message, or the answer, may take this long.
const V1_DEADLINE: Duration = Duration::from_secs(300);
/// Largest answer we read from a v1 peer.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1Transfer {
    pub transfer_id: String,
    pub documents: Vec<V1Document>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1Document {
    pub id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default, alias = "fileSize")]
    pub size: Option<u64>,
    #[serde(default)]
    pub hash: Option<String>,
    pub data: String,
}

/// A v1 document decoded and checked.
#[derive(Debug)]
pub(crate) struct V1Doc {
    pub id: String,
    pub file_name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTransfer<'a> {
    transfer_id: &'a str,
    documents: Vec<OutDocument<'a>>,
    sender: OutSender,
    options: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutDocument<'a> {
    id: &'a str,
    file_name: &'a str,
    mime_type: &'a str,
    size: u64,
    hash: &'a str,
    data: String,
    metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutSender {
    sender_id: String,
    name: &'static str,
    transport: &'static str,
    timestamp: u64,
    verification_status: &'static str,
}

#[derive(Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    error: Option<String>,
}

/// Parses and checks a v1 message: ids, counts, sizes, base64 and every hash present.
pub(crate) fn parse(json: &[u8], max_document_bytes: u64) -> Result<(String, Vec<V1Doc>), String> {
    let t: V1Transfer = serde_json::from_slice(json).map_err(|e| format!("not a v1 transfer: {e}"))?;
    if !valid_id(&t.transfer_id) {
        return Err("transferId must be 1 to 128 characters of [A-Za-z0-9_-]".into());
    }
    if t.documents.is_empty() || t.documents.len() > MAX_DOCUMENTS {
        return Err(format!("1 to {MAX_DOCUMENTS} documents are accepted"));
    }
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(t.documents.len());
    for (i, d) in t.documents.into_iter().enumerate() {
        if !valid_id(&d.id) || !ids.insert(d.id.clone()) {
            return Err(format!("document {i}: id missing, malformed or repeated"));
        }
        let file_name = d.file_name.unwrap_or_default();
        let mime_type = d.mime_type.unwrap_or_else(|| "application/octet-stream".into());
        if file_name.len() > MAX_FILE_NAME || mime_type.len() > MAX_MIME {
            return Err(format!("document {}: file name or MIME type too long", d.id));
        }
        if d.data.len() as u64 / 4 * 3 > max_document_bytes + 3 {
            return Err(format!("document {} is over this recipient's size limit", d.id));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d.data.trim())
            .map_err(|e| format!("document {}: data is not base64 ({e})", d.id))?;
        if bytes.len() as u64 > max_document_bytes {
            return Err(format!("document {} is over this recipient's size limit", d.id));
        }
        if d.size.is_some_and(|s| s != bytes.len() as u64) {
            return Err(format!("document {}: size does not match its data", d.id));
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(h) = d.hash.as_deref().filter(|h| !h.is_empty())
            && !h.eq_ignore_ascii_case(&sha256)
        {
            return Err(format!("document {}: hash does not match its data", d.id));
        }
        out.push(V1Doc {
            id: d.id,
            file_name,
            mime_type,
            bytes,
            sha256,
        });
    }
    Ok((t.transfer_id, out))
}

pub(super) async fn receive(engine: &Arc<Engine>, peer: PeerId, mut s: Stream) {
    let cap = engine.cfg.v1_max_bytes;
    let mut json = Vec::new();
    let read = tokio::time::timeout(V1_DEADLINE, (&mut s).take(cap + 1).read_to_end(&mut json)).await;
    let answer = match read {
        Err(_) => Err("timed out reading the transfer".to_owned()),
        Ok(Err(e)) => Err(format!("reading the transfer: {e}")),
        Ok(Ok(_)) if json.len() as u64 > cap => Err(format!("transfer is over this recipient's limit of {cap} bytes")),
        Ok(Ok(_)) => store(engine, peer, &json).await,
    };
    drop(json);
    let body = match &answer {
        Ok(()) => serde_json::json!({"success": true}),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a v1 transfer");
            serde_json::json!({"success": false, "error": e})
        }
    };
    let _ = s.write_all(body.to_string().as_bytes()).await;
    let _ = s.close().await;
}

async fn store(engine: &Arc<Engine>, peer: PeerId, json: &[u8]) -> Result<(), String> {
    let cfg = &engine.cfg;
    let (tid, docs) = parse(json, cfg.max_document_bytes)?;
    let total: u64 = docs.iter().map(|d| d.bytes.len() as u64).sum();
    if total > cfg.max_transfer_bytes {
        return Err(format!(
            "transfer is over this recipient's limit of {} bytes",
            cfg.max_transfer_bytes
        ));
    }
    if engine.load(&tid).await.map_err(|e| e.message)?.is_some() {
        return Err("transfer id already in use here".into());
    }
    let known = engine.is_known(&peer.to_string()).await.map_err(|e| e.message)?;
    let phase = match if known { InboxPolicy::Accept } else { cfg.unknown_peers } {
        InboxPolicy::Reject => return Err("this recipient does not accept transfers from unknown peers".into()),
        InboxPolicy::Accept => TransferPhase::Received,
        // It arrived whole; the operator decides whether to keep it.
        InboxPolicy::Ask => TransferPhase::Pending,
    };
    let (blobs, chunk, id) = (engine.blobs.clone(), cfg.chunk_size, tid.clone());
    let manifest_docs = tokio::task::spawn_blocking(move || {
        blobs.mkdir(&blobs.incoming_dir(&id)).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(docs.len());
        for (i, d) in docs.into_iter().enumerate() {
            let path = blobs.incoming_doc(&id, i, &d.file_name, false);
            let part = blobs.incoming_doc(&id, i, &d.file_name, true);
            std::fs::write(&part, &d.bytes).map_err(|e| format!("writing {}: {e}", part.display()))?;
            std::fs::rename(&part, &path).map_err(|e| format!("renaming {}: {e}", path.display()))?;
            let chunk_hashes = d.bytes.chunks(chunk as usize).flat_map(chunk_digest).collect();
            out.push(ManifestDoc {
                id: d.id,
                file_name: d.file_name,
                size: d.bytes.len() as u64,
                mime_type: d.mime_type,
                sha256: d.sha256,
                chunk_hashes,
            });
        }
        Ok::<_, String>(out)
    })
    .await
    .map_err(|e| e.to_string())??;
    let now = now_ms();
    let n = manifest_docs.len();
    let m = Manifest {
        version: MANIFEST_VERSION,
        transfer_id: tid.clone(),
        sender: peer.to_string(),
        chunk_size: chunk,
        documents: manifest_docs,
        recipients: Vec::new(),
        message: None,
        deadline_ms: None,
        require_all_signatures: false,
        created_ms: now,
    };
    let rec = TransferRecord {
        id: tid,
        direction: TransferDir::Incoming,
        phase,
        peer_id: peer.to_string(),
        protocol: PROTOCOL_V1.to_string(),
        manifest: m.encode().map_err(|e| e.to_string())?,
        manifest_signature: Vec::new(),
        docs_complete: vec![true; n],
        bytes_done: total,
        chunks_resent: 0,
        created_ms: now,
        updated_ms: now,
        error: None,
        receipt: None,
    };
    tracing::info!(transfer = %rec.id, %peer, docs = n, bytes = total, "legacy v1 transfer received");
    engine.insert(rec).await.map_err(|e| e.message)?;
    Ok(())
}

/// Sends an outgoing transfer to a peer that only speaks v1. The whole message is built in
/// memory, so transfers over `transfer.v1_max_bytes` cannot go this way.
pub(crate) async fn send(engine: &Arc<Engine>, rec: &TransferRecord, m: &Manifest, peer: PeerId) -> Outcome {
    let cap = engine.cfg.v1_max_bytes;
    let encoded = m.total_bytes().div_ceil(3) * 4 + 4096 * m.documents.len() as u64;
    if encoded > cap {
        return Outcome::Failed(format!(
            "the recipient speaks only the legacy protocol, and this transfer ({} bytes) is over transfer.v1_max_bytes ({cap})",
            m.total_bytes()
        ));
    }
    let (blobs, id, n) = (engine.blobs.clone(), rec.id.clone(), m.documents.len());
    let datas = match tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| std::fs::read(blobs.outgoing_doc(&id, i)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Outcome::Failed(format!("outgoing document missing from the blob store: {e}")),
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let msg = OutTransfer {
        transfer_id: &m.transfer_id,
        documents: m
            .documents
            .iter()
            .zip(&datas)
            .map(|(d, data)| OutDocument {
                id: &d.id,
                file_name: &d.file_name,
                mime_type: &d.mime_type,
                size: d.size,
                hash: &d.sha256,
                data: base64::engine::general_purpose::STANDARD.encode(data),
                metadata: serde_json::Map::new(),
            })
            .collect(),
        sender: OutSender {
            sender_id: engine.local.to_string(),
            name: "firma-transportd",
            transport: "p2p",
            timestamp: now_ms(),
            verification_status: "unverified",
        },
        options: serde_json::Map::new(),
    };
    let body = match serde_json::to_vec(&msg) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    drop(msg);
    drop(datas);
    let mut control = engine.streams.clone();
    let mut s = match tokio::time::timeout(Duration::from_secs(20), control.open_stream(peer, PROTOCOL_V1)).await {
        Err(_) => return Outcome::Retry("opening a v1 stream timed out".into()),
        Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
            return Outcome::Failed("the recipient speaks neither transfer protocol".into());
        }
        Ok(Err(e)) => return Outcome::Retry(e.to_string()),
        Ok(Ok(s)) => s,
    };
    let _ = engine.set_phase(&rec.id, TransferPhase::Sending, None).await;
    let exchange = async {
        s.write_all(&body).await?;
        s.close().await?;
        let mut answer = Vec::new();
        (&mut s).take(MAX_ANSWER).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(V1_DEADLINE, exchange).await {
        Err(_) => return Outcome::Retry("no answer from the v1 recipient".into()),
        Ok(Err(e)) => return Outcome::Retry(format!("v1 exchange: {e}")),
        Ok(Ok(a)) => a,
    };
    match serde_json::from_slice::<Answer>(&answer) {
        Ok(Answer { success: true, .. }) => {
            let total = m.total_bytes();
            let stored = engine
                .update(&rec.id, |r| {
                    if !super::is_final(r.phase) {
                        r.phase = TransferPhase::Delivered;
                        r.protocol = PROTOCOL_V1.to_string();
                        r.bytes_done = total;
                        r.docs_complete = vec![true; r.docs_complete.len()];
                        r.error = None;
                    }
                    Ok(())
                })
                .await;
            match stored {
                Ok(_) => Outcome::Delivered,
                Err(e) => Outcome::Retry(e.message),
            }
        }
        Ok(Answer { error, .. }) => Outcome::Failed(format!(
            "the v1 recipient refused: {}",
            error.unwrap_or_default().chars().take(512).collect::<String>()
        )),
        Err(_) => Outcome::Retry("the v1 recipient's answer is not JSON".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(docs: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "transferId": "V1StGXR8_Z5jdHi6B-myT",
            "documents": docs,
            "sender": {"senderId": "12D3KooWfake", "verificationStatus": "verified"},
            "options": {}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn upstream_shape_parses_and_hashes_are_checked() {
        let data = base64::engine::general_purpose::STANDARD.encode(b"hello");
        let good = hex::encode(Sha256::digest(b"hello"));
        let (id, docs) = parse(
            &msg(serde_json::json!([
                {"id": "doc-1", "fileName": "../../x", "mimeType": "application/pdf", "size": 5, "hash": good, "data": data, "metadata": {}},
                {"id": "doc-2", "fileName": "a\u{0}b", "data": data, "hash": ""}
            ])),
            1 << 20,
        )
        .unwrap();
        assert_eq!(id, "V1StGXR8_Z5jdHi6B-myT");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].bytes, b"hello");
        assert_eq!(docs[1].file_name, "a\0b");

        let bad = "0".repeat(64);
        let e = parse(
            &msg(serde_json::json!([{"id": "d", "hash": bad, "data": data}])),
            1 << 20,
        )
        .unwrap_err();
        assert!(e.contains("hash does not match"), "{e}");
    }

    #[test]
    fn hostile_v1_input_is_refused() {
        let data = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 4096]);
        for (json, want) in [
            (b"not json".to_vec(), "not a v1 transfer"),
            (msg(serde_json::json!([])), "documents are accepted"),
            (msg(serde_json::json!([{"id": "../etc", "data": ""}])), "malformed"),
            (msg(serde_json::json!([{"id": "d", "data": "%%%"}])), "not base64"),
            (msg(serde_json::json!([{"id": "d", "data": data}])), "size limit"),
            (
                msg(serde_json::json!([{"id": "d", "data": "", "size": 3}])),
                "size does not match",
            ),
            (
                msg(serde_json::json!([{"id": "d", "data": ""}, {"id": "d", "data": ""}])),
                "repeated",
            ),
        ] {
            let e = parse(&json, 1024).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let long = serde_json::json!({"transferId": "x".repeat(200), "documents": [{"id": "d", "data": ""}]});
        assert!(parse(long.to_string().as_bytes(), 1024).is_err());
    }
}
