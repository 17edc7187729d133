//! The v2 wire format: length-prefixed frames, `[u32 BE length][u8 kind][body]`, where length
//! counts the kind byte and the body. Control messages are rmp-serde bodies; chunks and acks
//! have a fixed binary header so that document bytes are never re-encoded.
//!
//! One control stream per attempt carries Manifest → Accept | Reject → ... → Done → Receipt (or
//! Error, either way). Data streams begin with Join and carry Chunk frames one way and Ack
//! frames the other.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Our protocol.
pub const PROTOCOL_V2: StreamProtocol = StreamProtocol::new("/firma-sign/transfer/2.0.0");
/// Upstream Firma-Sign's protocol (one JSON object per stream).
pub const PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/firma-sign/transfer/1.0.0");

/// Largest chunk any transfer may use (the config allows at most this).
pub const MAX_CHUNK: usize = 1 << 20;
/// Largest control frame: a manifest carries 32 bytes per chunk, so 4 MiB covers documents of
/// about 128 GiB at 1 MiB chunks, far past the default size limits.
pub const MAX_CONTROL_FRAME: usize = 4 << 20;
/// Largest data-stream frame: one chunk and its header.
pub const MAX_DATA_FRAME: usize = MAX_CHUNK + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
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
        Some(match b {
            1 => Kind::Manifest,
            2 => Kind::Accept,
            3 => Kind::Reject,
            4 => Kind::Join,
            5 => Kind::Chunk,
            6 => Kind::Ack,
            7 => Kind::Done,
            8 => Kind::Receipt,
            9 => Kind::Error,
            _ => return None,
        })
    }
}

/// A signed blob: the manifest or a receipt, exactly as signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The receiver's yes: per document, a bitmap (bit i = chunk i) of verified chunks it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accept {
    pub held: Vec<serde_bytes::ByteBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reject {
    pub reason: String,
    /// Not a final no: the recipient has not decided yet (inbox policy `ask`) or is busy.
    pub retry_later: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    pub transfer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {len} bytes, the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer sent an empty frame or unknown frame kind {0}")]
    BadKind(u8),
    #[error("peer sent a malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("expected {expected}, peer sent {got:?}")]
    Unexpected { expected: &'static str, got: Kind },
    #[error("stream closed by the peer")]
    Closed,
}

/// Reads one frame into `buf` (reused across calls: no allocation per chunk once grown).
/// Returns the kind; the body is `buf`. A clean end of stream at a frame boundary is `Closed`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> Result<Kind, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(FrameError::BadKind(0));
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await?;
    let kind = Kind::from_u8(kind[0]).ok_or(FrameError::BadKind(kind[0]))?;
    // No clear first: a buffer already at this length (the next chunk of a transfer) is
    // overwritten in place instead of being zeroed again.
    buf.resize(len - 1, 0);
    r.read_exact(buf).await?;
    Ok(kind)
}

async fn write_raw<W: AsyncWrite + Unpin>(w: &mut W, kind: Kind, head: &[u8], body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(1 + head.len() + body.len()).map_err(|_| FrameError::TooLarge {
        len: head.len() + body.len(),
        max: u32::MAX as usize,
    })?;
    let mut prefix = Vec::with_capacity(5 + head.len());
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.push(kind as u8);
    prefix.extend_from_slice(head);
    w.write_all(&prefix).await?;
    if !body.is_empty() {
        w.write_all(body).await?;
    }
    Ok(())
}

/// Writes a control message and flushes it.
pub async fn send_msg<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, kind: Kind, msg: &T) -> Result<(), FrameError> {
    let body = rmp_serde::to_vec_named(msg).map_err(|e| FrameError::Malformed {
        what: "outgoing message",
        detail: e.to_string(),
    })?;
    write_raw(w, kind, &[], &body).await?;
    w.flush().await?;
    Ok(())
}

/// Writes a frame without a body.
pub async fn send_empty<W: AsyncWrite + Unpin>(w: &mut W, kind: Kind) -> Result<(), FrameError> {
    write_raw(w, kind, &[], &[]).await?;
    w.flush().await?;
    Ok(())
}

/// Decodes a control message body of the expected kind.
pub fn decode<T: DeserializeOwned>(
    got: Kind,
    expected: Kind,
    what: &'static str,
    body: &[u8],
) -> Result<T, FrameError> {
    if got != expected {
        return Err(FrameError::Unexpected { expected: what, got });
    }
    rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed {
        what,
        detail: e.to_string(),
    })
}

/// Reads the next control message, which must be of kind `expected`.
pub async fn recv_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    buf: &mut Vec<u8>,
    expected: Kind,
    what: &'static str,
) -> Result<T, FrameError> {
    let kind = read_frame(r, buf, MAX_CONTROL_FRAME).await?;
    if kind == Kind::Error && expected != Kind::Error {
        let e: WireError = decode(kind, Kind::Error, "error", buf)?;
        return Err(FrameError::Malformed {
            what,
            detail: format!("the peer gave up: {}", e.reason.chars().take(512).collect::<String>()),
        });
    }
    decode(kind, expected, what, buf)
}

/// Chunk and ack headers: document index and chunk index, both u32 big-endian.
pub fn chunk_head(doc: u32, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&doc.to_be_bytes());
    h[4..].copy_from_slice(&index.to_be_bytes());
    h
}

pub fn parse_chunk_head(body: &[u8]) -> Result<(u32, u32), FrameError> {
    if body.len() < 8 {
        return Err(FrameError::Malformed {
            what: "chunk header",
            detail: format!("{} bytes, need 8", body.len()),
        });
    }
    let doc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let index = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Ok((doc, index))
}

pub async fn send_chunk<W: AsyncWrite + Unpin>(w: &mut W, doc: u32, index: u32, data: &[u8]) -> Result<(), FrameError> {
    write_raw(w, Kind::Chunk, &chunk_head(doc, index), data).await
}

pub async fn send_ack<W: AsyncWrite + Unpin>(w: &mut W, doc: u32, index: u32) -> Result<(), FrameError> {
    write_raw(w, Kind::Ack, &chunk_head(doc, index), &[]).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut out = Vec::new();
        send_chunk(&mut out, 3, 7, b"hello").await.unwrap();
        send_msg(
            &mut out,
            Kind::Join,
            &Join {
                transfer_id: "t".into(),
            },
        )
        .await
        .unwrap();
        let mut r = futures::io::Cursor::new(out.clone());
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut r, &mut buf, MAX_DATA_FRAME).await.unwrap(), Kind::Chunk);
        assert_eq!(parse_chunk_head(&buf).unwrap(), (3, 7));
        assert_eq!(&buf[8..], b"hello");
        let j: Join = recv_msg(&mut r, &mut buf, Kind::Join, "join").await.unwrap();
        assert_eq!(j.transfer_id, "t");
        assert!(matches!(
            read_frame(&mut r, &mut buf, 64).await,
            Err(FrameError::Closed)
        ));
        // A frame over the limit is refused before its body is read.
        let mut r = futures::io::Cursor::new(out);
        assert!(matches!(
            read_frame(&mut r, &mut buf, 4).await,
            Err(FrameError::TooLarge { .. })
        ));
        // A kind nobody knows.
        let mut r = futures::io::Cursor::new(vec![0, 0, 0, 1, 77]);
        assert!(matches!(
            read_frame(&mut r, &mut buf, 64).await,
            Err(FrameError::BadKind(77))
        ));
    }
}
