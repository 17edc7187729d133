//! A hostile sender: a real rust-libp2p node (TCP + Noise + Yamux) that speaks
//! `/firma-sign/transfer/2.0.0` on purpose wrongly, and floods upstream's
//! `/firma-sign/transfer/1.0.0` (one JSON object per stream, answered with one JSON object),
//! to prove the daemon refuses what it must.
//!
//! The framing is written here from the protocol's description, independently of the daemon's
//! own code, so that a test also catches an accidental change of the wire format:
//! frames are `[u32 BE length][u8 kind][body]` (length counts kind and body); control bodies
//! are MessagePack with field names; chunk and ack bodies start with `[u32 BE doc][u32 BE index]`.
//! One control stream carries Manifest → Accept | Reject | Error → Done → Receipt | Error; data
//! streams begin with Join and carry Chunk frames, answered by Ack (or Error) frames.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hex;

pub const PROTOCOL_V2: StreamProtocol = StreamProtocol::new("/firma-sign/transfer/2.0.0");
pub const PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/firma-sign/transfer/1.0.0");
/// Largest v1 answer read back.
const MAX_V1_ANSWER: u64 = 64 * 1024;
const MANIFEST_DOMAIN: &[u8] = b"firma-sign/transfer/2 manifest\n";
/// Largest frame this peer reads back (answers are small; a receipt is a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;
/// How long one answer from the daemon may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest = 1,
    Accept = 2,
    Reject = 3,
    Join = 4,
    Chunk = 5,
    Ack = 6,
    Done = 7,
    Receipt = 8,
    Error = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        [
            Kind::Manifest,
            Kind::Accept,
            Kind::Reject,
            Kind::Join,
            Kind::Chunk,
            Kind::Ack,
            Kind::Done,
            Kind::Receipt,
            Kind::Error,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestDoc {
    pub id: String,
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
    pub sha256: String,
    #[serde(with = "serde_bytes")]
    pub chunk_hashes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRecipient {
    pub peer_id: String,
    pub document_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub transfer_id: String,
    pub sender: String,
    pub chunk_size: u32,
    pub documents: Vec<ManifestDoc>,
    pub recipients: Vec<ManifestRecipient>,
    pub message: Option<String>,
    pub deadline_ms: Option<u64>,
    pub require_all_signatures: bool,
    pub created_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Join {
    transfer_id: String,
}

/// An answer frame, decoded as far as the tests care.
#[derive(Debug)]
pub struct Answer {
    pub kind: Kind,
    /// The `reason` of a Reject or Error, if any.
    pub reason: Option<String>,
}

impl Manifest {
    /// A manifest from `sender` to `to` of one document of `bytes`, cut in `chunk_size` chunks,
    /// with hashes that match the bytes.
    pub fn of(transfer_id: &str, sender: &PeerId, to: &str, bytes: &[u8], chunk_size: u32) -> Manifest {
        Manifest {
            version: 3,
            transfer_id: transfer_id.to_owned(),
            sender: sender.to_string(),
            chunk_size,
            documents: vec![ManifestDoc {
                id: "doc-1".to_owned(),
                file_name: "hostile.pdf".to_owned(),
                size: bytes.len() as u64,
                mime_type: "application/pdf".to_owned(),
                sha256: hex(&Sha256::digest(bytes)),
                chunk_hashes: bytes
                    .chunks(chunk_size as usize)
                    .flat_map(|c| *blake3::hash(c).as_bytes())
                    .collect(),
            }],
            recipients: vec![ManifestRecipient {
                peer_id: to.to_owned(),
                document_ids: vec![],
            }],
            message: Some("from a hostile peer".to_owned()),
            deadline_ms: None,
            require_all_signatures: false,
            created_ms: 1,
        }
    }

    /// Signed with `key`, over the domain-separated encoding.
    pub fn sign_with(&self, key: &Keypair) -> anyhow::Result<Signed> {
        let bytes = rmp_serde::to_vec_named(self)?;
        let mut msg = MANIFEST_DOMAIN.to_vec();
        msg.extend_from_slice(&bytes);
        Ok(Signed {
            signature: key.sign(&msg)?,
            bytes,
        })
    }
}

/// The hostile node: its key, and a handle to open streams on its swarm (driven by a task that
/// ends when the node is dropped).
pub struct HostilePeer {
    pub key: Keypair,
    pub peer_id: PeerId,
    control: libp2p_stream::Control,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl HostilePeer {
    /// Start a node and dial `addr` (a loopback multiaddr with `/p2p/`).
    pub async fn dial(addr: &str) -> anyhow::Result<HostilePeer> {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let control = swarm.behaviour().new_control();
        let target: Multiaddr = addr.parse().with_context(|| format!("bad multiaddr {addr}"))?;
        swarm.dial(target)?;
        let driver = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        Ok(HostilePeer {
            key,
            peer_id,
            control,
            driver,
        })
    }

    /// Open a v2 stream to `peer`.
    pub async fn open(&mut self, peer: &str) -> anyhow::Result<Stream> {
        self.open_on(peer, PROTOCOL_V2).await
    }

    async fn open_on(&mut self, peer: &str, protocol: StreamProtocol) -> anyhow::Result<Stream> {
        let peer: PeerId = peer.parse()?;
        let s = tokio::time::timeout(ANSWER_TIMEOUT, self.control.open_stream(peer, protocol.clone()))
            .await
            .with_context(|| format!("opening a {protocol} stream timed out"))??;
        Ok(s)
    }

    /// Send one v1 message as upstream does (write it, close the write side) and read the
    /// JSON answer to the end. A write cut short by the daemon (it may answer before reading a
    /// body it refuses) still yields its answer.
    pub async fn send_v1(&mut self, peer: &str, body: &[u8]) -> anyhow::Result<serde_json::Value> {
        let mut s = self.open_on(peer, PROTOCOL_V1).await?;
        let exchange = async {
            let written = async {
                s.write_all(body).await?;
                s.close().await
            }
            .await;
            let mut answer = Vec::new();
            (&mut s).take(MAX_V1_ANSWER).read_to_end(&mut answer).await?;
            if answer.is_empty() {
                written?;
                bail!("the daemon closed the v1 stream without an answer");
            }
            Ok::<_, anyhow::Error>(serde_json::from_slice(&answer)?)
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .context("the daemon did not answer the v1 message")?
    }
}

/// A v1 message as upstream builds it: `docs` documents of `doc_bytes` bytes each, with file
/// names `name_len` characters long, and `message` in the transfer's options.
pub fn v1_message(transfer_id: &str, docs: usize, doc_bytes: usize, name_len: usize, message: &str) -> Vec<u8> {
    use base64::Engine as _;
    let documents: Vec<serde_json::Value> = (0..docs)
        .map(|i| {
            let data: Vec<u8> = (0..doc_bytes).map(|j| ((i * 7 + j * 13) % 251) as u8).collect();
            let stem = format!("{i:02}-");
            serde_json::json!({
                "id": format!("doc-{i}"),
                "fileName": format!("{stem}{}.pdf", "n".repeat(name_len.saturating_sub(stem.len() + 4))),
                "mimeType": "application/pdf",
                "size": data.len(),
                "hash": hex(&Sha256::digest(&data)),
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "metadata": {},
            })
        })
        .collect();
    serde_json::json!({
        "transferId": transfer_id,
        "documents": documents,
        "sender": {"senderId": "12D3KooWClaimedNotTrusted", "name": "P2P Node", "transport": "p2p",
                   "timestamp": 1_764_201_600_000u64, "verificationStatus": "verified"},
        "options": {"message": message},
    })
    .to_string()
    .into_bytes()
}

pub async fn write_frame(s: &mut Stream, kind: Kind, body: &[u8]) -> anyhow::Result<()> {
    let len = u32::try_from(1 + body.len())?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(kind as u8);
    frame.extend_from_slice(body);
    s.write_all(&frame).await?;
    s.flush().await?;
    Ok(())
}

pub async fn send_manifest(s: &mut Stream, signed: &Signed) -> anyhow::Result<()> {
    write_frame(s, Kind::Manifest, &rmp_serde::to_vec_named(signed)?).await
}

pub async fn send_join(s: &mut Stream, transfer_id: &str) -> anyhow::Result<()> {
    let join = Join {
        transfer_id: transfer_id.to_owned(),
    };
    write_frame(s, Kind::Join, &rmp_serde::to_vec_named(&join)?).await
}

pub async fn send_chunk(s: &mut Stream, doc: u32, index: u32, data: &[u8]) -> anyhow::Result<()> {
    let mut body = Vec::with_capacity(8 + data.len());
    body.extend_from_slice(&doc.to_be_bytes());
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(data);
    write_frame(s, Kind::Chunk, &body).await
}

/// Read the next frame; `None` when the daemon closed the stream.
pub async fn read_answer(s: &mut Stream) -> anyhow::Result<Option<Answer>> {
    let read = async {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(anyhow::Error::from(e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_ANSWER {
            bail!("daemon sent a frame of {len} bytes");
        }
        let mut frame = vec![0u8; len];
        s.read_exact(&mut frame).await?;
        let kind = Kind::from_u8(frame[0]).with_context(|| format!("unknown frame kind {}", frame[0]))?;
        #[derive(Deserialize)]
        struct WithReason {
            reason: String,
        }
        let reason = match kind {
            Kind::Reject | Kind::Error => rmp_serde::from_slice::<WithReason>(&frame[1..]).ok().map(|r| r.reason),
            _ => None,
        };
        Ok(Some(Answer { kind, reason }))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, read)
        .await
        .context("the daemon did not answer")?
}
