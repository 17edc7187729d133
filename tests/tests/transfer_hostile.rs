//! A hostile v2 sender (a rust-libp2p peer that speaks the protocol wrongly on purpose, see
//! `firma_tests::transfer::hostile`) is refused: a manifest with a forged signature is answered
//! with an error and leaves nothing behind; a corrupted chunk fails the transfer; a manifest
//! whose document hash does not match its (self-consistent) chunks is never marked complete.
//! In every case no document of the hostile transfer is complete and no receipt is sent.
//!
//! Under the default inbox `ask`, hostile peers flooding v2 offers and v1 bodies (64 documents
//! with long names, as in the security review) fill at most the pending limits: the rest is
//! refused with the limit's name, the store stays healthy and barely grows, what is held on
//! disk stays under the byte limit, a rejected or expired transfer leaves no file behind, and
//! a pinned peer's transfer still arrives.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::transfer::{TransferFilter, TransferInfo, TransferState};
use firma_ipc::types::StoreHealth;
use firma_tests::harness::{DaemonOpts, flatten};
use firma_tests::transfer::hostile::{
    HostilePeer, Kind, Manifest, read_answer, send_chunk, send_join, send_manifest, v1_message, write_frame,
};
use firma_tests::transfer::{
    download_sha256, files_under, send, transfer_opts, transfers, upload_bytes, wait_state, wait_transfer,
};
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

/// Pending limits of the flood tests: small, so that a few messages reach each of them.
const PER_PEER: usize = 3;
const TOTAL: usize = 5;
const PER_PEER_BYTES: u64 = 1 << 20;
const TOTAL_BYTES: u64 = 4 << 20;

fn inbox_opts(name: &str, extra: &str) -> DaemonOpts {
    let mut o = DaemonOpts::named(name);
    o.config = Some(format!(
        "[transfer]\nunknown_peers = \"ask\"\npending_max_transfers = {TOTAL}\n\
         pending_max_transfers_per_peer = {PER_PEER}\npending_max_bytes = {TOTAL_BYTES}\n\
         pending_max_bytes_per_peer = {PER_PEER_BYTES}\n{extra}"
    ));
    o
}

async fn hostile(d: &Daemon) -> anyhow::Result<HostilePeer> {
    let h = HostilePeer::dial(&d.tcp_addr().await?).await?;
    d.wait_connected(&h.peer_id.to_string(), STEP).await?;
    Ok(h)
}

/// Sends a v1 message and returns the daemon's refusal, or `None` when it took it.
async fn v1(d: &Daemon, h: &mut HostilePeer, body: &[u8]) -> anyhow::Result<Option<String>> {
    let answer = h.send_v1(d.peer_id(), body).await?;
    Ok(match answer["success"].as_bool() {
        Some(true) => None,
        _ => Some(answer["error"].as_str().unwrap_or("(no reason given)").to_owned()),
    })
}

async fn pending_from(d: &Daemon, peer: Option<&HostilePeer>) -> anyhow::Result<Vec<TransferInfo>> {
    Ok(transfers(d, TransferFilter::Incoming)
        .await?
        .into_iter()
        .filter(|t| t.state == TransferState::Pending && peer.is_none_or(|h| t.peer_id == h.peer_id.to_string()))
        .collect())
}

