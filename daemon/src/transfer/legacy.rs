//! Upstream Firma-Sign's `/firma-sign/transfer/1.0.0`: one JSON object with base64 documents per
//! stream, answered with `{"success":true}` or `{"success":false,"error":"..."}`.
//!
//! v1 has to be held in memory whole, so it is capped at `transfer.v1_max_bytes`. Where upstream
//! is sloppy we are strict: every hash present is checked, sizes are capped, and the sender is
//! the connection's authenticated PeerId, never what the JSON claims.
//!
//! v1 cannot ask before sending, so a v1 transfer from an unknown peer under inbox `ask` is kept
//! whole in its incoming folder as a quarantine, counted against the pending limits (inbox.rs),
//! until it is accepted in place, rejected or expired (then deleted). The policy and the limits
//! are checked before the body is read, so a refused peer costs no more than its first bytes.
//!
//! The transfer's message travels where upstream's model has it: the transfer's
//! `options.message`, and each recipient's `options.message`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{
    MANIFEST_VERSION, MAX_DOCUMENTS, MAX_FILE_NAME, MAX_MESSAGE, MAX_MIME, Manifest, ManifestDoc, chunk_digest,
    valid_id,
};
use super::send::Outcome;
use super::{Engine, PROTOCOL_V1};
use crate::config::InboxPolicy;
use crate::core::now_ms;
use crate::store::{Admission, TransferDir, TransferPhase, TransferRecord};

/// Reading the whole message, or the answer, may take this long.
const V1_DEADLINE: Duration = Duration::from_secs(300);
/// Largest answer we read from a v1 peer.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1Transfer {
    pub transfer_id: String,
    pub documents: Vec<V1Document>,
    /// Upstream's transfer options (`deadline`, `message`, ...); read tolerantly.
    #[serde(default)]
    pub options: serde_json::Value,
    /// Upstream's recipients, each with `identifier` and `options.message`; read tolerantly.
    #[serde(default)]
    pub recipients: serde_json::Value,
}

