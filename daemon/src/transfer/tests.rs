//! Two real daemons in this process (real swarms on loopback, real stores, real control
//! sockets) moving a few MiB through the transfer engine, as a client drives them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firma_ipc::client::{Connection, connect, ctx};
use firma_ipc::transfer::{
    MAX_IPC_CHUNK, NewTransfer, RecipientSpec, TransferFilter, TransferInfo, TransferState, UploadStart,
};
use firma_ipc::types::{Role, Status};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, InboxPolicy};
use crate::{RunControl, run};

const CALL: Duration = Duration::from_secs(30);

struct Daemon {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    socket: PathBuf,
    state: PathBuf,
}

impl Daemon {
    async fn start(dir: &Path, name: &str, policy: InboxPolicy) -> Daemon {
        Self::start_with(dir, name, |c| {
            c.transfer.unknown_peers = policy;
            // Small chunks so that a few MiB are many chunks spread over several streams.
            c.transfer.chunk_size = 64 * 1024;
            c.transfer.parallel_streams = 3;
        })
        .await
    }

    async fn start_with(dir: &Path, name: &str, adjust: impl FnOnce(&mut Config)) -> Daemon {
        let mut c = Config {
            state_dir: dir.join(name).join("state"),
            socket: dir.join(name).join("ctl.sock"),
            allow_root: true,
            ..Config::default()
        };
        c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        c.network.mdns = false;
        c.network.dht = false;
        adjust(&mut c);
        c.validate().unwrap();
        let stop = CancellationToken::new();
        let (_tx, reloads) = tokio::sync::mpsc::channel(1);
        let (socket, state) = (c.socket.clone(), c.state_dir.clone());
        let task = tokio::spawn(run(
            c,
            RunControl {
                shutdown: stop.clone(),
                reloads,
                set_log_level: None,
                inherited_socket: None,
            },
        ));
        Daemon {
            stop,
            task,
            socket,
            state,
        }
    }

    async fn client(&self) -> Connection {
        wait_for("the control socket", Duration::from_secs(30), || async {
            assert!(!self.task.is_finished(), "the daemon stopped while starting");
            connect(&self.socket, "transfer-test", Role::Operator).await.ok()
        })
        .await
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task")
            .expect("daemon run");
    }
}

/// Polls `f` until it yields a value or the deadline passes (then fails naming `what`).
async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload(c: &Connection, name: &str, data: &[u8]) -> String {
    let id = c
        .client
        .upload_begin(
            ctx(CALL),
            UploadStart {
                file_name: name.into(),
                size: data.len() as u64,
                mime_type: "application/pdf".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    let mut offset = 0;
    for part in data.chunks(MAX_IPC_CHUNK) {
        let held = c
            .client
            .upload_chunk(ctx(CALL), id.clone(), offset, serde_bytes::ByteBuf::from(part.to_vec()))
            .await
            .unwrap()
            .unwrap();
        offset += part.len() as u64;
        assert_eq!(held, offset);
    }
    let staged = c.client.upload_finish(ctx(CALL), id).await.unwrap().unwrap();
    assert_eq!(staged.sha256, hex::encode(Sha256::digest(data)));
    staged.id
}

async fn download(c: &Connection, t: &str, d: &str) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let part = c
            .client
            .download(ctx(CALL), t.into(), d.into(), out.len() as u64, MAX_IPC_CHUNK as u32)
            .await
            .unwrap()
            .unwrap();
        if part.is_empty() {
            return out;
        }
        out.extend_from_slice(&part);
    }
}

