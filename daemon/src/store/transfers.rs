//! Document transfers in the store (table `transfers`, key: the transfer id). The transfer
//! engine (transfer/) is the only caller. Records change only on state changes and a few
//! checkpoints, never per chunk: what arrived is proven by the partial files themselves (each
//! chunk is re-verified against the signed manifest at resume), so there is nothing per chunk
//! to keep here.
//!
//! These writes take their own transaction instead of going through `StoreWriter`: a transfer
//! must be durable before the API answers or the peer is told, and they are rare. `Store::write`
//! serialises them with the writer's batches.

use rkyv::{Archive, Deserialize, Serialize};

use super::Store;
use super::codec;
use super::error::{Fail, StoreError};
use super::tables;

/// Longest transfer id accepted as a key (ours are 32 hex digits; upstream's nanoids are 21).
pub const MAX_TRANSFER_ID: usize = 128;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDir {
    Outgoing,
    Incoming,
}

/// Own copy of the wire enum, so that an API change never changes what is on disk.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferPhase {
    Pending,
    Sending,
    Sent,
    Delivered,
    Failed,
    Cancelled,
    Receiving,
    Received,
    Rejected,
}

/// A delivery receipt as received (outgoing) or issued (incoming).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// The receipt as signed (the transfer engine's encoding), kept so it can be shown to a third party.
    pub bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub signer: String,
    pub manifest_sha256: String,
    pub document_sha256: Vec<String>,
    pub at_ms: u64,
    pub verified: bool,
}

/// One transfer, either direction.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: String,
    pub direction: TransferDir,
    pub phase: TransferPhase,
    /// The other side: recipient of an outgoing transfer, sender of an incoming one (always the
    /// authenticated PeerId of the connection, never a claim from a message).
    pub peer_id: String,
    pub protocol: String,
    /// The manifest exactly as signed (v2); for a legacy v1 transfer, one built locally.
    pub manifest: Vec<u8>,
    /// Empty for a legacy v1 transfer (upstream signs nothing).
    pub manifest_signature: Vec<u8>,
    /// Per document of the manifest: whole SHA-256 verified (incoming) or delivered (outgoing).
    pub docs_complete: Vec<bool>,
    /// Bytes verified so far, as of the last checkpoint; the live value is in the engine.
    pub bytes_done: u64,
    pub chunks_resent: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub error: Option<String>,
    pub receipt: Option<ReceiptRecord>,
}

impl Store {
    /// Inserts or replaces one transfer record, durably, in its own transaction.
    pub fn put_transfer(&self, rec: &TransferRecord) -> Result<(), StoreError> {
        if let Some(detail) = self.unhealthy_detail() {
            return Err(StoreError::Unhealthy(detail));
        }
        if rec.id.is_empty() || rec.id.len() > MAX_TRANSFER_ID {
            return Err(StoreError::Invalid {
                op: "put_transfer",
                detail: format!("transfer id must be 1 to {MAX_TRANSFER_ID} bytes"),
            });
        }
        let bytes = codec::encode(rec).map_err(|f| f.into_store_error(self.dir(), "encoding a transfer"))?;
        let result = self.write("saving a transfer", |txn, t| {
            t.transfers.put(txn, rec.id.as_bytes(), &bytes)?;
            Ok(())
        });
        if let Err(e) = &result
            && !matches!(e, StoreError::Corrupt { .. })
        {
            self.mark_unhealthy(format!("a write failed, so writes are refused until a restart: {e}"));
        }
        result
    }

    pub fn get_transfer(&self, id: &str) -> Result<Option<TransferRecord>, StoreError> {
        if id.is_empty() || id.len() > MAX_TRANSFER_ID {
            return Ok(None);
        }
        self.read("reading a transfer", |txn, t| {
            match t.transfers.get(txn, id.as_bytes())? {
                None => Ok(None),
                Some(bytes) => decode_transfer(id.as_bytes(), bytes).map(Some),
            }
        })
    }

    /// Every transfer, in id order.
    pub fn list_transfers(&self) -> Result<Vec<TransferRecord>, StoreError> {
        self.read("listing transfers", |txn, t| {
            let mut out = Vec::new();
            for item in t.transfers.iter(txn)? {
                let (key, value) = item?;
                out.push(decode_transfer(key, value)?);
            }
            Ok(out)
        })
    }
}

/// Decodes and checks that the record names its own key.
pub(super) fn decode_transfer(key: &[u8], bytes: &[u8]) -> Result<TransferRecord, Fail> {
    let key_text = || String::from_utf8_lossy(key).into_owned();
    let rec: TransferRecord = codec::decode(tables::TRANSFERS, key_text, bytes)?;
    if rec.id.as_bytes() != key {
        return Err(Fail::Corrupt {
            table: tables::TRANSFERS,
            key: key_text(),
            detail: format!("record names transfer `{}`", rec.id),
        });
    }
    Ok(rec)
}
