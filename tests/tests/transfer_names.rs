//! File names from peers are data: documents named `../../x`, with a NUL, 4 KiB long, or
//! `<img onerror=...>` arrive with their original names kept as metadata, while nothing is
//! written outside the receiver's transfer folder (`<state>/blobs/incoming/<transfer>/`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::transfer::TransferState;
use firma_tests::transfer::{
    connected_pair, download_sha256, files_under, send, sha256_hex, upload_bytes, wait_incoming, wait_state,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn hostile_names() -> Vec<String> {
    vec![
        "../../x".to_owned(),
        "../../../../../../../../tmp/firma-escape-x".to_owned(),
        "a\0b.pdf".to_owned(),
        "L".repeat(4096),
        "<img src=x onerror=alert(1)>.pdf".to_owned(),
        "/etc/passwd".to_owned(),
        "..".to_owned(),
        "con\u{1b}[2Jtrol\r\n.pdf".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_file_names_are_kept_as_metadata_only() -> anyhow::Result<()> {
    let (a, b) = connected_pair("names", "accept").await?;
    let before: HashSet<PathBuf> = files_under(b.dir())?.into_iter().collect();

    let names = hostile_names();
    let mut staged = Vec::new();
    let mut contents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = format!("document {i} named {name:?}").into_bytes();
        staged.push(upload_bytes(&a, name, "application/pdf", &bytes).await?);
        contents.push(bytes);
    }
    let out = send(&a, b.peer_id(), &staged, None).await?;
    wait_state(&a, &out.id, TransferState::Delivered, DEADLINE).await?;
    let got = wait_incoming(&b, a.peer_id(), DEADLINE).await?;
    let got = wait_state(&b, &got.id, TransferState::Received, DEADLINE).await?;

    // The original names, byte for byte, as metadata; the bytes intact.
    ensure!(got.documents.len() == names.len(), "documents: {:?}", got.documents);
    for ((doc, name), bytes) in got.documents.iter().zip(&names).zip(&contents) {
        ensure!(&doc.file_name == name, "name {name:?} arrived as {:?}", doc.file_name);
        ensure!(
            doc.complete && doc.sha256 == sha256_hex(bytes),
            "document {name:?}: {doc:?}"
        );
        ensure!(
            download_sha256(&b, &got.id, &doc.id, doc.size).await? == doc.sha256,
            "bytes of {name:?}"
        );
    }

    // Everything new on the receiver is inside the state dir, and every new file of the
    // transfer inside its own folder there.
    let folder = b.state_dir().join("blobs").join("incoming").join(&got.id);
    let folder = folder
        .canonicalize()
        .with_context(|| format!("no transfer folder {}", folder.display()))?;
    let state = b.state_dir().canonicalize()?;
    let mut in_folder = 0;
    for path in files_under(b.dir())? {
        if before.contains(&path) {
            continue;
        }
        let real = path.canonicalize().unwrap_or_else(|_| path.clone());
        ensure!(
            real.starts_with(&state) || path.ends_with("daemon.log"),
            "written outside the state dir: {}",
            path.display()
        );
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ensure!(
            name.len() <= 255 && name != ".." && !name.chars().any(|c| c.is_control() || "<>\"'\\".contains(c)),
            "a hostile name reached the disk: {}",
            path.display()
        );
        if real.starts_with(&folder) {
            in_folder += 1;
        }
    }
    ensure!(
        in_folder >= names.len(),
        "only {in_folder} files in {}",
        folder.display()
    );
    for escaped in [
        b.dir().join("x"),
        b.state_dir().join("x"),
        PathBuf::from("/tmp/firma-escape-x"),
    ] {
        ensure!(!escaped.exists(), "{} was written", escaped.display());
    }

    // The operator's text view escapes them instead of feeding them to the terminal.
    let shown = b.cli(&["transfer", &got.id]).await?.ok()?;
    ensure!(
        !shown.stdout.contains('\u{1b}') && !shown.stdout.contains('\0'),
        "raw control characters: {:?}",
        shown.stdout
    );
    ensure!(
        shown.stdout.contains("<img src=x onerror=alert(1)>.pdf"),
        "{}",
        shown.stdout
    );
    Ok(())
}
