//! Document transfers in the store (table `transfers`, key: the transfer id). The transfer
//! engine (transfer/) is the only caller. Records change only on state changes and a few
//! checkpoints, never per chunk: what arrived is proven by the partial files themselves (each
//! chunk is re-verified against the signed manifest at resume), so there is nothing per chunk
//! to keep here.
//!
//! These writes take their own transaction instead of going through `StoreWriter`: a transfer
//! must be durable before the API answers or the peer is told, and they are rare. `Store::write`
//! serialises them with the writer's batches.
//!
//! Two index tables follow the records, written in the same transaction by `put_transfer`:
//! `transfers_pending` (incoming transfers waiting for a decision, with what each holds) and
//! `transfer_peers` (peers a transfer was exchanged with). An offer from an unknown peer reads
//! those, never the whole table, so a store full of transfers costs an offer nothing extra.

use heed::{RoTxn, RwTxn};
use rkyv::{Archive, Deserialize, Serialize};

use super::Store;
use super::codec;
use super::error::{Fail, StoreError};
use super::tables::{self, Tables};

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

/// One incoming transfer waiting for a decision, as the `transfers_pending` index keeps it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEntry {
    /// What this daemon holds for it: the record's manifest and, for a legacy v1 transfer (which
    /// arrives whole), its documents on disk.
    pub bytes: u64,
    pub created_ms: u64,
}

/// Caps on incoming transfers waiting for a decision, per sending peer and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    pub max_transfers: u64,
    pub max_bytes: u64,
    pub max_transfers_per_peer: u64,
    pub max_bytes_per_peer: u64,
}

/// What waits for a decision now: in total, and from one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingUsage {
    pub transfers: u64,
    pub bytes: u64,
    pub peer_transfers: u64,
    pub peer_bytes: u64,
}

impl PendingUsage {
    /// Why one more transfer holding `adding` bytes would break `limits`, naming the config
    /// key; `None` when it fits.
    pub fn over(&self, limits: &PendingLimits, adding: u64) -> Option<String> {
        let (key, held, cap, what) = if self.peer_transfers >= limits.max_transfers_per_peer {
            (
                "pending_max_transfers_per_peer",
                self.peer_transfers,
                limits.max_transfers_per_peer,
                "transfers from you",
            )
        } else if self.transfers >= limits.max_transfers {
            (
                "pending_max_transfers",
                self.transfers,
                limits.max_transfers,
                "transfers",
            )
        } else if self.peer_bytes.saturating_add(adding) > limits.max_bytes_per_peer {
            (
                "pending_max_bytes_per_peer",
                self.peer_bytes,
                limits.max_bytes_per_peer,
                "bytes from you",
            )
        } else if self.bytes.saturating_add(adding) > limits.max_bytes {
            ("pending_max_bytes", self.bytes, limits.max_bytes, "bytes")
        } else {
            return None;
        };
        Some(format!(
            "this recipient already holds {held} {what} waiting for its operator's decision \
             (limit transfer.{key} = {cap}); try again after they accept or reject"
        ))
    }
}

/// Outcome of [`Store::insert_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Stored,
    /// Not stored: the id is taken, or a limit is reached (the reason says which).
    Refused(String),
}

/// Whether `rec` belongs in the `transfers_pending` index.
fn is_pending(rec: &TransferRecord) -> bool {
    rec.direction == TransferDir::Incoming && rec.phase == TransferPhase::Pending
}

/// Whether `rec` makes its peer one we exchanged a transfer with (see `Store::peer_exchanged`).
fn vouches(rec: &TransferRecord) -> bool {
    match rec.direction {
        TransferDir::Outgoing => true,
        TransferDir::Incoming => rec.phase == TransferPhase::Received,
    }
}

fn pending_entry(rec: &TransferRecord) -> PendingEntry {
    PendingEntry {
        bytes: (rec.manifest.len() + rec.manifest_signature.len()) as u64 + rec.bytes_done,
        created_ms: rec.created_ms,
    }
}