/// A v1 message parsed and checked.
#[derive(Debug)]
pub(crate) struct V1Parsed {
    pub transfer_id: String,
    pub docs: Vec<V1Doc>,
    pub message: Option<String>,
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
    recipients: Vec<OutRecipient<'a>>,
    options: OutOptions<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutOptions<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    require_all_signatures: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutRecipient<'a> {
    id: &'a str,
    identifier: &'a str,
    document_ids: &'a [String],
    options: OutRecipientOptions<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutRecipientOptions<'a> {
    preferred_transport: &'static str,
    notification_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
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

/// The message of a v1 transfer: its `options.message`, else the `options.message` of the
/// recipient that names `me`, else of the first recipient that has one. Cut to `MAX_MESSAGE`
/// bytes (at a character boundary): a message is never a reason to refuse documents.
fn v1_message(t: &V1Transfer, me: &str) -> Option<String> {
    fn text(v: &serde_json::Value) -> Option<&str> {
        v.get("options")
            .and_then(|o| o.get("message"))
            .and_then(serde_json::Value::as_str)
            .filter(|m| !m.is_empty())
    }
    let direct = t
        .options
        .get("message")
        .and_then(serde_json::Value::as_str)
        .filter(|m| !m.is_empty());
    let recipients = t.recipients.as_array().map(Vec::as_slice).unwrap_or_default();
    let to_me = recipients
        .iter()
        .filter(|r| r.get("identifier").and_then(serde_json::Value::as_str) == Some(me))
        .find_map(text);
    let m = direct.or(to_me).or_else(|| recipients.iter().find_map(text))?;
    let mut end = m.len().min(MAX_MESSAGE);
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    Some(m[..end].to_owned())
}

/// Parses and checks a v1 message addressed to `me`: ids, counts, sizes, base64 and every hash
/// present.
pub(crate) fn parse(json: &[u8], max_document_bytes: u64, me: &str) -> Result<V1Parsed, String> {
    let t: V1Transfer = serde_json::from_slice(json).map_err(|e| format!("not a v1 transfer: {e}"))?;
    let message = v1_message(&t, me);
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
    Ok(V1Parsed {
        transfer_id: t.transfer_id,
        docs: out,
        message,
    })
}

pub(super) async fn receive(engine: &Arc<Engine>, peer: PeerId, mut s: Stream) {
    let cap = engine.cfg.v1_max_bytes;
    let answer = match admit(engine, &peer).await {
        Err(e) => Err(e),
        Ok(phase) => {
            let mut json = Vec::new();
            let read = tokio::time::timeout(V1_DEADLINE, (&mut s).take(cap + 1).read_to_end(&mut json)).await;
            match read {
                Err(_) => Err("timed out reading the transfer".to_owned()),
                Ok(Err(e)) => Err(format!("reading the transfer: {e}")),
                Ok(Ok(_)) if json.len() as u64 > cap => {
                    Err(format!("transfer is over this recipient's limit of {cap} bytes"))
                }
                Ok(Ok(_)) => store(engine, peer, json, phase).await,
            }
        }
    };
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

/// The inbox policy for `peer`, and for an unknown peer under `ask` the pending limits, before
/// anything of the body is read: `Received` or `Pending`, or why not.
async fn admit(engine: &Arc<Engine>, peer: &PeerId) -> Result<TransferPhase, String> {
    let known = engine
        .is_known(&peer.to_string())
        .await
        .map_err(|e| format!("recipient error: {}", e.message))?;
    match if known {
        InboxPolicy::Accept
    } else {
        engine.cfg.unknown_peers
    } {
        InboxPolicy::Reject => Err("this recipient does not accept transfers from unknown peers".into()),
        InboxPolicy::Accept => Ok(TransferPhase::Received),
        InboxPolicy::Ask => {
            let usage = engine
                .pending_usage(&peer.to_string())
                .await
                .map_err(|e| format!("recipient error: {}", e.message))?;
            match usage.over(&engine.pending_limits(), 0) {
                Some(why) => Err(why),
                // It arrives whole; it waits in quarantine while the operator decides.
                None => Ok(TransferPhase::Pending),
            }
        }
    }
}

async fn store(engine: &Arc<Engine>, peer: PeerId, json: Vec<u8>, phase: TransferPhase) -> Result<(), String> {
    let cfg = &engine.cfg;
    let parsed = parse(&json, cfg.max_document_bytes, &engine.local.to_string())?;
    drop(json);
    let V1Parsed {
        transfer_id: tid,
        docs,
        message,
    } = parsed;
    let total: u64 = docs.iter().map(|d| d.bytes.len() as u64).sum();
    if total > cfg.max_transfer_bytes {
        return Err(format!(
            "transfer is over this recipient's limit of {} bytes",
            cfg.max_transfer_bytes
        ));
    }
    if phase == TransferPhase::Pending && total > cfg.pending_max_bytes_per_peer {
        return Err(format!(
            "a transfer from an unknown peer may hold at most {} bytes here until its operator decides \
             (transfer.pending_max_bytes_per_peer); this one has {total}",
            cfg.pending_max_bytes_per_peer
        ));
    }
    let Some(_writing) = Writing::claim(engine, &tid) else {
        return Err("transfer id already in use here".into());
    };
    if engine.load(&tid).await.map_err(|e| e.message)?.is_some() {
        return Err("transfer id already in use here".into());
    }
    let (blobs, chunk, id) = (engine.blobs.clone(), cfg.chunk_size, tid.clone());
    let written = tokio::task::spawn_blocking(move || {
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
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let manifest_docs = match written {
        Ok(d) => d,
        Err(e) => {
            engine.discard_incoming(&tid).await;
            return Err(e);
        }
    };
    let now = now_ms();
    let n = manifest_docs.len();
    let m = Manifest {
        version: MANIFEST_VERSION,
        transfer_id: tid.clone(),
        sender: peer.to_string(),
        chunk_size: chunk,
        documents: manifest_docs,
        recipients: Vec::new(),
        message,
        deadline_ms: None,
        require_all_signatures: false,
        created_ms: now,
    };
    let rec = TransferRecord {
        id: tid.clone(),
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
    let stored = if phase == TransferPhase::Pending {
        // The limits again, with the exact bytes, in the transaction that stores it: other v1
        // bodies may have arrived meanwhile.
        match engine.insert_pending(rec).await {
            Ok(Admission::Stored) => Ok(()),
            Ok(Admission::Refused(why)) => Err(why),
            Err(e) => Err(e.message),
        }
    } else {
        engine.insert(rec).await.map(|_| ()).map_err(|e| e.message)
    };
    if let Err(e) = stored {
        engine.discard_incoming(&tid).await;
        return Err(e);
    }
    tracing::info!(transfer = %tid, %peer, docs = n, bytes = total, ?phase, "legacy v1 transfer received");
    Ok(())
}

/// A claim on a v1 transfer id while its body is written and recorded; released on drop.
struct Writing<'a> {
    engine: &'a Engine,
    id: String,
}

impl<'a> Writing<'a> {
    fn claim(engine: &'a Engine, id: &str) -> Option<Writing<'a>> {
        let fresh = engine
            .v1_writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
        fresh.then(|| Writing {
            engine,
            id: id.to_owned(),
        })
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.engine
            .v1_writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
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
        recipients: m
            .recipients
            .iter()
            .map(|r| OutRecipient {
                id: &r.peer_id,
                identifier: &r.peer_id,
                document_ids: &r.document_ids,
                options: OutRecipientOptions {
                    preferred_transport: "p2p",
                    notification_enabled: true,
                    message: m.message.as_deref(),
                },
            })
            .collect(),
        options: OutOptions {
            message: m.message.as_deref(),
            require_all_signatures: m.require_all_signatures,
        },
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

    const ME: &str = "12D3KooWrecipient";

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
        let V1Parsed {
            transfer_id: id,
            docs,
            message,
        } = parse(
            &msg(serde_json::json!([
                {"id": "doc-1", "fileName": "../../x", "mimeType": "application/pdf", "size": 5, "hash": good, "data": data, "metadata": {}},
                {"id": "doc-2", "fileName": "a\u{0}b", "data": data, "hash": ""}
            ])),
            1 << 20,
            ME,
        )
        .unwrap();
        assert_eq!(id, "V1StGXR8_Z5jdHi6B-myT");
        assert_eq!(message, None);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].bytes, b"hello");
        assert_eq!(docs[1].file_name, "a\0b");

        let bad = "0".repeat(64);
        let e = parse(
            &msg(serde_json::json!([{"id": "d", "hash": bad, "data": data}])),
            1 << 20,
            ME,
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
            let e = parse(&json, 1024, ME).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let long = serde_json::json!({"transferId": "x".repeat(200), "documents": [{"id": "d", "data": ""}]});
        assert!(parse(long.to_string().as_bytes(), 1024, ME).is_err());
    }

    fn with_message(options: serde_json::Value, recipients: serde_json::Value) -> Option<String> {
        let json = serde_json::json!({
            "transferId": "t1",
            "documents": [{"id": "d", "data": ""}],
            "options": options,
            "recipients": recipients,
        });
        parse(json.to_string().as_bytes(), 1024, ME).unwrap().message
    }

    #[test]
    fn the_message_is_read_where_upstream_puts_it() {
        let none = serde_json::Value::Null;
        assert_eq!(
            with_message(serde_json::json!({"message": "sign by Friday"}), none.clone()).as_deref(),
            Some("sign by Friday")
        );
        let recipients = serde_json::json!([
            {"id": "r1", "identifier": "12D3KooWsomeoneelse", "options": {"message": "not for us"}},
            {"id": "r2", "identifier": ME, "options": {"message": "for us"}},
        ]);
        assert_eq!(
            with_message(serde_json::json!({}), recipients).as_deref(),
            Some("for us")
        );
        let others = serde_json::json!([{"identifier": "someone", "options": {"message": "to all"}}]);
        assert_eq!(with_message(none.clone(), others).as_deref(), Some("to all"));
        // Wrong types are ignored, not fatal; an overlong message is cut, not refused.
        assert_eq!(
            with_message(serde_json::json!({"message": 7}), serde_json::json!("x")),
            None
        );
        let long = "é".repeat(MAX_MESSAGE);
        let cut = with_message(serde_json::json!({"message": long}), none).unwrap();
        assert!(cut.len() <= MAX_MESSAGE && cut.chars().all(|c| c == 'é'));
    }
}
