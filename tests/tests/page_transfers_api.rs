//! firma-web's transfer routes, which the Peer Explorer page drives, exercised as an API client
//! would: a multipart upload larger than the 1 MiB body cap (lifted on this route only) streamed
//! into the daemon, list, reject, cancel, a download refused before the document arrived, and
//! malformed forms answered with errors that say what is wrong.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use firma_tests::transfer::sha256_hex;
use firma_tests::web::{HttpResponse, Web, WebOpts, http};
use firma_tests::{Daemon, DaemonOpts, wait_for_value};
use rand::{RngCore as _, SeedableRng as _};
use serde_json::{Value, json};

const BOUNDARY: &str = "firma-test-boundary-7d1f";
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// One multipart form field: a text field, or a file part when `file_name` is given.
struct Part<'a> {
    name: &'a str,
    file_name: Option<&'a str>,
    data: &'a [u8],
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match p.file_name {
            Some(f) => body.extend_from_slice(
                format!(
                    "content-disposition: form-data; name=\"{}\"; filename=\"{f}\"\r\n\
                     content-type: application/octet-stream\r\n\r\n",
                    p.name
                )
                .as_bytes(),
            ),
            None => body
                .extend_from_slice(format!("content-disposition: form-data; name=\"{}\"\r\n\r\n", p.name).as_bytes()),
        }
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_form(web: &Web, parts: &[Part<'_>]) -> anyhow::Result<HttpResponse> {
    let mut h = web.auth();
    h.push((
        "content-type".into(),
        format!("multipart/form-data; boundary={BOUNDARY}"),
    ));
    Ok(http(web.addr(), "POST", "/api/transfers", &h, Some(&form(parts))).await?)
}

/// A form sending `doc` (named `name`) to `peer`.
async fn send(web: &Web, peer: &str, name: &str, doc: &[u8]) -> anyhow::Result<Value> {
    let size = doc.len().to_string();
    let r = post_form(
        web,
        &[
            Part {
                name: "peer",
                file_name: None,
                data: peer.as_bytes(),
            },
            Part {
                name: "message",
                file_name: None,
                data: b"from the API suite",
            },
            Part {
                name: "size",
                file_name: None,
                data: size.as_bytes(),
            },
            Part {
                name: "file",
                file_name: Some(name),
                data: doc,
            },
        ],
    )
    .await?;
    ensure!(r.status == 200, "upload answered {}: {}", r.status, r.text());
    r.json()
}

/// Wait until `web` lists transfer `id` in a state `pred` accepts; returns it.
async fn wait_transfer(web: &Web, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let path = format!("/api/transfers/{id}");
    let (t, _) = wait_for_value(STATE_TIMEOUT, what, || {
        let got = web.get_json(&path);
        let pred = &pred;
        async move { got.await.ok().filter(|t| pred(t)) }
    })
    .await?;
    Ok(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_routes_stream_reject_cancel_and_explain() -> anyhow::Result<()> {
    let a = Daemon::spawn(DaemonOpts::named("tapi-a")).await?;
    let b = Daemon::spawn(DaemonOpts::named("tapi-b")).await?;
    a.connect_to(&b).await?;
    let wa = Web::spawn(WebOpts::new("tapi-a", a.socket())).await?;
    let wb = Web::spawn(WebOpts::new("tapi-b", b.socket())).await?;

    // Over the 1 MiB body cap and over several IPC chunks: streamed, and the hash matches.
    let mut doc = vec![0u8; 2 * 1024 * 1024 + 123];
    rand::rngs::StdRng::seed_from_u64(11).fill_bytes(&mut doc);
    let t = send(&wa, b.peer_id(), "big.bin", &doc).await?;
    ensure!(
        t["direction"] == "outgoing" && t["peer_id"] == json!(b.peer_id()),
        "{t}"
    );
    ensure!(t["documents"][0]["sha256"] == json!(sha256_hex(&doc)), "{t}");
    ensure!(t["documents"][0]["size"] == json!(doc.len()), "{t}");
    let listed = wa.get_json("/api/transfers?filter=outgoing").await?;
    ensure!(
        listed.as_array().is_some_and(|l| l.iter().any(|x| x["id"] == t["id"])),
        "{listed}"
    );
    // The cap still holds everywhere else.
    let big_json = json!({ "target": "x".repeat(2 * 1024 * 1024) });
    let r = wa.post("/api/peers/connect", &big_json).await?;
    ensure!(r.status == 413, "a 2 MiB JSON body answered {}", r.status);

    // b asks (unknown peer): pending there; its document cannot be downloaded before it is
    // accepted, and the answer says so; reject it.
    let (incoming, _) = wait_for_value(STATE_TIMEOUT, "the transfer pending at b", || {
        let got = wb.get_json("/api/transfers?filter=incoming");
        async move {
            got.await.ok().and_then(|l| {
                l.as_array()
                    .and_then(|l| l.iter().find(|t| t["state"] == "pending").cloned())
            })
        }
    })
    .await?;
    let in_id = incoming["id"].as_str().context("no id")?.to_owned();
    let doc_id = incoming["documents"][0]["id"].as_str().context("no document id")?;
    let early = wb.get(&format!("/api/transfers/{in_id}/documents/{doc_id}")).await?;
    ensure!(
        early.status == 503
            && early.json()?["error"]
                .as_str()
                .is_some_and(|e| e.contains("waits for acceptance")),
        "download before arrival answered {}: {}",
        early.status,
        early.text()
    );
    let r = wb
        .post(
            &format!("/api/transfers/{in_id}/reject"),
            &json!({"reason": "not expected"}),
        )
        .await?;
    ensure!(
        r.status == 200 && r.json()?["state"] == "rejected",
        "reject answered {}: {}",
        r.status,
        r.text()
    );
    let out_id = t["id"].as_str().context("no id")?;
    wait_transfer(&wa, out_id, "the sender to see the rejection", |t| {
        t["state"] == "rejected" || t["state"] == "failed"
    })
    .await?;

    // Cancel: a second transfer, cancelled by its sender while b still holds it.
    let t2 = send(&wa, b.peer_id(), "second.bin", &doc[..4096]).await?;
    let id2 = t2["id"].as_str().context("no id")?;
    let r = wa.post(&format!("/api/transfers/{id2}/cancel"), &json!({})).await?;
    ensure!(
        r.status == 200 && r.json()?["state"] == "cancelled",
        "cancel answered {}: {}",
        r.status,
        r.text()
    );

    // Malformed forms say what is wrong.
    let peer = b.peer_id().as_bytes();
    let cases: [(&str, Vec<Part<'_>>, &str); 4] = [
        (
            "a file without its size",
            vec![
                Part {
                    name: "peer",
                    file_name: None,
                    data: peer,
                },
                Part {
                    name: "file",
                    file_name: Some("a"),
                    data: b"abc",
                },
            ],
            "size",
        ),
        (
            "more bytes than announced",
            vec![
                Part {
                    name: "peer",
                    file_name: None,
                    data: peer,
                },
                Part {
                    name: "size",
                    file_name: None,
                    data: b"2",
                },
                Part {
                    name: "file",
                    file_name: Some("a"),
                    data: b"abcdef",
                },
            ],
            "announced size",
        ),
        (
            "no recipient",
            vec![
                Part {
                    name: "size",
                    file_name: None,
                    data: b"3",
                },
                Part {
                    name: "file",
                    file_name: Some("a"),
                    data: b"abc",
                },
            ],
            "peer",
        ),
        (
            "an unknown field",
            vec![Part {
                name: "sneaky",
                file_name: None,
                data: b"1",
            }],
            "sneaky",
        ),
    ];
    for (what, parts, says) in cases {
        let r = post_form(&wa, &parts).await?;
        let err = r.json()?["error"].as_str().unwrap_or_default().to_owned();
        ensure!(
            r.status == 400 && err.contains(says),
            "{what}: answered {} {err:?}",
            r.status
        );
    }
    let r = wa.get("/api/transfers/nope").await?;
    ensure!(
        r.status == 404,
        "an unknown transfer answered {}: {}",
        r.status,
        r.text()
    );
    let doc_api = wa.get_json("/api/openapi.json").await?;
    ensure!(doc_api["paths"]["/api/transfers"]["post"]["requestBody"]["content"]["multipart/form-data"].is_object());
    Ok(())
}
