//! `firmactl get TRANSFER DOC -o PATH`: download a received document in chunks, with a progress
//! bar, into a temp file beside PATH; check its SHA-256 against the manifest; then rename it into
//! place, so that PATH never holds a partial or wrong document. Survives a daemon restart: the
//! download continues at the offset it had reached.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use firma_ipc::IpcError;
use firma_ipc::transfer::{DocumentInfo, MAX_IPC_CHUNK, TransferDirection, TransferInfo, TransferState};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::commands::progress::Progress;
use crate::commands::reconnect::Reconnecting;
use crate::commands::transfer::display_text;
use crate::commands::upload::local_error;
use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

/// `MAX_IPC_CHUNK` as the API's `max_len`.
const CHUNK_LEN: u32 = {
    assert!(MAX_IPC_CHUNK <= u32::MAX as usize);
    MAX_IPC_CHUNK as u32
};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The transfer's id (see: firmactl transfers --incoming).
    #[arg(value_name = "TRANSFER")]
    pub transfer: String,
    /// The document's id, or its file name when that is unique in the transfer.
    #[arg(value_name = "DOC")]
    pub document: String,
    /// Where to write the document.
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace PATH if it exists.
    #[arg(long)]
    pub force: bool,
}

/// What `get` prints: where the document went and that its hash matched.
#[derive(Debug, Serialize)]
struct Saved<'a> {
    transfer_id: &'a str,
    document_id: &'a str,
    file_name: &'a str,
    path: String,
    size: u64,
    sha256: &'a str,
}

pub async fn run(session: Session, out: Output, args: GetArgs) -> Result<(), CliError> {
    if args.output.exists() && !args.force {
        return Err(CliError::Daemon(IpcError::invalid(format!(
            "{} exists; pick another -o PATH or add --force to replace it",
            args.output.display()
        ))));
    }
    let mut rc = Reconnecting::new(session, out);
    let id = args.transfer.clone();
    let info = rc
        .call(|c, ctx| {
            let id = id.clone();
            async move { c.transfer(ctx, id).await }
        })
        .await?;
    let doc = pick_document(&info, &args.document)?.clone();
    if info.direction == TransferDirection::Incoming && info.state == TransferState::Pending {
        // Held for the operator's decision (inbox policy `ask`): nothing is released before it.
        return Err(CliError::Daemon(IpcError::unavailable(format!(
            "transfer {id} waits for acceptance before its documents can be downloaded: firmactl accept {id} (or firmactl reject {id})",
            id = info.id
        ))));
    }
    if !doc.complete {
        return Err(CliError::Daemon(IpcError::unavailable(format!(
            "document {} of transfer {} is not complete yet ({}); wait for it: firmactl transfer {}",
            doc.id,
            info.id,
            format::percent(doc.bytes_done, doc.size),
            info.id
        ))));
    }

    let temp = temp_path(&args.output);
    let result = download(&mut rc, out, &info.id, &doc, &temp).await;
    if let Err(e) = result {
        // A failed download leaves nothing behind.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, &args.output).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        local_error(&args.output, "cannot move the download into place at", &e)
    })?;
    let saved = Saved {
        transfer_id: &info.id,
        document_id: &doc.id,
        file_name: &doc.file_name,
        path: args.output.display().to_string(),
        size: doc.size,
        sha256: &doc.sha256,
    };
    out.emit(&saved, |s| {
        format!(
            "saved {} ({}, sha256 {} verified) to {}",
            display_text(s.file_name, 80),
            format::bytes(s.size),
            s.sha256,
            s.path
        )
    })
}

/// The document `wanted` names: an id, else a file name that only one document has.
fn pick_document<'a>(info: &'a TransferInfo, wanted: &str) -> Result<&'a DocumentInfo, CliError> {
    if let Some(d) = info.documents.iter().find(|d| d.id == wanted) {
        return Ok(d);
    }
    let by_name: Vec<&DocumentInfo> = info.documents.iter().filter(|d| d.file_name == wanted).collect();
    match by_name.as_slice() {
        [only] => Ok(only),
        [] => Err(CliError::Daemon(IpcError::not_found(format!(
            "transfer {} has no document {wanted}; its documents: {}",
            info.id,
            info.documents
                .iter()
                .map(|d| format!("{} ({})", d.id, display_text(&d.file_name, 40)))
                .collect::<Vec<_>>()
                .join(", ")
        )))),
        _ => Err(CliError::Daemon(IpcError::invalid(format!(
            "several documents of transfer {} are named {wanted}; name one by its id (firmactl transfer {})",
            info.id, info.id
        )))),
    }
}

/// A hidden name beside `output`, so that the final rename stays on one file system.
fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_owned());
    output.with_file_name(format!(".{name}.firmactl-{}.part", std::process::id()))
}

async fn download(
    rc: &mut Reconnecting,
    out: Output,
    transfer_id: &str,
    doc: &DocumentInfo,
    temp: &Path,
) -> Result<(), CliError> {
    let progress = Progress::bytes(out, "download", doc.size);
    progress.message(&display_text(&doc.file_name, 24));
    // Writing is blocking file I/O, done off the runtime; one chunk in memory at a time.
    let mut file = std::fs::File::create(temp).map_err(|e| local_error(temp, "cannot create", &e))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < doc.size {
        let (tid, did) = (transfer_id.to_owned(), doc.id.clone());
        let chunk = rc
            .call(|c, ctx| {
                let (tid, did) = (tid.clone(), did.clone());
                async move { c.download(ctx, tid, did, offset, CHUNK_LEN).await }
            })
            .await?
            .into_vec();
        if chunk.is_empty() || offset + chunk.len() as u64 > doc.size {
            return Err(CliError::Daemon(IpcError::internal(format!(
                "the daemon answered {} bytes at offset {offset} of document {} ({} bytes)",
                chunk.len(),
                doc.id,
                doc.size
            ))));
        }
        hasher.update(&chunk);
        offset += chunk.len() as u64;
        file = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| file))
            .await
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?
            .map_err(|e| local_error(temp, "cannot write", &e))?;
        progress.set(offset, doc.size);
    }
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?
        .map_err(|e| local_error(temp, "cannot flush", &e))?;
    let got = hex(&hasher.finalize());
    if got != doc.sha256.to_ascii_lowercase() {
        return Err(CliError::Daemon(IpcError::internal(format!(
            "document {} arrived with SHA-256 {got}, but its manifest says {}; nothing was written",
            doc.id, doc.sha256
        ))));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use firma_ipc::transfer::TransferState;

    use super::*;
    use crate::commands::transfer::tests::transfer;

    #[test]
    fn documents_by_id_or_unique_name() {
        let mut t = transfer("T", TransferState::Received);
        let mut second = t.documents[0].clone();
        second.id = "doc-2".into();
        second.file_name = "b.pdf".into();
        t.documents.push(second);
        assert_eq!(pick_document(&t, "doc-2").unwrap().id, "doc-2");
        assert_eq!(pick_document(&t, "b.pdf").unwrap().id, "doc-2");
        let err = pick_document(&t, "nope").unwrap_err().to_string();
        assert!(err.contains("doc-1 (") && err.contains("doc-2 (b.pdf)"), "{err}");
        t.documents[0].file_name = "b.pdf".into();
        assert!(pick_document(&t, "b.pdf").unwrap_err().to_string().contains("several"));
    }

    #[test]
    fn temp_file_sits_beside_the_target() {
        let p = temp_path(Path::new("/tmp/out/contract.pdf"));
        assert_eq!(p.parent(), Some(Path::new("/tmp/out")));
        assert!(
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".contract.pdf.firmactl-")
        );
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
