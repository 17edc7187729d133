//! Document transfers in the end-to-end suites: documents made on the fly with known SHA-256,
//! uploaded and sent through the control API, waited for with deadlines, downloaded and hashed,
//! and the state dir searched for anything a hostile name might have written.
//!
//! [`hostile`] is a rust-libp2p peer that speaks the v2 protocol wrongly on purpose.
//!
//! Document bytes are pseudo-random from a seed: incompressible (nothing on the path gets a
//! free ride) and reproducible (a failing seed is printed and can be replayed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::transfer::{
    MAX_IPC_CHUNK, NewTransfer, RecipientSpec, StagedDocument, TransferFilter, TransferInfo, TransferState, UploadStart,
};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::harness::{Daemon, DaemonOpts, flatten};
use crate::wait::wait_for_value;

pub mod hostile;

/// Bytes written per step when making a document.
const WRITE_BLOCK: usize = 1 << 20;

/// A document on disk whose bytes and hash the test knows.
#[derive(Debug, Clone)]
pub struct TestDoc {
    pub path: PathBuf,
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
}

/// Lower-case hex, as the API spells hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Write `size` pseudo-random bytes from `seed` to `dir/name`.
pub fn make_document(dir: &Path, name: &str, size: u64, seed: u64) -> anyhow::Result<TestDoc> {
    let path = dir.join(name);
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; WRITE_BLOCK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(WRITE_BLOCK as u64))?;
        rng.fill_bytes(&mut block[..n]);
        hasher.update(&block[..n]);
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(TestDoc {
        path,
        file_name: name.to_owned(),
        size,
        sha256: hex(&hasher.finalize()),
    })
}

/// SHA-256 of a file, read in blocks.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; WRITE_BLOCK];
    loop {
        let n = f.read(&mut block)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&block[..n]);
    }
}

/// Upload `bytes` into daemon `d` under `file_name` (any name at all: the API must take it).
pub async fn upload_bytes(
    d: &Daemon,
    file_name: &str,
    mime_type: &str,
    bytes: &[u8],
) -> anyhow::Result<StagedDocument> {
    let c = d.client().await?;
    let start = UploadStart {
        file_name: file_name.to_owned(),
        size: bytes.len() as u64,
        mime_type: mime_type.to_owned(),
    };
    let id = flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start).await)?;
    let mut offset = 0u64;
    for chunk in bytes.chunks(MAX_IPC_CHUNK) {
        let data = serde_bytes::ByteBuf::from(chunk.to_vec());
        offset = flatten(c.client.upload_chunk(ctx(CALL_TIMEOUT), id.clone(), offset, data).await)?;
    }
    flatten(c.client.upload_finish(ctx(CALL_TIMEOUT), id).await)
}

/// Upload the file of `doc` into daemon `d`, one chunk in memory at a time.
pub async fn upload_doc(d: &Daemon, doc: &TestDoc) -> anyhow::Result<StagedDocument> {
    use std::io::Read;
    let c = d.client().await?;
    let start = UploadStart {
        file_name: doc.file_name.clone(),
        size: doc.size,
        mime_type: "application/octet-stream".to_owned(),
    };
    let id = flatten(c.client.upload_begin(ctx(CALL_TIMEOUT), start).await)?;
    let mut f = std::fs::File::open(&doc.path)?;
    let mut buf = vec![0u8; MAX_IPC_CHUNK];
    let mut offset = 0u64;
    while offset < doc.size {
        let n = usize::try_from((doc.size - offset).min(MAX_IPC_CHUNK as u64))?;
        f.read_exact(&mut buf[..n])?;
        let data = serde_bytes::ByteBuf::from(buf[..n].to_vec());
        offset = flatten(c.client.upload_chunk(ctx(CALL_TIMEOUT), id.clone(), offset, data).await)?;
    }
    let staged = flatten(c.client.upload_finish(ctx(CALL_TIMEOUT), id).await)?;
    if staged.sha256 != doc.sha256 {
        bail!(
            "daemon `{}` hashed {} as {}, expected {}",
            d.name(),
            doc.file_name,
            staged.sha256,
            doc.sha256
        );
    }
    Ok(staged)
}

/// Create a transfer of `staged` documents from `d` to `to`.
pub async fn send(
    d: &Daemon,
    to: &str,
    staged: &[StagedDocument],
    message: Option<&str>,
) -> anyhow::Result<TransferInfo> {
    let c = d.client().await?;
    let new = NewTransfer {
        documents: staged.iter().map(|s| s.id.clone()).collect(),
        recipients: vec![RecipientSpec {
            peer_id: to.to_owned(),
            document_ids: Vec::new(),
        }],
        message: message.map(str::to_owned),
        deadline_ms: None,
        require_all_signatures: false,
    };
    flatten(c.client.send_transfer(ctx(CALL_TIMEOUT), new).await)
        .with_context(|| format!("daemon `{}` creating a transfer to {to}", d.name()))
}

