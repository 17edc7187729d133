//! Streaming a local file into the daemon's blob store: `upload_begin`, `upload_chunk` of at most
//! [`MAX_IPC_CHUNK`] bytes, `upload_finish`. The daemon may run as another user and never opens
//! the caller's files, so firmactl reads them and sends the bytes over the socket.
//!
//! An upload survives a daemon restart: after a reconnect the next chunk goes to the offset the
//! daemon says it holds (what `upload_chunk` returns). If the daemon lost the upload altogether
//! it is started again from zero.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use firma_ipc::ErrorCode;
use firma_ipc::transfer::{MAX_IPC_CHUNK, StagedDocument, UploadStart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::commands::progress::Progress;
use crate::commands::reconnect::Reconnecting;
use crate::exit::CliError;
use crate::output::Output;

/// Most times one upload starts again from zero because the daemon forgot it.
const MAX_RESTARTS: u32 = 5;

/// A file the caller named, checked before anything is sent.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    /// The name the recipient sees: the file's own name, without directories.
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
}

impl LocalFile {
    /// Check that `path` is a readable regular file and learn its size.
    pub fn inspect(path: &Path) -> Result<Self, CliError> {
        let meta = std::fs::metadata(path).map_err(|e| local_error(path, "cannot read", &e))?;
        if !meta.is_file() {
            return Err(CliError::Daemon(firma_ipc::IpcError::invalid(format!(
                "{} is not a regular file; send files, not directories or devices",
                path.display()
            ))));
        }
        // Opening now catches a permission problem before the first byte is uploaded.
        std::fs::File::open(path).map_err(|e| local_error(path, "cannot open", &e))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "document".to_owned());
        Ok(Self {
            path: path.to_owned(),
            mime_type: mime_type(&file_name).to_owned(),
            file_name,
            size: meta.len(),
        })
    }
}

/// A failure with the caller's own file, coded `invalid` (the request names a bad file).
pub fn local_error(path: &Path, what: &str, e: &std::io::Error) -> CliError {
    CliError::Daemon(firma_ipc::IpcError::invalid(format!("{what} {}: {e}", path.display())))
}

/// Upload `file`, showing `progress`; returns the staged document.
pub async fn upload(
    rc: &mut Reconnecting,
    out: Output,
    file: &LocalFile,
    progress: &Progress,
) -> Result<StagedDocument, CliError> {
    let mut restarts = 0;
    loop {
        match upload_once(rc, file, progress).await {
            Err(UploadError::Lost(upload_id)) if restarts < MAX_RESTARTS => {
                restarts += 1;
                progress.notice(
                    out,
                    &format!(
                        "the daemon no longer holds upload {upload_id} of {}; starting it again",
                        file.path.display()
                    ),
                );
            }
            Err(UploadError::Lost(upload_id)) => {
                return Err(CliError::Daemon(firma_ipc::IpcError::unavailable(format!(
                    "the daemon lost upload {upload_id} of {} {MAX_RESTARTS} times; giving up",
                    file.path.display()
                ))));
            }
            Err(UploadError::Cli(e)) => return Err(e),
            Ok(staged) => return Ok(staged),
        }
    }
}

enum UploadError {
    /// The daemon does not know the upload (it restarted without keeping it).
    Lost(String),
    Cli(CliError),
}

impl From<CliError> for UploadError {
    fn from(e: CliError) -> Self {
        UploadError::Cli(e)
    }
}

async fn upload_once(
    rc: &mut Reconnecting,
    file: &LocalFile,
    progress: &Progress,
) -> Result<StagedDocument, UploadError> {
    let start = UploadStart {
        file_name: file.file_name.clone(),
        size: file.size,
        mime_type: file.mime_type.clone(),
    };
    let upload_id = rc
        .call(|c, ctx| {
            let start = start.clone();
            async move { c.upload_begin(ctx, start).await }
        })
        .await?;
    let lost = |e: CliError, generation: u32, rc: &Reconnecting| match e {
        // Only a reconnect explains an unknown upload; otherwise it is a real error.
        CliError::Daemon(d) if d.code == ErrorCode::NotFound && rc.generation() != generation => {
            UploadError::Lost(upload_id.clone())
        }
        e => UploadError::Cli(e),
    };

    let mut reader = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| local_error(&file.path, "cannot open", &e))?;
    let mut buf = vec![0u8; MAX_IPC_CHUNK];
    let mut offset = 0u64;
    let generation = rc.generation();
    progress.set(0, file.size);
    while offset < file.size {
        let want = usize::try_from((file.size - offset).min(MAX_IPC_CHUNK as u64)).unwrap_or(MAX_IPC_CHUNK);
        reader
            .seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| local_error(&file.path, "cannot seek in", &e))?;
        let chunk = &mut buf[..want];
        reader.read_exact(chunk).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                CliError::Daemon(firma_ipc::IpcError::invalid(format!(
                    "{} shrank while it was being sent (expected {} bytes); send it again once it is complete",
                    file.path.display(),
                    file.size
                )))
            } else {
                local_error(&file.path, "cannot read", &e)
            }
        })?;
        let id = upload_id.clone();
        let held = rc
            .call(|c, ctx| {
                let id = id.clone();
                let data = serde_bytes::ByteBuf::from(chunk.to_vec());
                async move { c.upload_chunk(ctx, id, offset, data).await }
            })
            .await
            .map_err(|e| lost(e, generation, rc))?;
        if held > file.size {
            return Err(UploadError::Cli(CliError::Daemon(firma_ipc::IpcError::internal(
                format!(
                    "the daemon holds {held} bytes of upload {upload_id} but {} has only {}",
                    file.path.display(),
                    file.size
                ),
            ))));
        }
        // Normally offset + want; after a reconnect whatever the daemon kept.
        offset = held;
        progress.set(offset, file.size);
    }
    let id = upload_id.clone();
    let staged = rc
        .call(|c, ctx| {
            let id = id.clone();
            async move { c.upload_finish(ctx, id).await }
        })
        .await
        .map_err(|e| lost(e, generation, rc))?;
    Ok(staged)
}

/// The MIME type of a file name, from its extension; documents to sign are mostly PDFs.
pub fn mime_type(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "odt" => "application/vnd.oasis.opendocument.text",
        "txt" | "text" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_by_extension() {
        assert_eq!(mime_type("contract.PDF"), "application/pdf");
        assert_eq!(mime_type("notes.txt"), "text/plain");
        assert_eq!(mime_type("no-extension"), "application/octet-stream");
        assert_eq!(mime_type("archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn inspect_names_the_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pdf");
        let err = LocalFile::inspect(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.pdf"), "{err}");
        let err = LocalFile::inspect(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let file = dir.path().join("a.pdf");
        std::fs::write(&file, b"12345").unwrap();
        let f = LocalFile::inspect(&file).unwrap();
        assert_eq!(
            (f.file_name.as_str(), f.size, f.mime_type.as_str()),
            ("a.pdf", 5, "application/pdf")
        );
    }
}