fn pending_key(peer: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(peer.len() + 1 + id.len());
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Splits a `transfers_pending` key into (peer id, transfer id).
fn split_pending_key(key: &[u8]) -> Result<(&str, &str), Fail> {
    let corrupt = |detail: &str| Fail::Corrupt {
        table: tables::TRANSFERS_PENDING,
        key: String::from_utf8_lossy(key).into_owned(),
        detail: detail.to_owned(),
    };
    let at = key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("key lacks its separator"))?;
    let peer = std::str::from_utf8(&key[..at]).map_err(|_| corrupt("peer id is not UTF-8"))?;
    let id = std::str::from_utf8(&key[at + 1..]).map_err(|_| corrupt("transfer id is not UTF-8"))?;
    Ok((peer, id))
}

fn decode_pending(key: &[u8], value: &[u8]) -> Result<PendingEntry, Fail> {
    codec::decode(
        tables::TRANSFERS_PENDING,
        || String::from_utf8_lossy(key).into_owned(),
        value,
    )
}

/// Writes `rec` and brings both index tables in line with it.
fn put_indexed(txn: &mut RwTxn, t: &Tables, rec: &TransferRecord, bytes: &[u8]) -> Result<(), Fail> {
    t.transfers.put(txn, rec.id.as_bytes(), bytes)?;
    index(txn, t, rec)
}

fn index(txn: &mut RwTxn, t: &Tables, rec: &TransferRecord) -> Result<(), Fail> {
    let key = pending_key(&rec.peer_id, &rec.id);
    if is_pending(rec) {
        t.transfers_pending
            .put(txn, &key, &codec::encode(&pending_entry(rec))?)?;
    } else {
        t.transfers_pending.delete(txn, &key)?;
    }
    if vouches(rec) {
        t.transfer_peers.put(txn, rec.peer_id.as_bytes(), &[])?;
    }
    Ok(())
}

fn usage(txn: &RoTxn, t: &Tables, peer: &str) -> Result<PendingUsage, Fail> {
    let mut u = PendingUsage {
        transfers: t.transfers_pending.len(txn)?,
        ..PendingUsage::default()
    };
    // The index holds only what waits for a decision, which the limits keep small.
    for item in t.transfers_pending.iter(txn)? {
        let (key, value) = item?;
        let (p, _) = split_pending_key(key)?;
        let e = decode_pending(key, value)?;
        u.bytes = u.bytes.saturating_add(e.bytes);
        if p == peer {
            u.peer_transfers += 1;
            u.peer_bytes = u.peer_bytes.saturating_add(e.bytes);
        }
    }
    Ok(u)
}

/// Builds both index tables from the records (the migration to schema 2). Reads every record
/// once and keeps only the small index entries in memory.
pub(super) fn rebuild_indexes(txn: &mut RwTxn, t: &Tables) -> Result<(), Fail> {
    let mut pending = Vec::new();
    let mut peers = Vec::new();
    for item in t.transfers.iter(txn)? {
        let (key, value) = item?;
        let rec = decode_transfer(key, value)?;
        if is_pending(&rec) {
            pending.push((pending_key(&rec.peer_id, &rec.id), pending_entry(&rec)));
        }
        if vouches(&rec) {
            peers.push(rec.peer_id);
        }
    }
    t.transfers_pending.clear(txn)?;
    for (key, entry) in pending {
        t.transfers_pending.put(txn, &key, &codec::encode(&entry)?)?;
    }
    for peer in peers {
        t.transfer_peers.put(txn, peer.as_bytes(), &[])?;
    }
    Ok(())
}

/// Validates both index tables (the open-time scan).
pub(super) fn validate_indexes(txn: &RoTxn, t: &Tables) -> Result<(), Fail> {
    for item in t.transfers_pending.iter(txn)? {
        let (key, value) = item?;
        split_pending_key(key)?;
        decode_pending(key, value)?;
    }
    for item in t.transfer_peers.iter(txn)? {
        let (key, _) = item?;
        tables::key_str(tables::TRANSFER_PEERS, key)?;
    }
    Ok(())
}

