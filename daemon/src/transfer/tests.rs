//! Two real daemons in this process (real swarms on loopback, real stores, real control
//! sockets) moving a few MiB through the transfer engine, as a client drives them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firma_ipc::client::{Connection, connect, ctx};
use firma_ipc::transfer::{
    MAX_IPC_CHUNK, NewTransfer, RecipientSpec, TransferFilter, TransferInfo, TransferState, UploadStart,
};
use firma_ipc::types::Role;
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
        let mut c = Config {
            state_dir: dir.join(name).join("state"),
            socket: dir.join(name).join("ctl.sock"),
            allow_root: true,
            ..Config::default()
        };
        c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        c.network.mdns = false;
        c.network.dht = false;
        c.transfer.unknown_peers = policy;
        // Small chunks so that a few MiB are many chunks spread over several streams.
        c.transfer.chunk_size = 64 * 1024;
        c.transfer.parallel_streams = 3;
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
    let a = Daemon::start(dir.path(), "a", InboxPolicy::Accept).await;
    let b = Daemon::start(dir.path(), "b", InboxPolicy::Reject).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let b_status = cb.client.status(ctx(CALL)).await.unwrap().unwrap();
    ca.client
        .connect(ctx(CALL), b_status.listen_addrs[0].clone())
        .await
        .unwrap()
        .unwrap();
    let d = upload(&ca, "x.pdf", &pseudo_random(100_000, 3)).await;
    let sent = ca
        .client
        .send_transfer(
            ctx(CALL),
            NewTransfer {
                documents: vec![d],
                recipients: vec![RecipientSpec {
                    peer_id: b_status.peer_id.clone(),
                    document_ids: vec![],
                }],
                message: None,
                deadline_ms: None,
                require_all_signatures: false,
            },
        )
        .await
        .unwrap()
        .unwrap();
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
