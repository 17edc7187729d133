//! What `firmactl` says about a transfer the recipient holds for a decision (inbox `ask`), read
//! from two real daemons: the sender reads that it waits for the recipient to accept (not that
//! the recipient is unreachable: it is connected), and on the recipient `transfer` and `get`
//! say it waits for acceptance, as does the daemon's own download answer.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_tests::transfer::{connected_pair, send, upload_bytes, wait_incoming};
use firma_tests::wait_for_value;

const STEP: Duration = Duration::from_secs(60);

/// The `state` line of `firmactl transfer ID`.
fn state_line(text: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with("state"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_transfer_says_it_waits_for_acceptance_on_both_sides() -> anyhow::Result<()> {
    let (a, b) = connected_pair("held", "ask").await?;
    let doc = upload_bytes(&a, "contract.pdf", "application/pdf", b"%PDF-1.7 hold me").await?;
    let out = send(&a, b.peer_id(), &[doc], Some("please sign")).await?;
    let held = wait_incoming(&b, a.peer_id(), STEP).await?;

    // The sender, while the recipient (connected) decides.
    let (line, _) = wait_for_value(STEP, "the sender to say it waits for acceptance", || async {
        let text = a.cli(&["transfer", &out.id]).await.ok()?.ok().ok()?.stdout;
        let line = state_line(&text);
        line.contains("waiting for the recipient to accept").then_some(line)
    })
    .await?;
    ensure!(
        !line.contains("reachable") && line.contains("pending"),
        "sender reads: {line}"
    );
    ensure!(
        a.is_connected_to(b.peer_id()).await,
        "the recipient was not connected meanwhile"
    );

    // The recipient: `transfer` tells the operator what to run, `get` says it waits.
    let text = b.cli(&["transfer", &held.id]).await?.ok()?.stdout;
    let line = state_line(&text);
    ensure!(
        line.contains("firmactl accept") && !line.contains("outbox"),
        "recipient reads: {line}"
    );
    let doc_id = held.documents.first().context("no document")?.id.clone();
    let path = b.dir().join("contract.pdf");
    let path = path.to_string_lossy().into_owned();
    let got = b.cli(&["get", &held.id, &doc_id, "-o", &path]).await?;
    ensure!(got.code == 1, "get on a held transfer exited {}: {got:?}", got.code);
    ensure!(
        got.stderr.contains("waits for acceptance") && !got.stderr.contains("arrived complete"),
        "get says: {}",
        got.stderr
    );
    ensure!(!b.dir().join("contract.pdf").exists(), "get wrote a file");
    // The daemon answers the same to any client (firma-web's downloads).
    let c = b.client().await?;
    let answer = c
        .client
        .download(ctx(CALL_TIMEOUT), held.id.clone(), doc_id, 0, 1024)
        .await?;
    let e = answer.err().context("a held document was downloadable")?;
    ensure!(e.message.contains("waits for acceptance"), "daemon said: {}", e.message);
    Ok(())
}