pub async fn transfer(d: &Daemon, id: &str) -> anyhow::Result<TransferInfo> {
    let c = d.client().await?;
    flatten(c.client.transfer(ctx(CALL_TIMEOUT), id.to_owned()).await)
}

pub async fn transfers(d: &Daemon, filter: TransferFilter) -> anyhow::Result<Vec<TransferInfo>> {
    let c = d.client().await?;
    flatten(c.client.transfers(ctx(CALL_TIMEOUT), filter).await)
}

/// Wait until transfer `id` on `d` satisfies `pred`; fails early when it reached a final state
/// that does not (it will never change again).
pub async fn wait_transfer(
    d: &Daemon,
    id: &str,
    deadline: Duration,
    what: &str,
    pred: impl Fn(&TransferInfo) -> bool,
) -> anyhow::Result<TransferInfo> {
    // What the last poll saw, for the failure message.
    let last = std::sync::Mutex::new(None::<TransferInfo>);
    let res = wait_for_value(deadline, what, || {
        let (pred, last) = (&pred, &last);
        async move {
            let t = transfer(d, id).await.ok()?;
            let ok = pred(&t);
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
            ok.then_some(t)
        }
    })
    .await;
    match res {
        Ok((t, _)) => Ok(t),
        Err(e) => Err(e.context(format!(
            "transfer {id} on `{}` was last seen as {:?}; log:\n{}",
            d.name(),
            last.lock().unwrap_or_else(|p| p.into_inner()),
            d.log_tail()
        ))),
    }
}

/// Wait until transfer `id` on `d` is in `state`.
pub async fn wait_state(
    d: &Daemon,
    id: &str,
    state: TransferState,
    deadline: Duration,
) -> anyhow::Result<TransferInfo> {
    let what = format!("transfer {id} on `{}` to be {state:?}", d.name());
    wait_transfer(d, id, deadline, &what, |t| t.state == state).await
}

/// Wait until `d` lists an incoming transfer from `from`; returns it.
pub async fn wait_incoming(d: &Daemon, from: &str, deadline: Duration) -> anyhow::Result<TransferInfo> {
    let what = format!("`{}` to list an incoming transfer from {from}", d.name());
    let res = wait_for_value(deadline, &what, || async {
        transfers(d, TransferFilter::Incoming)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.peer_id == from)
    })
    .await;
    match res {
        Ok((t, _)) => Ok(t),
        Err(e) => Err(e.context(format!("log of `{}`:\n{}", d.name(), d.log_tail()))),
    }
}

/// Download document `doc_id` of transfer `id` from `d` through the API and hash it.
pub async fn download_sha256(d: &Daemon, id: &str, doc_id: &str, size: u64) -> anyhow::Result<String> {
    let c = d.client().await?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < size {
        let chunk = flatten(
            c.client
                .download(
                    ctx(CALL_TIMEOUT),
                    id.to_owned(),
                    doc_id.to_owned(),
                    offset,
                    MAX_IPC_CHUNK as u32,
                )
                .await,
        )?;
        if chunk.is_empty() {
            bail!("download of {doc_id} stopped at {offset} of {size} bytes");
        }
        hasher.update(&chunk);
        offset += chunk.len() as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// Every file and directory under `dir`, recursively (symlinks not followed).
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                todo.push(path.clone());
            }
            found.push(path);
        }
    }
    Ok(found)
}

/// Start `firmactl --socket <d's socket> ARGS...` in the background (no `FIRMA_*` inherited),
/// for commands that must keep running while the test does something to the daemon. The child
/// is killed if dropped; wait for it with `wait_with_output` under a timeout.
pub fn spawn_cli(d: &Daemon, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
    let bin = crate::bins::firmactl()?;
    let mut cmd = std::process::Command::new(&bin);
    crate::harness::clear_firma_env(&mut cmd);
    cmd.arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}

/// A daemon for the transfer suites: loopback-only as usual, with the inbox policy for unknown
/// peers set to `unknown_peers` (`accept`, `ask` or `reject`) in its config file.
pub fn transfer_opts(name: &str, unknown_peers: &str) -> DaemonOpts {
    let mut o = DaemonOpts::named(name);
    o.config = Some(format!("[transfer]\nunknown_peers = \"{unknown_peers}\"\n"));
    o
}

/// A sender `PREFIX-a` (accepting everyone) and a recipient `PREFIX-b` with the inbox policy
/// `b_policy`, started together and connected over loopback TCP.
pub async fn connected_pair(prefix: &str, b_policy: &str) -> anyhow::Result<(Daemon, Daemon)> {
    let (a, b) = tokio::try_join!(
        Daemon::spawn(transfer_opts(&format!("{prefix}-a"), "accept")),
        Daemon::spawn(transfer_opts(&format!("{prefix}-b"), b_policy))
    )?;
    a.connect_to(&b).await?;
    Ok((a, b))
}
