//! A recipient whose disk fills up in the middle of a transfer: it stays up and answers, its log
//! names what could not be written and why, nothing is marked complete, and once there is room
//! again the transfer finishes from what was already stored, with the right bytes.
//!
//! The recipient's state dir is a small tmpfs that the test mounts, then remounts larger; that
//! needs root (CI runs as root), and the test says so rather than pass without trying.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use firma_ipc::transfer::TransferState;
use firma_ipc::types::StoreHealth;
use firma_tests::transfer::{download_sha256, make_document, send, transfer, transfer_opts, upload_doc, wait_state};
use firma_tests::{Daemon, wait_for};

const MIB: u64 = 1 << 20;
const DOC_SIZE: u64 = 48 * MIB;
/// Room for the daemon's store and identity and about half the document.
const SMALL: &str = "size=24m";
const LARGE: &str = "size=256m";
const DEADLINE: Duration = Duration::from_secs(120);

fn mount(args: &[&str], target: &Path) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .context("running mount")?;
    ensure!(
        out.status.success(),
        "mount {args:?} {} failed: {}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Unmounts the tmpfs when the test ends, however it ends (after the daemons are gone).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_with_a_full_disk_stays_up_and_finishes_when_there_is_room() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("this test mounts a tmpfs and needs root (CI runs as root)");
    }
    let dir = tempfile::Builder::new().prefix("firma-e2e-diskfull-").tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir(&state)?;
    mount(&["-t", "tmpfs", "-o", SMALL, "tmpfs"], &state)?;
    let tmpfs = Tmpfs(state.clone());

    let mut recv_opts = transfer_opts("full-b", "accept");
    recv_opts.state_dir = Some(state.clone());
    let (a, b) = tokio::try_join!(
        Daemon::spawn(transfer_opts("full-a", "accept")),
        Daemon::spawn(recv_opts)
    )?;
    a.connect_to(&b).await?;
    let doc = make_document(dir.path(), "big.bin", DOC_SIZE, 11)?;
    let staged = upload_doc(&a, &doc).await?;
    let out = send(&a, b.peer_id(), &[staged], None).await?;

    wait_for(DEADLINE, "the recipient to report that its disk is full", || async {
        b.log().contains("No space left on device")
    })
    .await?;
    // Still serving, nothing complete on either side.
    b.status().await.context("the recipient stopped answering")?;
    let incoming = firma_tests::transfer::wait_incoming(&b, a.peer_id(), DEADLINE).await?;
    ensure!(
        incoming.state != TransferState::Received && incoming.documents.iter().all(|d| !d.complete),
        "marked complete on a full disk: {incoming:?}"
    );
    let sent = transfer(&a, &out.id).await?;
    ensure!(
        sent.state != TransferState::Delivered,
        "delivered on a full disk: {sent:?}"
    );
    let log = b.log();
    let line = log
        .lines()
        .find(|l| l.contains("No space left on device"))
        .context("no ENOSPC line")?;
    println!("recipient said: {line}");
    ensure!(
        line.contains(&state.display().to_string()) && line.contains("free space"),
        "the error should name the file and what to do: {line}"
    );

    // Room again: the sender's retry finishes the transfer with the right bytes.
    mount(&["-o", &format!("remount,{LARGE}")], &state)?;
    let sent = wait_state(&a, &out.id, TransferState::Delivered, DEADLINE).await?;
    ensure!(
        sent.receipt.as_ref().is_some_and(|r| r.verified),
        "receipt {:?}",
        sent.receipt
    );
    let got = wait_state(&b, &incoming.id, TransferState::Received, DEADLINE).await?;
    let d = got.documents.first().context("no document")?;
    ensure!(d.complete && d.sha256 == doc.sha256, "received {d:?}");
    ensure!(
        download_sha256(&b, &got.id, &d.id, d.size).await? == doc.sha256,
        "bytes differ after the disk had room again"
    );
    let st = b.status().await?;
    ensure!(
        st.store.health == StoreHealth::Healthy,
        "store after the full disk: {:?}",
        st.store
    );
    drop((a, b));
    drop(tmpfs);
    Ok(())
}