async fn get(c: &Connection, id: &str) -> Option<TransferInfo> {
    c.client.transfer(ctx(CALL), id.into()).await.ok()?.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_move_between_two_daemons_verified_and_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), "a", InboxPolicy::Accept).await;
    // B asks its operator about peers it does not know.
    let b = Daemon::start(dir.path(), "b", InboxPolicy::Ask).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let b_status = cb.client.status(ctx(CALL)).await.unwrap().unwrap();
    let b_addr = b_status.listen_addrs[0].clone();
    ca.client.connect(ctx(CALL), b_addr).await.unwrap().unwrap();

    let big = pseudo_random(3 * 1024 * 1024 + 12_345, 7);
    let hostile = "../../x\0<img onerror=alert(1)>".to_owned() + &"a".repeat(4096);
    let small = b"%PDF-1.4 tiny".to_vec();
    let d1 = upload(&ca, "contract.pdf", &big).await;
    let d2 = upload(&ca, &hostile, &small).await;
    let sent = ca
        .client
        .send_transfer(
            ctx(CALL),
            NewTransfer {
                documents: vec![d1, d2],
                recipients: vec![RecipientSpec {
                    peer_id: b_status.peer_id.clone(),
                    document_ids: vec![],
                }],
                message: Some("please sign".into()),
                deadline_ms: None,
                require_all_signatures: true,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.documents.len(), 2);

    // B holds it as pending until its operator accepts.
    let pending = wait_for("the offer to reach B", Duration::from_secs(30), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Pending)
    })
    .await;
    assert_eq!(pending.peer_id, ca.hello.peer_id, "the sender is the connection's peer");
    assert!(pending.documents.iter().all(|d| !d.complete));
    cb.client
        .accept_transfer(ctx(CALL), sent.id.clone())
        .await
        .unwrap()
        .unwrap();

    let received = wait_for("B to receive", Duration::from_secs(60), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Received)
    })
    .await;
    assert!(received.documents.iter().all(|d| d.complete));
    assert_eq!(received.bytes_done, (big.len() + small.len()) as u64);
    let delivered = wait_for("A to hold the receipt", Duration::from_secs(30), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Delivered)
    })
    .await;
    let receipt = delivered.receipt.expect("receipt stored");
    assert!(receipt.verified);
    assert_eq!(receipt.signer, b_status.peer_id);
    assert_eq!(delivered.chunks_resent, 0);

    assert_eq!(download(&cb, &sent.id, &received.documents[0].id).await, big);
    assert_eq!(download(&cb, &sent.id, &received.documents[1].id).await, small);
    assert_eq!(
        received.documents[1].file_name, hostile,
        "the original name is kept as metadata"
    );

    // On disk: only derived names, all inside the transfer's folder, no partial files left.
    let folder = b.state.join("blobs/incoming").join(&sent.id);
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".part") && n.len() <= 67 && !n.contains(['/', '\0', '<']))
    );

    let listed = cb
        .client
        .transfers(ctx(CALL), TransferFilter::Incoming)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listed.len(), 1);
    let active = ca
        .client
        .transfers(ctx(CALL), TransferFilter::Active)
        .await
        .unwrap()
        .unwrap();
    assert!(active.is_empty());

    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_inbox_fails_the_transfer_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ca, cb, b_status) = connected_pair(dir.path(), InboxPolicy::Reject).await;
    let d = upload(&ca, "x.pdf", &pseudo_random(100_000, 3)).await;
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    let failed = wait_for("A to see the rejection", Duration::from_secs(30), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Failed)
    })
    .await;
    assert!(failed.error.unwrap_or_default().contains("unknown peers"));
    assert!(get(&cb, &sent.id).await.is_none(), "a refused offer leaves no record");
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_incoming_transfer_rejects_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ca, cb, b_status) = connected_pair(dir.path(), InboxPolicy::Ask).await;
    let d = upload(&ca, "x.pdf", &pseudo_random(100_000, 5)).await;
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    // B's operator is asked; instead of answering, they cancel it.
    wait_for("B to hold the offer", Duration::from_secs(30), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Pending)
    })
    .await;
    let cancelled = cb
        .client
        .cancel_transfer(ctx(CALL), sent.id.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, TransferState::Rejected, "{cancelled:?}");
    let failed = wait_for("A to see the refusal", Duration::from_secs(30), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Failed)
    })
    .await;
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("rejected by the recipient")),
        "{failed:?}"
    );
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

/// A (accepting everything) and B (with `b_policy`), A connected to B, a client for each, and
/// B's status (its peer id and addresses).
async fn connected_pair(dir: &Path, b_policy: InboxPolicy) -> (Daemon, Daemon, Connection, Connection, Status) {
    let a = Daemon::start(dir, "a", InboxPolicy::Accept).await;
    let b = Daemon::start(dir, "b", b_policy).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let b_status = cb.client.status(ctx(CALL)).await.unwrap().unwrap();
    ca.client
        .connect(ctx(CALL), b_status.listen_addrs[0].clone())
        .await
        .unwrap()
        .unwrap();
    (a, b, ca, cb, b_status)
}