impl Store {
    fn check_transfer_write(&self, rec: &TransferRecord, op: &'static str) -> Result<(), StoreError> {
        if let Some(detail) = self.unhealthy_detail() {
            return Err(StoreError::Unhealthy(detail));
        }
        if rec.id.is_empty() || rec.id.len() > MAX_TRANSFER_ID {
            return Err(StoreError::Invalid {
                op,
                detail: format!("transfer id must be 1 to {MAX_TRANSFER_ID} bytes"),
            });
        }
        Ok(())
    }

    /// A failed write (other than a corrupt value, which marked the store already) makes the
    /// store refuse writes until a restart.
    fn after_transfer_write<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && !matches!(e, StoreError::Corrupt { .. })
        {
            self.mark_unhealthy(format!("a write failed, so writes are refused until a restart: {e}"));
        }
        result
    }

    /// Inserts or replaces one transfer record, durably, in its own transaction.
    pub fn put_transfer(&self, rec: &TransferRecord) -> Result<(), StoreError> {
        self.check_transfer_write(rec, "put_transfer")?;
        let bytes = codec::encode(rec).map_err(|f| f.into_store_error(self.dir(), "encoding a transfer"))?;
        let result = self.write("saving a transfer", |txn, t| put_indexed(txn, t, rec, &bytes));
        self.after_transfer_write(result)
    }

    /// Inserts a new incoming transfer that waits for a decision, unless its id is taken or it
    /// would break `limits`: checked and written in one transaction, so offers arriving at once
    /// cannot overshoot the limits together.
    pub fn insert_pending(&self, rec: &TransferRecord, limits: &PendingLimits) -> Result<Admission, StoreError> {
        self.check_transfer_write(rec, "insert_pending")?;
        if !is_pending(rec) {
            return Err(StoreError::Invalid {
                op: "insert_pending",
                detail: "only an incoming transfer waiting for a decision".to_owned(),
            });
        }
        let bytes = codec::encode(rec).map_err(|f| f.into_store_error(self.dir(), "encoding a transfer"))?;
        let adding = pending_entry(rec).bytes;
        let result = self.write("saving an incoming transfer", |txn, t| {
            if t.transfers.get(txn, rec.id.as_bytes())?.is_some() {
                return Ok(Admission::Refused("transfer id already in use here".to_owned()));
            }
            if let Some(why) = usage(txn, t, &rec.peer_id)?.over(limits, adding) {
                return Ok(Admission::Refused(why));
            }
            put_indexed(txn, t, rec, &bytes)?;
            Ok(Admission::Stored)
        });
        self.after_transfer_write(result)
    }

    /// What waits for a decision, in total and from `peer`, read from the index.
    pub fn pending_usage(&self, peer: &str) -> Result<PendingUsage, StoreError> {
        self.read("counting pending transfers", |txn, t| usage(txn, t, peer))
    }

    /// Every incoming transfer waiting for a decision, as (peer id, transfer id, entry).
    pub fn pending_transfers(&self) -> Result<Vec<(String, String, PendingEntry)>, StoreError> {
        self.read("listing pending transfers", |txn, t| {
            let mut out = Vec::new();
            for item in t.transfers_pending.iter(txn)? {
                let (key, value) = item?;
                let (peer, id) = split_pending_key(key)?;
                out.push((peer.to_owned(), id.to_owned(), decode_pending(key, value)?));
            }
            Ok(out)
        })
    }

    /// Whether a transfer was exchanged with `peer`: one sent to it, or one received from it.
    pub fn peer_exchanged(&self, peer: &str) -> Result<bool, StoreError> {
        self.read("reading transfer peers", |txn, t| {
            Ok(t.transfer_peers.get(txn, peer.as_bytes())?.is_some())
        })
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
