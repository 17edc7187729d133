//! Resume: either daemon SIGKILLed at a random point of a transfer and started again, and the
//! transfer finishes from the last verified chunk, with at most two chunks sent twice (read from
//! `chunks_resent` on both sides). A recipient that is offline when the transfer is created gets
//! it when it comes up. The random point is printed, to replay a failure.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use firma_ipc::transfer::{TransferInfo, TransferState};
use firma_tests::Daemon;
use firma_tests::transfer::{
    download_sha256, make_document, send, transfer_opts, upload_doc, wait_incoming, wait_state, wait_transfer,
};
use rand::Rng;

const MIB: u64 = 1 << 20;
/// Big enough that a debug daemon is still moving it when the kill point comes.
const DOC_SIZE: u64 = 160 * MIB;
const DEADLINE: Duration = Duration::from_secs(300);
/// The requirement: a resume re-sends at most this many chunks.
const MAX_RESENT: u64 = 2;

fn opts(name: &str) -> firma_tests::DaemonOpts {
    transfer_opts(name, "accept")
}

/// Where to kill: a random fraction of the bytes, away from both ends.
fn kill_point(total: u64) -> u64 {
    let fraction: f64 = rand::thread_rng().gen_range(0.15..0.85);
    println!("kill point: {fraction:.3} of {total} bytes");
    (total as f64 * fraction) as u64
}

/// Wait until `t` on `d` has moved `at` bytes; fails if it finishes first.
async fn wait_bytes(d: &Daemon, id: &str, at: u64) -> anyhow::Result<TransferInfo> {
    let t = wait_transfer(d, id, DEADLINE, &format!("transfer {id} to pass {at} bytes"), |t| {
        t.bytes_done >= at || t.state.is_final()
    })
    .await?;
    if t.state.is_final() {
        bail!(
            "transfer {id} ended ({:?}) before the kill point {at}; the test proves nothing",
            t.state
        );
    }
    Ok(t)
}

/// Both records final and correct: delivered with a verified receipt, received whole with the
/// right hash, and no more than [`MAX_RESENT`] chunks sent twice on either side.
async fn check_finished(a: &Daemon, b: &Daemon, out_id: &str, sha256: &str) -> anyhow::Result<()> {
    let sent = wait_state(a, out_id, TransferState::Delivered, DEADLINE).await?;
    ensure!(
        sent.receipt.as_ref().is_some_and(|r| r.verified),
        "receipt {:?}",
        sent.receipt
    );
    let got = wait_incoming(b, a.peer_id(), DEADLINE).await?;
    let got = wait_state(b, &got.id, TransferState::Received, DEADLINE).await?;
    let doc = got.documents.first().context("no document")?;
    ensure!(doc.complete && doc.sha256 == sha256, "received {doc:?}");
    ensure!(
        download_sha256(b, &got.id, &doc.id, doc.size).await? == sha256,
        "bytes differ after resume"
    );
    println!(
        "chunks re-sent: sender {}, receiver {}",
        sent.chunks_resent, got.chunks_resent
    );
    ensure!(
        sent.chunks_resent <= MAX_RESENT && got.chunks_resent <= MAX_RESENT,
        "chunks re-sent: sender {}, receiver {} (at most {MAX_RESENT})",
        sent.chunks_resent,
        got.chunks_resent
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_transfer_resumes() -> anyhow::Result<()> {
    let (a, mut b) = tokio::try_join!(Daemon::spawn(opts("rk-a")), Daemon::spawn(opts("rk-b")))?;
    a.connect_to(&b).await?;
    let doc = make_document(a.dir(), "big.bin", DOC_SIZE, 11)?;
    let staged = upload_doc(&a, &doc).await?;
    let out = send(&a, b.peer_id(), &[staged], None).await?;
    let incoming = wait_incoming(&b, a.peer_id(), DEADLINE).await?;
    let at = kill_point(doc.size);
    let before = wait_bytes(&b, &incoming.id, at).await?;
    b.kill9().await?;
    println!("receiver killed at {} bytes", before.bytes_done);
    b.start().await?;
    check_finished(&a, &b, &out.id, &doc.sha256).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_mid_transfer_resumes() -> anyhow::Result<()> {
    let (mut a, b) = tokio::try_join!(Daemon::spawn(opts("sk-a")), Daemon::spawn(opts("sk-b")))?;
    a.connect_to(&b).await?;
    let doc = make_document(a.dir(), "big.bin", DOC_SIZE, 12)?;
    let staged = upload_doc(&a, &doc).await?;
    let out = send(&a, b.peer_id(), &[staged], None).await?;
    let at = kill_point(doc.size);
    let before = wait_bytes(&a, &out.id, at).await?;
    a.kill9().await?;
    println!("sender killed at {} bytes", before.bytes_done);
    a.start().await?;
    check_finished(&a, &b, &out.id, &doc.sha256).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_it_when_it_comes_up() -> anyhow::Result<()> {
    let (a, mut b) = tokio::try_join!(Daemon::spawn(opts("off-a")), Daemon::spawn(opts("off-b")))?;
    // They met once, so each knows the other; then the recipient goes away.
    a.connect_to(&b).await?;
    b.stop().await?;
    let doc = make_document(a.dir(), "while-away.pdf", 2 * MIB + 5, 13)?;
    let staged = upload_doc(&a, &doc).await?;
    let out = send(&a, b.peer_id(), &[staged], Some("for when you are back")).await?;
    // Not an error: an attempt found the recipient unreachable, and the transfer waits in the
    // outbox for the next one, with nothing sent yet.
    let waiting = wait_transfer(&a, &out.id, DEADLINE, "an attempt to find the recipient away", |t| {
        t.error.is_some()
    })
    .await?;
    ensure!(
        waiting.state == TransferState::Pending,
        "an offline recipient made the transfer {:?}: {:?}",
        waiting.state,
        waiting.error
    );
    ensure!(
        waiting.error.as_deref().is_some_and(|e| e.contains("not reachable")),
        "the waiting transfer says why: {:?}",
        waiting.error
    );
    ensure!(
        waiting.bytes_done == 0 && waiting.documents.iter().all(|d| !d.complete),
        "nothing can have been delivered to a stopped recipient: {waiting:?}"
    );
    b.start().await?;
    check_finished(&a, &b, &out.id, &doc.sha256).await
}