async fn send_one(ca: &Connection, to: &str, docs: Vec<String>) -> TransferInfo {
    ca.client
        .send_transfer(
            ctx(CALL),
            NewTransfer {
                documents: docs,
                recipients: vec![RecipientSpec {
                    peer_id: to.to_owned(),
                    document_ids: vec![],
                }],
                message: None,
                deadline_ms: None,
                require_all_signatures: false,
            },
        )
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restarted_mid_transfer_resumes_from_its_verified_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ca, cb, b_status) = connected_pair(dir.path(), InboxPolicy::Accept).await;
    let data = pseudo_random(48 * 1024 * 1024, 11);
    let d = upload(&ca, "big.pdf", &data).await;
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    let quarter = data.len() as u64 / 4;
    wait_for("a quarter to arrive", Duration::from_secs(60), || async {
        get(&cb, &sent.id).await.filter(|t| t.bytes_done >= quarter)
    })
    .await;
    drop(cb);
    b.stop().await;
    // Same state directory: the partial file is all the new process knows of the bytes.
    let b = Daemon::start(dir.path(), "b", InboxPolicy::Accept).await;
    let cb = b.client().await;
    let received = wait_for("B to finish after its restart", Duration::from_secs(120), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Received)
    })
    .await;
    let delivered = wait_for("A to hold the receipt", Duration::from_secs(30), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Delivered)
    })
    .await;
    assert!(delivered.chunks_resent <= 2, "re-sent {}", delivered.chunks_resent);
    assert!(received.chunks_resent <= 2, "received twice {}", received.chunks_resent);
    assert_eq!(download(&cb, &sent.id, &received.documents[0].id).await, data);
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_rejects_the_transfer_and_nothing_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ca, cb, b_status) = connected_pair(dir.path(), InboxPolicy::Accept).await;
    let data = pseudo_random(1024 * 1024, 5);
    let d = upload(&ca, "c.pdf", &data).await;
    // The bytes change after they were hashed: the signed manifest no longer matches them.
    let staged = a.state.join("blobs/staged").join(&d);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&staged).unwrap();
        f.write_all_at(b"tampered", 300_000).unwrap();
    }
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    let rejected = wait_for("B to reject", Duration::from_secs(30), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Rejected)
    })
    .await;
    assert!(rejected.documents.iter().all(|d| !d.complete));
    assert!(rejected.error.unwrap_or_default().contains("failed verification"));
    let failed = wait_for("A to give up", Duration::from_secs(30), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Failed)
    })
    .await;
    assert!(failed.receipt.is_none());
    let err = cb
        .client
        .download(ctx(CALL), sent.id.clone(), rejected.documents[0].id.clone(), 0, 1024)
        .await
        .unwrap();
    assert!(err.is_err(), "nothing of a rejected transfer can be downloaded");
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

/// Throughput of the data path between two daemons on loopback; run it in release:
/// `FIRMA_BENCH_MIB=1024 FIRMA_BENCH_STREAMS=4 cargo test --release -p firma-daemon -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run in release"]
async fn throughput() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let mib = env("FIRMA_BENCH_MIB", 256);
    let streams = env("FIRMA_BENCH_STREAMS", 4);
    let dir = tempfile::tempdir().unwrap();
    let adjust = |c: &mut Config| {
        c.transfer.unknown_peers = InboxPolicy::Accept;
        c.transfer.parallel_streams = streams as u32;
    };
    let a = Daemon::start_with(dir.path(), "a", adjust).await;
    let b = Daemon::start_with(dir.path(), "b", adjust).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let b_status = cb.client.status(ctx(CALL)).await.unwrap().unwrap();
    ca.client
        .connect(ctx(CALL), b_status.listen_addrs[0].clone())
        .await
        .unwrap()
        .unwrap();
    let data = pseudo_random(mib * 1024 * 1024, 1);
    let d = upload(&ca, "bench.bin", &data).await;
    drop(data);
    let t0 = Instant::now();
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    wait_for("delivery", Duration::from_secs(600), || async {
        get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Delivered)
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "throughput: {mib} MiB over {streams} streams in {secs:.2} s = {:.0} MiB/s",
        mib as f64 / secs
    );
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_restarted_mid_transfer_resumes_from_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ca, cb, b_status) = connected_pair(dir.path(), InboxPolicy::Accept).await;
    let data = pseudo_random(48 * 1024 * 1024, 13);
    let d = upload(&ca, "big.pdf", &data).await;
    let sent = send_one(&ca, &b_status.peer_id, vec![d]).await;
    let quarter = data.len() as u64 / 4;
    wait_for("a quarter to arrive", Duration::from_secs(60), || async {
        get(&cb, &sent.id).await.filter(|t| t.bytes_done >= quarter)
    })
    .await;
    drop(ca);
    a.stop().await;
    // The outbox is in LMDB: the new process picks the transfer up and redials B.
    let a = Daemon::start(dir.path(), "a", InboxPolicy::Accept).await;
    let ca = a.client().await;
    let delivered = wait_for(
        "delivery after the sender's restart",
        Duration::from_secs(120),
        || async { get(&ca, &sent.id).await.filter(|t| t.state == TransferState::Delivered) },
    )
    .await;
    assert!(delivered.receipt.is_some_and(|r| r.verified));
    let received = get(&cb, &sent.id).await.unwrap();
    assert_eq!(received.state, TransferState::Received);
    assert!(received.chunks_resent <= 2, "received twice {}", received.chunks_resent);
    assert_eq!(download(&cb, &sent.id, &received.documents[0].id).await, data);
    drop((ca, cb));
    a.stop().await;
    b.stop().await;
}

