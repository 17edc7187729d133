//! Uploads over the control socket are bounded: an upload that receives nothing for
//! `transfer.upload_idle_timeout` is removed (so 64 abandoned uploads no longer block every
//! further one), and what uploads and unsent staged documents hold together is capped by
//! `transfer.max_staged_bytes`. A refused upload says why and what to do.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::transfer::UploadStart;
use firma_tests::harness::{DaemonOpts, flatten};
use firma_tests::transfer::{send, upload_bytes};
use firma_tests::{Daemon, wait_for_value};

const STEP: Duration = Duration::from_secs(30);
/// What `upload_begin` allows open at once (the daemon's MAX_OPEN_UPLOADS).
const OPEN_UPLOADS: usize = 64;

fn opts(name: &str, transfer: &str) -> DaemonOpts {
    let mut o = DaemonOpts::named(name);
    o.config = Some(format!("[transfer]\n{transfer}"));
    o
}

fn start(size: u64) -> UploadStart {
    UploadStart {
        file_name: "upload.pdf".to_owned(),
        size,
        mime_type: "application/pdf".to_owned(),
    }
}

fn uploads_in(d: &Daemon) -> anyhow::Result<usize> {
    let dir = d.state_dir().join("blobs").join("uploads");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_and_free_their_places() -> anyhow::Result<()> {
    let d = Daemon::spawn(opts("idle-uploads", "upload_idle_timeout = \"2s\"\n")).await?;
    let c = d.client().await?;
    let mut abandoned = Vec::new();
    for _ in 0..OPEN_UPLOADS {
        abandoned.push(flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start(10)).await)?);
    }
    let refused = flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start(10)).await)
        .err()
        .context("an upload past the open limit was begun")?;
    let why = format!("{refused:#}");
    ensure!(
        why.contains("finish one first") && why.contains("transfer.upload_idle_timeout"),
        "the refusal says what to do: {why}"
    );
    // Once they are idle past the timeout, their places are free again.
    wait_for_value(STEP, "a new upload once the abandoned ones are idle", || async {
        flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start(10)).await).ok()
    })
    .await?;
    let gone = flatten(
        c.client
            .upload_chunk(
                ctx(CALL_TIMEOUT),
                abandoned[0].clone(),
                0,
                serde_bytes::ByteBuf::from(vec![1]),
            )
            .await,
    )
    .err()
    .context("a chunk was taken for an expired upload")?;
    let why = format!("{gone:#}");
    ensure!(
        why.contains("upload_idle_timeout") && why.contains("begin a new one"),
        "{why}"
    );
    // The upkeep task removes idle uploads by itself too, without a new upload asking.
    wait_for_value(STEP, "the upkeep task to remove the idle upload", || async {
        (uploads_in(&d).ok()? == 0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_bytes_are_capped_until_a_transfer_takes_them() -> anyhow::Result<()> {
    let cap = 1u64 << 20;
    let d = Daemon::spawn(opts(
        "staged-cap",
        &format!("max_document_bytes = {cap}\nmax_staged_bytes = {cap}\n"),
    ))
    .await?;
    let c = d.client().await?;
    let staged = upload_bytes(&d, "big.pdf", "application/pdf", &vec![7u8; 800 << 10]).await?;
    let refused = flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start(300 << 10)).await)
        .err()
        .context("an upload past transfer.max_staged_bytes was begun")?;
    let why = format!("{refused:#}");
    ensure!(
        why.contains("transfer.max_staged_bytes") && why.contains("raise"),
        "the refusal names the setting and the way out: {why}"
    );
    // Once a transfer holds the staged document, it costs the staging area nothing.
    let someone = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    send(&d, &someone.to_string(), &[staged], None).await?;
    flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start(300 << 10)).await)?;
    Ok(())
}
