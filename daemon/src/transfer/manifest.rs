//! The signed manifest and the signed receipt, and the checks a receiver applies to a manifest
//! from a peer before trusting any of it.
//!
//! Both are serialised once (rmp-serde) and signed over a domain-separated message with the
//! libp2p identity key. The verifier takes the public key from the REMOTE PeerId of the
//! connection (ed25519 PeerIds embed it), never from the message, and then also requires the
//! message to name that same peer.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wire::{MAX_CHUNK, Signed};

/// Prefixes of the signed messages, so a signature over one kind can never pass as the other.
const MANIFEST_DOMAIN: &[u8] = b"firma-sign/transfer/2 manifest\n";
const RECEIPT_DOMAIN: &[u8] = b"firma-sign/transfer/2 receipt\n";

/// 3: chunk hashes are BLAKE3 (version 2 had SHA-256 ones); a peer on another version is refused
/// with both numbers in the reason.
pub const MANIFEST_VERSION: u32 = 3;
/// Limits on what a peer's manifest may carry; anything past them is refused whole.
pub const MAX_DOCUMENTS: usize = 64;
pub const MAX_RECIPIENTS: usize = 64;
/// Bytes of an original file name; it is metadata only, so long names are kept, within reason.
pub const MAX_FILE_NAME: usize = 8192;
pub const MAX_ID: usize = 128;
pub const MAX_MIME: usize = 256;
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Smallest chunk size a peer may choose (bounds the per-chunk overhead we accept).
pub const MIN_CHUNK: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDoc {
    pub id: String,
    /// As the sender named it; metadata, never a path.
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
    /// Lower-case hex.
    pub sha256: String,
    /// BLAKE3 of every chunk, concatenated (32 bytes each; see [`chunk_digest`]).
    #[serde(with = "serde_bytes")]
    pub chunk_hashes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecipient {
    pub peer_id: String,
    pub document_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub transfer_id: String,
    pub signer: String,
    pub manifest_sha256: String,
    pub document_sha256: Vec<String>,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("the remote peer id {0} does not embed its public key (only ed25519 ids do)")]
    NoKey(String),
    #[error("signature does not verify against the remote peer {0}")]
    BadSignature(String),
    #[error("message names {claimed} but the connection is from {remote}")]
    WrongPeer { claimed: String, remote: String },
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Number of chunks of a document of `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

/// Byte range of chunk `index`.
pub fn chunk_range(size: u64, chunk_size: u32, index: u64) -> (u64, usize) {
    let start = index * u64::from(chunk_size);
    let len = size.saturating_sub(start).min(u64::from(chunk_size));
    (start, len as usize)
}

impl ManifestDoc {
    pub fn chunks(&self, chunk_size: u32) -> u64 {
        chunk_count(self.size, chunk_size)
    }

    /// The expected hash of chunk `index`, if it exists.
    pub fn chunk_hash(&self, index: u64) -> Option<&[u8]> {
        let start = usize::try_from(index).ok()?.checked_mul(32)?;
        self.chunk_hashes.get(start..start + 32)
    }
}

/// The hash a chunk is checked against on arrival. BLAKE3, not SHA-256: every received byte is
/// hashed twice (its chunk, then the whole document against the manifest's SHA-256, which
/// upstream's format carries), and on the receiver that was the largest CPU cost of a transfer
/// (profiled: 39% of it); BLAKE3 hashes several times faster than SHA-256, even with SHA-NI.
pub fn chunk_digest(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// True when `data` is exactly chunk `index` of `doc`.
pub fn chunk_matches(doc: &ManifestDoc, index: u64, data: &[u8]) -> bool {
    doc.chunk_hash(index)
        .is_some_and(|want| chunk_digest(data).as_slice() == want)
}

fn signed_message(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + bytes.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(bytes);
    m
}

fn sign(key: &Keypair, domain: &[u8], bytes: Vec<u8>) -> Result<Signed, ManifestError> {
    let signature = key
        .sign(&signed_message(domain, &bytes))
        .map_err(|e| ManifestError::Sign(e.to_string()))?;
    Ok(Signed { bytes, signature })
}

/// The public key inside an (ed25519 or other identity-hashed) PeerId.
pub fn key_of(peer: &PeerId) -> Result<PublicKey, ManifestError> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return Err(ManifestError::NoKey(peer.to_string()));
    }
    PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| ManifestError::NoKey(peer.to_string()))
}

fn verify(remote: &PeerId, domain: &[u8], signed: &Signed) -> Result<(), ManifestError> {
    let key = key_of(remote)?;
    if key.to_peer_id() != *remote || !key.verify(&signed_message(domain, &signed.bytes), &signed.signature) {
        return Err(ManifestError::BadSignature(remote.to_string()));
    }
    Ok(())
}

impl Manifest {
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        rmp_serde::to_vec_named(self).map_err(|e| ManifestError::Decode(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        rmp_serde::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))
    }

    pub fn sign(&self, key: &Keypair) -> Result<Signed, ManifestError> {
        sign(key, MANIFEST_DOMAIN, self.encode()?)
    }

    /// Verifies the signature against `remote`, decodes, requires `sender == remote` and a
    /// well-formed manifest. The caller still applies size limits and its inbox policy.
    pub fn open(remote: &PeerId, signed: &Signed) -> Result<Manifest, ManifestError> {
        verify(remote, MANIFEST_DOMAIN, signed)?;
        let m = Manifest::decode(&signed.bytes)?;
        if m.sender != remote.to_string() {
            return Err(ManifestError::WrongPeer {
                claimed: m.sender.chars().take(MAX_ID).collect(),
                remote: remote.to_string(),
            });
        }
        m.check()?;
        Ok(m)
    }

    pub fn total_bytes(&self) -> u64 {
        self.documents.iter().map(|d| d.size).sum()
    }

    /// Structural checks: counts, lengths, hash shapes, chunk geometry.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |s: String| Err(ManifestError::Invalid(s));
        if self.version != MANIFEST_VERSION {
            return bad(format!(
                "version {} (this daemon speaks {MANIFEST_VERSION})",
                self.version
            ));
        }
        if !valid_id(&self.transfer_id) {
            return bad("transfer id must be 1 to 128 characters of [A-Za-z0-9_-]".into());
        }
        if !(MIN_CHUNK..=MAX_CHUNK as u32).contains(&self.chunk_size) {
            return bad(format!(
                "chunk size {} outside {MIN_CHUNK}..={MAX_CHUNK}",
                self.chunk_size
            ));
        }
        if self.documents.is_empty() || self.documents.len() > MAX_DOCUMENTS {
            return bad(format!(
                "{} documents (1 to {MAX_DOCUMENTS} allowed)",
                self.documents.len()
            ));
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return bad(format!(
                "{} recipients (at most {MAX_RECIPIENTS})",
                self.recipients.len()
            ));
        }
        if self.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
            return bad(format!("message longer than {MAX_MESSAGE} bytes"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, d) in self.documents.iter().enumerate() {
            if !valid_id(&d.id) || !ids.insert(d.id.as_str()) {
                return bad(format!("document {i}: id missing, malformed or repeated"));
            }
            if d.file_name.len() > MAX_FILE_NAME || d.mime_type.len() > MAX_MIME {
                return bad(format!("document {i}: file name or MIME type too long"));
            }
            if d.sha256.len() != 64
                || !d
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!("document {i}: sha256 must be 64 lower-case hex digits"));
            }
            let want = d.chunks(self.chunk_size).checked_mul(32);
            if want != Some(d.chunk_hashes.len() as u64) {
                return bad(format!("document {i}: chunk hash list does not match its size"));
            }
        }
        for r in &self.recipients {
            if r.peer_id.len() > MAX_ID || r.document_ids.len() > MAX_DOCUMENTS {
                return bad("recipient entry too long".into());
            }
        }
        Ok(())
    }
}

/// Ids we accept from peers: they become keys and directory names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Receipt {
    pub fn sign(&self, key: &Keypair) -> Result<Signed, ManifestError> {
        let bytes = rmp_serde::to_vec_named(self).map_err(|e| ManifestError::Decode(e.to_string()))?;
        sign(key, RECEIPT_DOMAIN, bytes)
    }

    /// Verifies against `remote` and checks that it acknowledges exactly `manifest_bytes`.
    pub fn open(
        remote: &PeerId,
        signed: &Signed,
        manifest_bytes: &[u8],
        m: &Manifest,
    ) -> Result<Receipt, ManifestError> {
        verify(remote, RECEIPT_DOMAIN, signed)?;
        let r: Receipt = rmp_serde::from_slice(&signed.bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if r.signer != remote.to_string() {
            return Err(ManifestError::WrongPeer {
                claimed: r.signer.chars().take(MAX_ID).collect(),
                remote: remote.to_string(),
            });
        }
        let docs: Vec<&str> = m.documents.iter().map(|d| d.sha256.as_str()).collect();
        if r.transfer_id != m.transfer_id
            || r.manifest_sha256 != sha256_hex(manifest_bytes)
            || r.document_sha256.iter().map(String::as_str).ne(docs)
        {
            return Err(ManifestError::Invalid(
                "receipt does not acknowledge this manifest and its documents".into(),
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn sample(sender: &PeerId) -> Manifest {
        let data = vec![7u8; 10_000];
        let chunk = 4096u32;
        let chunk_hashes = data.chunks(chunk as usize).flat_map(chunk_digest).collect();
        Manifest {
            version: MANIFEST_VERSION,
            transfer_id: "t1".into(),
            sender: sender.to_string(),
            chunk_size: chunk,
            documents: vec![ManifestDoc {
                id: "d1".into(),
                file_name: "../../x".into(),
                size: data.len() as u64,
                mime_type: "application/pdf".into(),
                sha256: sha256_hex(&data),
                chunk_hashes,
            }],
            recipients: vec![],
            message: None,
            deadline_ms: None,
            require_all_signatures: false,
            created_ms: 1,
        }
    }

    #[test]
    fn signed_manifest_opens_only_from_its_signer() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let m = sample(&me);
        let signed = m.sign(&key).unwrap();
        assert_eq!(Manifest::open(&me, &signed).unwrap(), m);

        // Another peer replaying it: the signature is checked against the connection's peer.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(matches!(
            Manifest::open(&other, &signed),
            Err(ManifestError::BadSignature(_))
        ));

        // A forger signs a manifest naming someone else as sender.
        let forger = Keypair::generate_ed25519();
        let forged = sample(&me).sign(&forger).unwrap();
        let fp = forger.public().to_peer_id();
        assert!(matches!(
            Manifest::open(&fp, &forged),
            Err(ManifestError::WrongPeer { .. })
        ));

        // One flipped byte breaks it.
        let mut tampered = signed.clone();
        let last = tampered.bytes.len() - 1;
        tampered.bytes[last] ^= 1;
        assert!(Manifest::open(&me, &tampered).is_err());

        // A receipt signature never passes as a manifest signature.
        let as_receipt = sign(&key, RECEIPT_DOMAIN, signed.bytes.clone()).unwrap();
        assert!(Manifest::open(&me, &as_receipt).is_err());
    }

    #[test]
    fn chunk_verification() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let m = sample(&me);
        let d = &m.documents[0];
        assert_eq!(d.chunks(m.chunk_size), 3);
        assert!(chunk_matches(d, 0, &[7u8; 4096]));
        assert!(chunk_matches(d, 2, &[7u8; 10_000 - 8192]));
        assert!(!chunk_matches(d, 2, &[7u8; 4096]));
        let mut bad = vec![7u8; 4096];
        bad[5] = 8;
        assert!(!chunk_matches(d, 1, &bad));
        assert!(!chunk_matches(d, 3, &[7u8; 1]));
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let mut m = sample(&me);
        m.documents[0].chunk_hashes.pop();
        assert!(m.check().is_err());
        let mut m = sample(&me);
        m.transfer_id = "../etc".into();
        assert!(m.check().is_err());
        let mut m = sample(&me);
        m.chunk_size = 2 << 20;
        assert!(m.check().is_err());
        let mut m = sample(&me);
        m.documents[0].sha256 = "ZZ".into();
        assert!(m.check().is_err());
    }

    #[test]
    fn receipt_must_match_the_manifest() {
        let sender = Keypair::generate_ed25519();
        let receiver = Keypair::generate_ed25519();
        let rp = receiver.public().to_peer_id();
        let m = sample(&sender.public().to_peer_id());
        let bytes = m.encode().unwrap();
        let r = Receipt {
            transfer_id: m.transfer_id.clone(),
            signer: rp.to_string(),
            manifest_sha256: sha256_hex(&bytes),
            document_sha256: vec![m.documents[0].sha256.clone()],
            at_ms: 5,
        };
        let signed = r.sign(&receiver).unwrap();
        assert_eq!(Receipt::open(&rp, &signed, &bytes, &m).unwrap(), r);
        let mut other = m.clone();
        other.documents[0].sha256 = "0".repeat(64);
        assert!(Receipt::open(&rp, &signed, &bytes, &other).is_err());
        assert!(Receipt::open(&sender.public().to_peer_id(), &signed, &bytes, &m).is_err());
    }
}