/// A bare libp2p node that speaks only upstream's v1 protocol, as an upstream peer would.
struct V1Peer {
    peer_id: libp2p::PeerId,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    task: JoinHandle<()>,
}

impl V1Peer {
    /// Starts the node and connects it to `dial` before returning.
    async fn start(dial: libp2p::Multiaddr) -> V1Peer {
        use futures::StreamExt;
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        swarm.dial(dial).unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            while !matches!(
                swarm.select_next_some().await,
                libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }
            ) {}
        })
        .await
        .expect("the v1 peer connects");
        let peer_id = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let incoming = control.accept(super::PROTOCOL_V1).unwrap();
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        V1Peer {
            peer_id,
            control,
            incoming,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_v1_transfers_are_received_checked_and_sent() {
    use base64::Engine as _;
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};

    let dir = tempfile::tempdir().unwrap();
    let b = Daemon::start(dir.path(), "b", InboxPolicy::Accept).await;
    let cb = b.client().await;
    let b_status = cb.client.status(ctx(CALL)).await.unwrap().unwrap();
    let b_peer: libp2p::PeerId = b_status.peer_id.parse().unwrap();
    let mut js = V1Peer::start(b_status.listen_addrs[0].parse().unwrap()).await;

    // Upstream's shape, with a hostile name and a hash that matches.
    let pdf = pseudo_random(200_000, 9);
    let msg = serde_json::json!({
        "transferId": "V1StGXR8_Z5jdHi6B-myT",
        "documents": [{
            "id": "doc-1", "fileName": "../../x<img onerror=alert(1)>", "mimeType": "application/pdf",
            "size": pdf.len(), "hash": hex::encode(Sha256::digest(&pdf)),
            "data": base64::engine::general_purpose::STANDARD.encode(&pdf), "metadata": {}
        }],
        "sender": {"senderId": "someone-else", "name": "P2P Node", "transport": "p2p",
                   "timestamp": 1764201600000u64, "verificationStatus": "verified"},
        "options": {}
    });
    let mut s = js.control.open_stream(b_peer, super::PROTOCOL_V1).await.unwrap();
    s.write_all(msg.to_string().as_bytes()).await.unwrap();
    s.close().await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&answer).unwrap(),
        serde_json::json!({"success": true})
    );
    let got = get(&cb, "V1StGXR8_Z5jdHi6B-myT").await.unwrap();
    assert_eq!(got.state, TransferState::Received);
    assert_eq!(
        got.peer_id,
        js.peer_id.to_string(),
        "the sender comes from the connection, not the JSON"
    );
    assert_eq!(got.protocol, "/firma-sign/transfer/1.0.0");
    assert_eq!(download(&cb, &got.id, "doc-1").await, pdf);

    // A wrong hash is refused with upstream's error shape, and nothing is recorded.
    let mut bad = msg.clone();
    bad["transferId"] = "other".into();
    bad["documents"][0]["hash"] = "0".repeat(64).into();
    let mut s = js.control.open_stream(b_peer, super::PROTOCOL_V1).await.unwrap();
    s.write_all(bad.to_string().as_bytes()).await.unwrap();
    s.close().await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["success"], false);
    assert!(answer["error"].as_str().unwrap().contains("hash"));
    assert!(get(&cb, "other").await.is_none());

    // Sending to it: the daemon finds v2 unsupported and speaks v1.
    let d = upload(&cb, "reply.pdf", &pdf[..1000]).await;
    let sent = send_one(&cb, &js.peer_id.to_string(), vec![d]).await;
    let (_, mut stream) = tokio::time::timeout(Duration::from_secs(30), js.incoming.next())
        .await
        .unwrap()
        .unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["transferId"], sent.id.as_str());
    assert_eq!(v["sender"]["senderId"], b_status.peer_id.as_str());
    let data = base64::engine::general_purpose::STANDARD
        .decode(v["documents"][0]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, &pdf[..1000]);
    assert_eq!(
        v["documents"][0]["hash"],
        hex::encode(Sha256::digest(&pdf[..1000])).as_str()
    );
    stream.write_all(br#"{"success":true}"#).await.unwrap();
    stream.close().await.unwrap();
    let done = wait_for("the v1 delivery", Duration::from_secs(30), || async {
        get(&cb, &sent.id).await.filter(|t| t.state == TransferState::Delivered)
    })
    .await;
    assert_eq!(done.protocol, "/firma-sign/transfer/1.0.0");
    js.task.abort();
    drop(cb);
    b.stop().await;
}