fn bytes_under(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for f in files_under(dir)? {
        let m = std::fs::symlink_metadata(&f)?;
        if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_offers_and_v1_bodies_stays_within_the_pending_limits() -> anyhow::Result<()> {
    let (d, honest) = tokio::try_join!(
        Daemon::spawn(inbox_opts("flood", "")),
        Daemon::spawn(transfer_opts("flood-honest", "accept"))
    )?;
    let (mut h1, mut h2, mut h3) = (hostile(&d).await?, hostile(&d).await?, hostile(&d).await?);

    // h1: a v2 offer, which waits for a decision (the daemon holds the stream meanwhile).
    let doc = document(100_000);
    let offer = Manifest::of("offer-h1", &h1.peer_id, d.peer_id(), &doc, CHUNK);
    let mut held_offer = h1.open(d.peer_id()).await?;
    send_manifest(&mut held_offer, &offer.sign_with(&h1.key)?).await?;
    wait_for_value(STEP, "the v2 offer to wait for a decision", || async {
        held(&d, "offer-h1")
            .await
            .ok()
            .flatten()
            .filter(|t| t.state == TransferState::Pending)
    })
    .await?;

    // h1: v1 bodies until its per-peer count is reached; each body 4 documents of 32 KiB.
    let mut refusals = Vec::new();
    for i in 0..6 {
        let body = v1_message(&format!("h1-v1-{i}"), 4, 32 << 10, 200, "flood");
        if let Some(why) = v1(&d, &mut h1, &body).await? {
            refusals.push(why);
        }
    }
    ensure!(refusals.len() == 6 + 1 - PER_PEER, "h1's refusals: {refusals:?}");
    ensure!(
        refusals
            .iter()
            .all(|r| r.contains("transfer.pending_max_transfers_per_peer")),
        "a refusal names the per-peer limit: {refusals:?}"
    );

    // h2: one body over the per-peer bytes, then small ones until the total count is reached.
    let big = v1_message("h2-big", 3, 512 << 10, 20, "too big");
    let why = v1(&d, &mut h2, &big)
        .await?
        .context("a body over the per-peer bytes was taken")?;
    ensure!(why.contains("transfer.pending_max_bytes_per_peer"), "{why}");
    for i in 0..2 {
        let body = v1_message(&format!("h2-v1-{i}"), 2, 16 << 10, 40, "small");
        ensure!(v1(&d, &mut h2, &body).await?.is_none(), "h2's body {i} was refused");
    }
    ensure!(pending_from(&d, None).await?.len() == TOTAL, "the inbox is full now");

    // h3 finds it full, over v1 and over v2.
    let why = v1(&d, &mut h3, &v1_message("h3-v1", 1, 10, 10, "x"))
        .await?
        .context("taken past the total")?;
    ensure!(why.contains("transfer.pending_max_transfers ="), "{why}");
    let m = Manifest::of("offer-h3", &h3.peer_id, d.peer_id(), &doc, CHUNK);
    let mut s = h3.open(d.peer_id()).await?;
    send_manifest(&mut s, &m.sign_with(&h3.key)?).await?;
    let answer = read_answer(&mut s).await?.context("no answer to h3's offer")?;
    ensure!(
        answer.kind == Kind::Reject,
        "an offer past the total answered {answer:?}"
    );
    ensure!(
        answer
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("pending_max_transfers")),
        "{answer:?}"
    );

    // The flood of the review: v1 messages of 64 documents with long names, over and over.
    let before = d.status().await?.store;
    for i in 0..150 {
        let body = v1_message(&format!("h3-flood-{i}"), 64, 16, 255, "flood");
        ensure!(v1(&d, &mut h3, &body).await?.is_some(), "flood message {i} was taken");
    }
    let after = d.status().await?.store;
    ensure!(after.health == StoreHealth::Healthy, "store after the flood: {after:?}");
    ensure!(
        after.used_bytes.saturating_sub(before.used_bytes) < 1 << 20,
        "the store grew from {} to {} bytes under a refused flood",
        before.used_bytes,
        after.used_bytes
    );
    let all = pending_from(&d, None).await?;
    ensure!(all.len() <= TOTAL, "{} transfers pending", all.len());
    for h in [&h1, &h2, &h3] {
        ensure!(
            pending_from(&d, Some(h)).await?.len() <= PER_PEER,
            "a peer holds more than its share"
        );
    }
    let incoming = d.state_dir().join("blobs").join("incoming");
    let on_disk = bytes_under(&incoming)?;
    ensure!(on_disk <= TOTAL_BYTES, "{on_disk} bytes of pending documents on disk");

    // A rejected v1 transfer loses its files at once, and frees its place.
    let c = d.client().await?;
    let victim = "h1-v1-0";
    ensure!(
        incoming.join(victim).exists(),
        "the quarantined body of {victim} is on disk"
    );
    flatten(
        c.client
            .reject_transfer(ctx(CALL_TIMEOUT), victim.into(), String::new())
            .await,
    )?;
    ensure!(
        !incoming.join(victim).exists(),
        "the rejected transfer's documents are still on disk"
    );
    let body = v1_message("h1-v1-again", 1, 100, 10, "after a reject");
    ensure!(v1(&d, &mut h1, &body).await?.is_none(), "the freed place was not given");
    drop(held_offer);

    // A pinned peer is not held by the inbox, full as it is.
    flatten(c.client.pin(ctx(CALL_TIMEOUT), honest.peer_id().to_owned(), true).await)?;
    honest.connect_to(&d).await?;
    let bytes = b"%PDF-1.7 an honest document".to_vec();
    let staged = upload_bytes(&honest, "honest.pdf", "application/pdf", &bytes).await?;
    let out = send(&honest, d.peer_id(), &[staged], Some("from a pinned peer")).await?;
    wait_state(&honest, &out.id, TransferState::Delivered, STEP).await?;
    let got = wait_state(&d, &out.id, TransferState::Received, STEP).await?;
    let sha = &got.documents[0].sha256;
    ensure!(
        download_sha256(&d, &out.id, &got.documents[0].id, got.documents[0].size).await? == *sha,
        "the honest document arrived damaged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transfers_expire_and_leave_no_files() -> anyhow::Result<()> {
    let d = Daemon::spawn(inbox_opts("expiry", "pending_expiry = \"2s\"\n")).await?;
    let mut h = hostile(&d).await?;
    let body = v1_message("soon-gone", 2, 4096, 30, "decide quickly");
    ensure!(v1(&d, &mut h, &body).await?.is_none(), "the v1 body was refused");
    let dir = d.state_dir().join("blobs").join("incoming").join("soon-gone");
    ensure!(dir.exists(), "the quarantined body is on disk while it waits");
    let t = wait_transfer(&d, "soon-gone", STEP, "the pending transfer to expire", |t| {
        t.state == TransferState::Rejected
    })
    .await?;
    ensure!(
        t.error
            .as_deref()
            .is_some_and(|e| e.contains("transfer.pending_expiry")),
        "{t:?}"
    );
    ensure!(!dir.exists(), "the expired transfer's documents are still on disk");
    Ok(())
}
