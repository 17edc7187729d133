//! Document transfers: create (multipart upload streamed into the daemon), list, one, cancel,
//! accept, reject, and download (streamed back out).
//!
//! Document bytes never sit whole in this process: an upload part is cut into chunks of at most
//! `MAX_IPC_CHUNK` and each is handed to the daemon (`upload_chunk`) before the next is read;
//! a download asks the daemon for one chunk per body frame. The body limit of the router is
//! lifted for the create route only (see `mod.rs`); sizes are the daemon's to enforce, and it
//! does so per chunk against the size announced before each file.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use firma_ipc::transfer::{
    MAX_IPC_CHUNK, NewTransfer, RecipientSpec, StagedDocument, TransferFilter, TransferInfo, UploadStart,
};
use serde::Deserialize;

use crate::daemon_link::ctx;
use crate::error::ApiError;
use crate::state::AppState;

/// Most files in one upload (the daemon's manifest takes 64).
const MAX_FILES: usize = 64;
/// Longest text field of the form (peer id, size, mime type); the message has its own cap.
const MAX_FIELD: usize = 1024;
/// Longest message, as the daemon's manifest allows.
const MAX_MESSAGE: usize = 64 * 1024;
/// Longest transfer or document id accepted in a path.
const MAX_ID: usize = 128;
/// Longest file name kept for `Content-Disposition`, in characters.
const MAX_DISPOSITION_NAME: usize = 200;

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {MAX_ID} characters"
        )));
    }
    Ok(())
}

fn multipart_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("bad multipart body: {e}"))
}

/// A text field read with a cap, so an oversized one is refused instead of buffered.
async fn read_text(field: &mut Field<'_>, name: &str, cap: usize) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > cap {
            return Err(ApiError::bad_request(format!(
                "field `{name}` is longer than {cap} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| ApiError::bad_request(format!("field `{name}` is not UTF-8")))
}

/// Stream one file part into the daemon; returns the staged document.
async fn upload_part(s: &AppState, field: &mut Field<'_>, size: u64, mime: String) -> Result<StagedDocument, ApiError> {
    let file_name = field
        .file_name()
        .map(str::to_owned)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a `file` part needs a file name"))?;
    let mime_type = if mime.is_empty() {
        field.content_type().unwrap_or_default().to_owned()
    } else {
        mime
    };
    let c = s.link.client()?;
    let start = UploadStart {
        file_name,
        size,
        mime_type,
    };
    let id = s.link.finish(c.upload_begin(ctx(), start).await)?;
    let mut offset = 0u64;
    // At most one IPC chunk is held here, whatever sizes the multipart parser hands out.
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_IPC_CHUNK.min(usize::try_from(size).unwrap_or(MAX_IPC_CHUNK)));
    loop {
        let next = field.chunk().await.map_err(multipart_error)?;
        let done = next.is_none();
        let mut data: &[u8] = next.as_deref().unwrap_or_default();
        while !data.is_empty() {
            let take = (MAX_IPC_CHUNK - pending.len()).min(data.len());
            pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if pending.len() == MAX_IPC_CHUNK {
                let chunk = serde_bytes::ByteBuf::from(std::mem::take(&mut pending));
                offset = s.link.finish(c.upload_chunk(ctx(), id.clone(), offset, chunk).await)?;
            }
        }
        if done {
            break;
        }
    }
    if !pending.is_empty() {
        let chunk = serde_bytes::ByteBuf::from(pending);
        s.link.finish(c.upload_chunk(ctx(), id.clone(), offset, chunk).await)?;
    }
    s.link.finish(c.upload_finish(ctx(), id).await)
}

/// `POST /api/transfers`, `multipart/form-data`: first `peer` (the recipient's peer id) and an
/// optional `message`, then for each document a `size` field (its byte count) followed by its `file`
/// part (optionally preceded by `mime`). Answers the created transfer.
pub async fn create(
    State(s): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<TransferInfo>, ApiError> {
    let mut multipart = multipart.map_err(|e| multipart_error(e.body_text()))?;
    let mut peer: Option<String> = None;
    let mut message: Option<String> = None;
    let mut size: Option<u64> = None;
    let mut mime = String::new();
    let mut staged: Vec<StagedDocument> = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "peer" => peer = Some(read_text(&mut field, "peer", MAX_FIELD).await?.trim().to_owned()),
            "message" => message = Some(read_text(&mut field, "message", MAX_MESSAGE).await?),
            "mime" => mime = read_text(&mut field, "mime", MAX_FIELD).await?,
            "size" => {
                let text = read_text(&mut field, "size", MAX_FIELD).await?;
                size =
                    Some(text.trim().parse().map_err(|_| {
                        ApiError::bad_request(format!("field `size` must be a byte count, not {text:?}"))
                    })?);
            }
            "file" => {
                if staged.len() >= MAX_FILES {
                    return Err(ApiError::bad_request(format!("at most {MAX_FILES} files per transfer")));
                }
                // Before any bytes move, so a form without a recipient leaves nothing staged behind.
                if peer.as_deref().is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(
                        "the `peer` field (the recipient's peer id) must come before the files",
                    ));
                }
                let announced = size.take().ok_or_else(|| {
                    ApiError::bad_request("each `file` part must follow a `size` field holding its byte count")
                })?;
                staged.push(upload_part(&s, &mut field, announced, std::mem::take(&mut mime)).await?);
            }
            other => return Err(ApiError::bad_request(format!("unknown form field `{other}`"))),
        }
    }
    let peer = peer
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("the form needs a `peer` field: the recipient's peer id"))?;
    check_id("peer", &peer)?;
    if staged.is_empty() {
        return Err(ApiError::bad_request("the form holds no `file` part"));
    }
    let c = s.link.client()?;
    let transfer = NewTransfer {
        documents: staged.into_iter().map(|d| d.id).collect(),
        recipients: vec![RecipientSpec {
            peer_id: peer,
            document_ids: Vec::new(),
        }],
        message: message.filter(|m| !m.is_empty()),
        deadline_ms: None,
        require_all_signatures: false,
    };
    Ok(Json(s.link.finish(c.send_transfer(ctx(), transfer).await)?))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    filter: Option<TransferFilter>,
}

pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Vec<TransferInfo>>, ApiError> {
    let c = s.link.client()?;
    let filter = q.filter.unwrap_or(TransferFilter::All);
    Ok(Json(s.link.finish(c.transfers(ctx(), filter).await)?))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<TransferInfo>, ApiError> {
    check_id("transfer id", &id)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.transfer(ctx(), id).await)?))
}

pub async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<TransferInfo>, ApiError> {
    check_id("transfer id", &id)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.cancel_transfer(ctx(), id).await)?))
}

pub async fn accept(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<TransferInfo>, ApiError> {
    check_id("transfer id", &id)?;
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.accept_transfer(ctx(), id).await)?))
}

#[derive(Debug, Default, Deserialize)]
pub struct RejectBody {
    #[serde(default)]
    reason: String,
}

/// The body is optional: `{"reason": "..."}` or nothing at all.
pub async fn reject(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TransferInfo>, ApiError> {
    check_id("transfer id", &id)?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<RejectBody>(&body)
            .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?
            .reason
    };
    if reason.len() > MAX_FIELD {
        return Err(ApiError::bad_request(format!(
            "reason is longer than {MAX_FIELD} bytes"
        )));
    }
    let c = s.link.client()?;
    Ok(Json(s.link.finish(c.reject_transfer(ctx(), id, reason).await)?))
}

/// A file name safe inside `Content-Disposition` and on any file system: no path, no controls, no
/// quotes, none of the characters Windows refuses,
/// ASCII for `filename=` and the full (capped) name percent-encoded for `filename*=`.
pub fn disposition(original: &str) -> String {
    let base = original.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, '"' | ';' | '%' | '<' | '>' | ':' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .take(MAX_DISPOSITION_NAME)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    let cleaned = if cleaned.is_empty() {
        "document".to_owned()
    } else {
        cleaned
    };
    let ascii: String = cleaned
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = cleaned
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// `GET /api/transfers/{id}/documents/{doc_id}`: the document's bytes, one daemon chunk per body
/// frame. Always `application/octet-stream` and `attachment`: a peer's file is never rendered.
pub async fn download(
    State(s): State<AppState>,
    Path((id, doc_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id("transfer id", &id)?;
    check_id("document id", &doc_id)?;
    let c = s.link.client()?;
    let info = s.link.finish(c.transfer(ctx(), id.clone()).await)?;
    let doc = info.documents.iter().find(|d| d.id == doc_id).ok_or_else(|| {
        ApiError::from(firma_ipc::IpcError::not_found(format!(
            "transfer {id} has no document {doc_id}"
        )))
    })?;
    let size = doc.size;
    let name = disposition(&doc.file_name);
    // Fetch the first chunk before answering, so "not arrived yet" is a proper error status.
    let want = MAX_IPC_CHUNK as u32;
    let first = s
        .link
        .finish(c.download(ctx(), id.clone(), doc_id.clone(), 0, want).await)?;
    let start = (Some(first.into_vec()), 0u64);
    let stream = futures::stream::unfold(start, move |(first, offset)| {
        let (c, s, id, doc_id) = (c.clone(), s.clone(), id.clone(), doc_id.clone());
        async move {
            if offset >= size {
                return None;
            }
            let bytes = match first {
                Some(b) => Ok(b),
                None => s
                    .link
                    .finish(c.download(ctx(), id, doc_id, offset, want).await)
                    .map(serde_bytes::ByteBuf::into_vec),
            };
            match bytes {
                Ok(b) if b.is_empty() => Some((
                    Err(std::io::Error::other(format!(
                        "the daemon returned no bytes at offset {offset}"
                    ))),
                    (None, size),
                )),
                Ok(b) => {
                    let next = offset + b.len() as u64;
                    Some((Ok(Bytes::from(b)), (None, next)))
                }
                // Headers are gone: the only way to tell the client is to cut the body short.
                Err(e) => Some((Err(std::io::Error::other(e.message)), (None, size))),
            }
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn disposition_strips_paths_quotes_and_controls() {
        let d = disposition("../../etc/pa\"ss\r\nwd;.pdf");
        assert!(d.starts_with("attachment; filename=\"pa_sswd_.pdf\""), "{d}");
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(HeaderValue::from_str(&d).is_ok());
        let d = disposition("<img src=x onerror=alert(1)>.pdf");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
        let d = disposition("vertrag-überprüft.pdf");
        assert!(d.contains("filename*=UTF-8''vertrag-%C3%BCberpr%C3%BCft.pdf"), "{d}");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
        assert_eq!(
            disposition("..."),
            "attachment; filename=\"document\"; filename*=UTF-8''document"
        );
        assert!(disposition("C:\\Users\\x\\a.pdf").contains("filename=\"a.pdf\""));
    }
}
