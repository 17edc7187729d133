//! Transfers between two real daemons driven with `firmactl`: three documents, one of 200 MiB,
//! arrive with matching hashes and a verified receipt; the JSON the tools rely on has its shape;
//! a transfer from an unknown peer waits for the operator under the `ask` policy, and
//! `accept`, `reject` and `cancel` do what they say.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::transfer::{TransferFilter, TransferState};
use firma_tests::Daemon;
use firma_tests::transfer::{
    connected_pair, download_sha256, make_document, send, sha256_file, transfer_opts, upload_bytes, wait_incoming,
    wait_state, wait_transfer,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// A 200 MiB transfer on a shared 2-core machine with debug daemons.
const BIG_DEADLINE: Duration = Duration::from_secs(300);
const SMALL_DEADLINE: Duration = Duration::from_secs(60);

fn str_of<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    v[key].as_str().with_context(|| format!("no string `{key}` in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_documents_one_of_200_mib_arrive_intact() -> anyhow::Result<()> {
    let (a, b) = connected_pair("send", "accept").await?;
    let docs = [
        make_document(a.dir(), "contract.pdf", 48_213, 1)?,
        make_document(a.dir(), "annex.bin", 3 * MIB + 17, 2)?,
        make_document(a.dir(), "scan.tiff", 200 * MIB, 3)?,
    ];
    let paths: Vec<String> = docs.iter().map(|d| d.path.display().to_string()).collect();
    let mut args = vec![
        "--json",
        "--timeout",
        "60s",
        "send",
        b.peer_id(),
        "--no-wait",
        "-m",
        "three documents",
    ];
    args.extend(paths.iter().map(String::as_str));
    let sent = a.cli(&args).await?.ok()?.json()?;
    let id = str_of(&sent, "id")?.to_owned();
    ensure!(sent["state"].is_string(), "send printed {sent}");

    let out = wait_state(&a, &id, TransferState::Delivered, BIG_DEADLINE).await?;
    let receipt = out.receipt.as_ref().context("delivered without a receipt")?;
    ensure!(receipt.verified && receipt.signer == b.peer_id(), "receipt {receipt:?}");
    ensure!(
        receipt.document_sha256 == docs.iter().map(|d| d.sha256.clone()).collect::<Vec<_>>(),
        "receipt acknowledges {:?}",
        receipt.document_sha256
    );

    // The receiver's view, through the JSON the tools rely on.
    let list = b.cli(&["--json", "transfers"]).await?.ok()?.json()?;
    let incoming = list
        .as_array()
        .context("transfers is not a list")?
        .iter()
        .find(|t| t["peer_id"] == a.peer_id())
        .with_context(|| format!("no transfer from a in {list}"))?
        .clone();
    ensure!(incoming["state"] == "received", "incoming transfer {incoming}");
    let tid = str_of(&incoming, "id")?.to_owned();
    let shown = b.cli(&["--json", "transfer", &tid]).await?.ok()?.json()?;
    let documents = shown["documents"].as_array().context("no documents")?;
    ensure!(documents.len() == 3, "documents: {}", shown["documents"]);
    for (doc, want) in documents.iter().zip(&docs) {
        ensure!(str_of(doc, "file_name")? == want.file_name, "document {doc}");
        ensure!(
            doc["complete"] == true && str_of(doc, "sha256")? == want.sha256,
            "document {doc}"
        );
    }

    // The small ones through `firmactl get` (temp file, hash check, rename); the big one through the API.
    for (doc, want) in documents.iter().zip(&docs).take(2) {
        let to = b.dir().join(format!("got-{}", want.file_name));
        let to_s = to.display().to_string();
        b.cli(&["--json", "get", &tid, str_of(doc, "id")?, "-o", &to_s])
            .await?
            .ok()?;
        ensure!(sha256_file(&to)? == want.sha256, "{} arrived different", want.file_name);
    }
    // A second `get` to the same path refuses to overwrite without --force, and leaves no temp file.
    let first = str_of(&documents[0], "id")?;
    let to = b.dir().join(format!("got-{}", docs[0].file_name));
    let to_s = to.display().to_string();
    let again = b.cli(&["get", &tid, first, "-o", &to_s]).await?;
    ensure!(
        again.code == 1 && again.stderr.contains("--force"),
        "second get: {again:?}"
    );
    b.cli(&["get", &tid, &docs[0].file_name, "-o", &to_s, "--force"])
        .await?
        .ok()?;
    ensure!(sha256_file(&to)? == docs[0].sha256, "get by file name with --force");
    let leftovers: Vec<_> = std::fs::read_dir(b.dir())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    ensure!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    let big = str_of(&documents[2], "id")?;
    ensure!(
        download_sha256(&b, &tid, big, docs[2].size).await? == docs[2].sha256,
        "200 MiB document differs"
    );

    // Text mode lists it too.
    let text = b.cli(&["transfers", "--incoming"]).await?.ok()?;
    ensure!(
        text.stdout.contains(&tid) && text.stdout.contains("received"),
        "{}",
        text.stdout
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_policy_waits_for_accept_or_reject() -> anyhow::Result<()> {
    let (a, b) = connected_pair("ask", "ask").await?;

    // Rejected with a reason: the sender sees the rejection.
    let doc = upload_bytes(&a, "not-this.pdf", "application/pdf", b"%PDF-1.7 reject me").await?;
    let first = send(&a, b.peer_id(), &[doc], Some("one")).await?;
    let waiting = wait_incoming(&b, a.peer_id(), SMALL_DEADLINE).await?;
    ensure!(
        waiting.state == TransferState::Pending,
        "under `ask` it is {:?}",
        waiting.state
    );
    b.cli(&["reject", &waiting.id, "--reason", "wrong contract"])
        .await?
        .ok()?;
    wait_state(&b, &waiting.id, TransferState::Rejected, SMALL_DEADLINE).await?;
    // Rejected is the receiving side's state; the sender's transfer failed, with the reason.
    let rejected = wait_transfer(&a, &first.id, SMALL_DEADLINE, "the sender to see the rejection", |t| {
        t.state.is_final()
    })
    .await?;
    ensure!(
        rejected.state == TransferState::Failed
            && rejected.error.as_deref().is_some_and(|e| e.contains("wrong contract")),
        "sender's record of the rejection: {rejected:?}"
    );

    // Accepted: waits pending on b until the operator says yes, then arrives. (A sender that
    // delivered once is known from then on and accepted without asking, so this comes second.)
    let doc = upload_bytes(&a, "please-sign.pdf", "application/pdf", b"%PDF-1.7 accept me").await?;
    let second = send(&a, b.peer_id(), &[doc], Some("two")).await?;
    let (pending, _) = firma_tests::wait_for_value(SMALL_DEADLINE, "the second incoming transfer", || async {
        firma_tests::transfer::transfers(&b, TransferFilter::Incoming)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.id != waiting.id && t.state == TransferState::Pending)
    })
    .await?;
    let accepted = b.cli(&["--json", "accept", &pending.id]).await?.ok()?.json()?;
    ensure!(accepted["id"] == pending.id.as_str(), "accept printed {accepted}");
    wait_state(&b, &pending.id, TransferState::Received, SMALL_DEADLINE).await?;
    wait_state(&a, &second.id, TransferState::Delivered, SMALL_DEADLINE).await?;
    let shown = b.cli(&["--json", "transfers", "--active"]).await?.ok()?.json()?;
    ensure!(
        shown.as_array().is_some_and(Vec::is_empty),
        "still active on b: {shown}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_follows_to_delivery_and_cancel_stops_a_waiting_transfer() -> anyhow::Result<()> {
    let (a, mut b) = tokio::try_join!(
        Daemon::spawn(transfer_opts("follow-a", "accept")),
        Daemon::spawn(transfer_opts("follow-b", "accept"))
    )?;
    a.connect_to(&b).await?;
    let doc = make_document(a.dir(), "memo.txt", 5 * MIB + 3, 9)?;
    let path = doc.path.display().to_string();
    // Without --no-wait, send returns once the receipt is back, and prints the final transfer.
    let done = a.cli(&["--json", "send", b.peer_id(), &path]).await?.ok()?;
    let v = done.json()?;
    ensure!(v["state"] == "delivered", "send printed {v}");
    ensure!(
        !done.stderr.contains('\u{1b}'),
        "a progress bar was drawn without a terminal: {:?}",
        done.stderr
    );

    // A transfer to a peer that is away waits in the outbox; cancel ends it.
    b.stop().await?;
    let sent = a
        .cli(&["--json", "send", "--no-wait", b.peer_id(), &path])
        .await?
        .ok()?
        .json()?;
    let id = str_of(&sent, "id")?.to_owned();
    wait_state(&a, &id, TransferState::Pending, SMALL_DEADLINE).await?;
    let cancelled = a.cli(&["--json", "cancel", &id]).await?.ok()?.json()?;
    ensure!(cancelled["state"] == "cancelled", "cancel printed {cancelled}");
    let again = a.cli(&["--json", "transfers", "--outgoing"]).await?.ok()?.json()?;
    let states: Vec<&Value> = again
        .as_array()
        .context("a list")?
        .iter()
        .map(|t| &t["state"])
        .collect();
    ensure!(states.len() == 2, "outgoing: {again}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_keeps_following_across_a_daemon_restart() -> anyhow::Result<()> {
    let (mut a, b) = tokio::try_join!(
        Daemon::spawn(transfer_opts("restart-a", "accept")),
        Daemon::spawn(transfer_opts("restart-b", "accept"))
    )?;
    a.connect_to(&b).await?;
    let doc = make_document(a.dir(), "long.bin", 120 * MIB, 21)?;
    let path = doc.path.display().to_string();
    let child = firma_tests::transfer::spawn_cli(&a, &["--json", "send", b.peer_id(), &path])?;

    // While firmactl streams the file in, the daemon is killed: the upload must resume at the
    // offset the daemon kept (its partial upload file shows how far it got).
    let uploads = a.state_dir().join("blobs").join("uploads");
    let upload_size = || -> u64 {
        std::fs::read_dir(&uploads)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    firma_tests::wait_for(BIG_DEADLINE, "the upload to be under way", || async {
        upload_size() > 20 * MIB
    })
    .await?;
    a.kill9().await?;
    a.start().await?;

    // Once the transfer moves, the sending daemon goes away again.
    let (moving, _) = firma_tests::wait_for_value(BIG_DEADLINE, "the transfer to move", || async {
        firma_tests::transfer::transfers(&a, TransferFilter::Outgoing)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.bytes_done > 0 && !t.state.is_final())
    })
    .await?;
    // This time a clean stop (SIGTERM): calls in flight may be answered `unavailable` first.
    a.restart().await?;

    let out = tokio::time::timeout(BIG_DEADLINE, child.wait_with_output())
        .await
        .context("firmactl send did not finish")??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.success(),
        "firmactl send exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(stdout.trim()).with_context(|| format!("not JSON: {stdout}"))?;
    ensure!(
        v["id"] == moving.id.as_str() && v["state"] == "delivered",
        "send printed {v}"
    );
    ensure!(
        stderr.matches("reconnected").count() >= 2,
        "not two reconnects: {stderr}"
    );
    ensure!(
        !stderr.contains("starting it again"),
        "the upload started over instead of resuming: {stderr}"
    );
    Ok(())
}
