//! Upstream compatibility of transfers: a js-libp2p peer that speaks only upstream Firma-Sign's
//! `/firma-sign/transfer/1.0.0` (tests/js/v1-peer.mjs) sends us a transfer, which is received,
//! hash-checked and acknowledged with `{"success":true}`; a document whose hash does not match is
//! refused and nothing of it is marked complete; and the daemon sends to that peer over v1,
//! because identify shows it lacks v2. The transfer's message travels both ways where upstream's
//! model has it: `options.message`, and each recipient's `options.message`.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::transfer::{TransferFilter, TransferState};
use firma_tests::harness::CONNECT_TIMEOUT;
use firma_tests::js::JsNode;
use firma_tests::transfer::{
    download_sha256, send, sha256_hex, transfer_opts, transfers, upload_bytes, wait_state, wait_transfer,
};
use firma_tests::{Daemon, wait_for_value};
use serde_json::json;

const STEP: Duration = Duration::from_secs(30);
const AGENT: &str = "firma-sign-upstream/1.0.0";

async fn setup(name: &str) -> anyhow::Result<(Daemon, JsNode)> {
    let d = Daemon::spawn(transfer_opts(name, "accept")).await?;
    let mut js = JsNode::spawn_script("v1-peer.mjs", AGENT).await?;
    let addr = d.tcp_addr().await?;
    js.request(json!({"cmd": "dial", "addr": addr}), STEP).await?;
    d.wait_connected(&js.peer_id, CONNECT_TIMEOUT).await?;
    Ok((d, js))
}

const MESSAGE_IN: &str = "Please sign both by Friday";

