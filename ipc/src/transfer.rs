//! Document transfers as the control API sees them. Mirrors upstream Firma-Sign's model
//! (documents, recipients, message, deadline, requireAllSignatures) with our states, progress
//! and verified receipts. Document bytes cross the socket in chunks, never as one frame.

use serde::{Deserialize, Serialize};

/// Largest chunk of document bytes in one upload or download call; keeps every frame well
/// under [`crate::MAX_FRAME`].
pub const MAX_IPC_CHUNK: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Outgoing: waiting in the outbox (recipient offline, or not started yet).
    /// Incoming: waiting for an operator to accept or reject (inbox policy `ask`).
    Pending,
    Sending,
    /// Every byte went out; the receipt has not come back yet.
    Sent,
    /// The recipient returned a receipt and its signature verified.
    Delivered,
    Failed,
    Cancelled,
    Receiving,
    Received,
    Rejected,
}

impl TransferState {
    /// No further change will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Failed | Self::Cancelled | Self::Received | Self::Rejected
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    Outgoing,
    Incoming,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub id: String,
    /// As the sender named it; metadata only, never used as a path.
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
    /// SHA-256 of the whole document, lower-case hex.
    pub sha256: String,
    /// Bytes verified and stored so far.
    pub bytes_done: u64,
    /// True once the whole document arrived and its SHA-256 matched the manifest.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientInfo {
    pub peer_id: String,
    /// The documents this recipient must sign.
    pub document_ids: Vec<String>,
}

/// A delivery receipt: signed by the recipient's identity key over the manifest hash, the
/// document hashes and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    pub signer: String,
    pub manifest_sha256: String,
    pub document_sha256: Vec<String>,
    pub at_ms: u64,
    /// The signature checked out against the signer's PeerId.
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    pub id: String,
    pub direction: TransferDirection,
    pub state: TransferState,
    /// The other side: the recipient of an outgoing transfer, the sender of an incoming one.
    pub peer_id: String,
    pub documents: Vec<DocumentInfo>,
    pub recipients: Vec<RecipientInfo>,
    pub message: Option<String>,
    pub deadline_ms: Option<u64>,
    pub require_all_signatures: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// `/firma-sign/transfer/2.0.0` or the legacy `1.0.0`.
    pub protocol: String,
    pub receipt: Option<ReceiptInfo>,
    /// Why it failed or was rejected.
    pub error: Option<String>,
    /// Chunks sent (or received) more than once because of a resume; for accountability and tests.
    pub chunks_resent: u64,
}

/// Starts an upload of one document's bytes into the daemon's blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStart {
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
}

/// A document fully uploaded and hashed, ready to be named in a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedDocument {
    pub id: String,
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSpec {
    pub peer_id: String,
    /// Documents this recipient must sign; empty means all of them.
    pub document_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    /// Ids of staged documents (from `upload_finish`).
    pub documents: Vec<String>,
    pub recipients: Vec<RecipientSpec>,
    pub message: Option<String>,
    pub deadline_ms: Option<u64>,
    pub require_all_signatures: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferFilter {
    All,
    Outgoing,
    Incoming,
    /// Not in a final state.
    Active,
}
