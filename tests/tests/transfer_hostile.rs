//! A hostile v2 sender (a rust-libp2p peer that speaks the protocol wrongly on purpose, see
//! `firma_tests::transfer::hostile`) is refused: a manifest with a forged signature is answered
//! with an error and leaves nothing behind; a corrupted chunk fails the transfer; a manifest
//! whose document hash does not match its (self-consistent) chunks is never marked complete.
//! In every case no document of the hostile transfer is complete and no receipt is sent.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::transfer::{TransferFilter, TransferInfo, TransferState};
use firma_tests::transfer::hostile::{
    HostilePeer, Kind, Manifest, read_answer, send_chunk, send_join, send_manifest, write_frame,
};
use firma_tests::transfer::{transfer_opts, transfers};
use firma_tests::{Daemon, wait_for_value};
use libp2p::identity::Keypair;

const CHUNK: u32 = 64 * 1024;
const STEP: Duration = Duration::from_secs(30);

async fn setup(name: &str) -> anyhow::Result<(Daemon, HostilePeer)> {
    let d = Daemon::spawn(transfer_opts(name, "accept")).await?;
    let h = HostilePeer::dial(&d.tcp_addr().await?).await?;
    d.wait_connected(&h.peer_id.to_string(), STEP).await?;
    Ok((d, h))
}

fn document(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// What the daemon holds of transfer `id`, if anything.
async fn held(d: &Daemon, id: &str) -> anyhow::Result<Option<TransferInfo>> {
    Ok(transfers(d, TransferFilter::All)
        .await?
        .into_iter()
        .find(|t| t.id == id))
}

/// Nothing of transfer `id` is complete on `d`.
async fn nothing_complete(d: &Daemon, id: &str) -> anyhow::Result<()> {
    if let Some(t) = held(d, id).await? {
        ensure!(
            t.state != TransferState::Received && t.documents.iter().all(|doc| !doc.complete),
            "the daemon keeps part of a hostile transfer as complete: {t:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_manifest_signature_is_refused() -> anyhow::Result<()> {
    let (d, mut h) = setup("forged").await?;
    let bytes = document(100_000);
    let m = Manifest::of("forged-1", &h.peer_id, d.peer_id(), &bytes, CHUNK);
    // Signed by another key than the one the connection authenticated.
    let signed = m.sign_with(&Keypair::generate_ed25519())?;
    let mut s = h.open(d.peer_id()).await?;
    send_manifest(&mut s, &signed).await?;
    let answer = read_answer(&mut s)
        .await?
        .context("the daemon closed without an answer")?;
    ensure!(answer.kind == Kind::Error, "forged manifest answered with {answer:?}");
    ensure!(
        answer.reason.as_deref().is_some_and(|r| r.contains("signature")),
        "{answer:?}"
    );
    ensure!(
        held(&d, "forged-1").await?.is_none(),
        "a transfer was recorded for a forged manifest"
    );

    // A manifest signed by this peer but naming another as its sender is refused too.
    let mut m = Manifest::of("forged-2", &h.peer_id, d.peer_id(), &bytes, CHUNK);
    m.sender = Keypair::generate_ed25519().public().to_peer_id().to_string();
    let mut s = h.open(d.peer_id()).await?;
    send_manifest(&mut s, &m.sign_with(&h.key)?).await?;
    let answer = read_answer(&mut s).await?.context("no answer")?;
    ensure!(
        answer.kind == Kind::Error,
        "manifest claiming another sender answered with {answer:?}"
    );
    ensure!(
        held(&d, "forged-2").await?.is_none(),
        "recorded a manifest naming another sender"
    );
    Ok(())
}

/// Send a signed manifest of `bytes`, get the accept, join a data stream and send each chunk,
/// corrupting chunk `corrupt` if given; then Done. Returns the answers of the data stream and
/// the control stream's answer to Done.
async fn hostile_transfer(
    d: &Daemon,
    h: &mut HostilePeer,
    m: &Manifest,
    bytes: &[u8],
    corrupt: Option<usize>,
) -> anyhow::Result<(Vec<Kind>, Option<Kind>)> {
    let mut ctl = h.open(d.peer_id()).await?;
    send_manifest(&mut ctl, &m.sign_with(&h.key)?).await?;
    let accepted = read_answer(&mut ctl).await?.context("no answer to the manifest")?;
    ensure!(
        accepted.kind == Kind::Accept,
        "a well-signed manifest answered with {accepted:?}"
    );
    let mut data = h.open(d.peer_id()).await?;
    send_join(&mut data, &m.transfer_id).await?;
    let mut answers = Vec::new();
    for (i, chunk) in bytes.chunks(CHUNK as usize).enumerate() {
        let mut chunk = chunk.to_vec();
        if corrupt == Some(i) {
            let middle = chunk.len() / 2;
            chunk[middle] ^= 0x5a;
        }
        if send_chunk(&mut data, 0, u32::try_from(i)?, &chunk).await.is_err() {
            break;
        }
        match read_answer(&mut data).await {
            Ok(Some(a)) => {
                answers.push(a.kind);
                if a.kind != Kind::Ack {
                    break;
                }
            }
            _ => break,
        }
    }
    // Done: a receipt now would acknowledge what was never verified.
    let done = match write_frame(&mut ctl, Kind::Done, &[]).await {
        Ok(()) => read_answer(&mut ctl).await.ok().flatten().map(|a| a.kind),
        Err(_) => None,
    };
    Ok((answers, done))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunk_is_refused_and_nothing_completes() -> anyhow::Result<()> {
    let (d, mut h) = setup("corrupt").await?;
    let bytes = document(4 * CHUNK as usize + 1000);
    let m = Manifest::of("corrupt-1", &h.peer_id, d.peer_id(), &bytes, CHUNK);
    let (answers, done) = hostile_transfer(&d, &mut h, &m, &bytes, Some(2)).await?;
    ensure!(
        answers.starts_with(&[Kind::Ack, Kind::Ack]) && answers.get(2) == Some(&Kind::Error),
        "chunks 0 and 1 acked, the corrupted chunk 2 refused; got {answers:?}"
    );
    ensure!(
        done != Some(Kind::Receipt),
        "the daemon signed a receipt for a corrupted transfer"
    );
    let (t, _) = wait_for_value(STEP, "the hostile transfer to be recorded", || async {
        held(&d, "corrupt-1").await.ok().flatten()
    })
    .await?;
    ensure!(t.peer_id == h.peer_id.to_string(), "recorded sender {}", t.peer_id);
    nothing_complete(&d, "corrupt-1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_hash_that_does_not_match_is_never_complete() -> anyhow::Result<()> {
    let (d, mut h) = setup("wronghash").await?;
    let bytes = document(3 * CHUNK as usize);
    let mut m = Manifest::of("wronghash-1", &h.peer_id, d.peer_id(), &bytes, CHUNK);
    // Every chunk matches its chunk hash, but the document's hash is of other bytes.
    m.documents[0].sha256 = firma_tests::transfer::sha256_hex(b"some other document");
    let (answers, done) = hostile_transfer(&d, &mut h, &m, &bytes, None).await?;
    ensure!(answers.iter().all(|k| *k == Kind::Ack), "chunk answers {answers:?}");
    ensure!(
        done != Some(Kind::Receipt),
        "the daemon signed a receipt for a document whose hash did not match"
    );
    ensure!(
        held(&d, "wronghash-1").await?.is_some(),
        "the accepted transfer was not recorded"
    );
    nothing_complete(&d, "wronghash-1").await
}