fn v1_transfer(id: &str, docs: &[(&str, &str, Option<String>)]) -> serde_json::Value {
    json!({
        "transferId": id,
        "documents": docs.iter().map(|(doc_id, text, hash)| {
            let mut d = json!({
                "id": doc_id,
                "fileName": format!("{doc_id}.pdf"),
                "mimeType": "application/pdf",
                "size": text.len(),
                "text": text,
                "metadata": {},
            });
            if let Some(h) = hash {
                d["hash"] = json!(h);
            }
            d
        }).collect::<Vec<_>>(),
        // Upstream trusts these claims; we must not: the sender is the connection's peer.
        "sender": {"senderId": "12D3KooWForgedSenderForgedSenderForgedSenderXXXX", "name": "P2P Node",
                   "transport": "p2p", "timestamp": 1_764_201_600_000u64, "verificationStatus": "verified"},
        "options": {"message": MESSAGE_IN, "requireAllSignatures": false},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_peer_sends_v1_and_is_acknowledged() -> anyhow::Result<()> {
    let (d, mut js) = setup("v1-in").await?;
    let one = "%PDF-1.4 upstream document one";
    let two = "second document, sent without a hash as upstream allows";
    let t = v1_transfer(
        "V1StGXR8_Z5jdHi6B-myT",
        &[("doc-1", one, Some(sha256_hex(one.as_bytes()))), ("doc-2", two, None)],
    );
    let answer = js
        .request(json!({"cmd": "send_v1", "peer_id": d.peer_id(), "transfer": t}), STEP)
        .await?;
    ensure!(
        answer["response"] == json!({"success": true}),
        "daemon answered {answer}"
    );

    let (got, _) = wait_for_value(STEP, "the v1 transfer to be received", || async {
        transfers(&d, TransferFilter::Incoming)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.state == TransferState::Received)
    })
    .await?;
    ensure!(
        got.peer_id == js.peer_id,
        "sender recorded as {} (the JSON claimed a forged id)",
        got.peer_id
    );
    ensure!(got.protocol.ends_with("/1.0.0"), "protocol {}", got.protocol);
    ensure!(got.documents.len() == 2, "documents {:?}", got.documents);
    for (doc, text) in got.documents.iter().zip([one, two]) {
        ensure!(doc.complete && doc.sha256 == sha256_hex(text.as_bytes()), "{doc:?}");
        ensure!(
            download_sha256(&d, &got.id, &doc.id, doc.size).await? == doc.sha256,
            "bytes of {}",
            doc.id
        );
    }
    ensure!(got.documents[0].file_name == "doc-1.pdf", "{:?}", got.documents[0]);
    ensure!(
        got.message.as_deref() == Some(MESSAGE_IN),
        "the v1 transfer's options.message was not kept: {:?}",
        got.message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_document_with_a_wrong_hash_is_refused() -> anyhow::Result<()> {
    let (d, mut js) = setup("v1-bad").await?;
    let text = "the bytes that arrive";
    let wrong = sha256_hex(b"the bytes the sender claimed");
    let t = v1_transfer("BadHash_1", &[("doc-1", text, Some(wrong))]);
    let answer = js
        .request(json!({"cmd": "send_v1", "peer_id": d.peer_id(), "transfer": t}), STEP)
        .await?;
    ensure!(
        answer["response"]["success"] == json!(false),
        "daemon answered {answer}"
    );
    ensure!(answer["response"]["error"].is_string(), "a refusal says why: {answer}");
    for t in transfers(&d, TransferFilter::All).await? {
        ensure!(
            t.documents.iter().all(|doc| !doc.complete) && t.state != TransferState::Received,
            "something of the refused transfer is kept as complete: {t:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sends_v1_to_a_peer_without_v2() -> anyhow::Result<()> {
    let (d, mut js) = setup("v1-out").await?;
    // The daemon must have seen the js node's protocols before it picks v1.
    wait_for_value(STEP, "the daemon to identify the js peer", || async {
        d.peer(&js.peer_id)
            .await
            .ok()
            .filter(|p| p.protocols.iter().any(|x| x.ends_with("/transfer/1.0.0")))
    })
    .await?;
    let bytes = b"%PDF-1.7 from the daemon to upstream".to_vec();
    let staged = upload_bytes(&d, "for-upstream.pdf", "application/pdf", &bytes).await?;
    let out = send(&d, &js.peer_id, &[staged], Some("hello upstream")).await?;
    let done = wait_transfer(&d, &out.id, STEP, "the v1 send to finish", |t| t.state.is_final()).await?;
    ensure!(
        done.state == TransferState::Delivered,
        "v1 send ended {:?}: {:?}",
        done.state,
        done.error
    );
    ensure!(done.protocol.ends_with("/1.0.0"), "sent over {}", done.protocol);
    let got = js
        .wait_line(STEP, "the js peer to receive it", |v| v["event"] == "v1_received")
        .await?;
    ensure!(got["peer_id"] == d.peer_id(), "js saw sender {}", got["peer_id"]);
    // Upstream's shape, as upstream reads it: the sender names itself in `sender.senderId`.
    ensure!(
        got["sender"]["senderId"] == d.peer_id(),
        "sender block {}",
        got["sender"]
    );
    ensure!(got["sender"]["transport"] == "p2p", "sender block {}", got["sender"]);
    let doc = got["documents"].get(0).context("no document")?;
    ensure!(doc["data_sha256"] == sha256_hex(&bytes).as_str(), "js got {doc}");
    ensure!(
        doc["hash"] == doc["data_sha256"],
        "the daemon's hash field must match the data: {doc}"
    );
    ensure!(doc["file_name"] == "for-upstream.pdf", "{doc}");
    // The message, where upstream's model has it: the transfer's options, and the recipient's.
    ensure!(
        got["options"]["message"] == "hello upstream",
        "options sent: {}",
        got["options"]
    );
    let recipient = got["recipients"].get(0).context("no recipient in the v1 message")?;
    ensure!(recipient["identifier"] == js.peer_id.as_str(), "recipient {recipient}");
    ensure!(
        recipient["options"]["message"] == "hello upstream",
        "recipient {recipient}"
    );
    let _ = wait_state(&d, &out.id, TransferState::Delivered, STEP).await?;
    Ok(())
}
