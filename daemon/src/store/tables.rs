//! The LMDB tables (named databases) and their key encodings. Every table is opened with raw
//! byte keys and values so that a damaged key or value surfaces as `Fail::Corrupt` naming the
//! table, never as an opaque decoding error.

use heed::types::Bytes;
use std::convert::Infallible;

use heed::{CommitOrAbort, Database, Env, RoTxn, RwTxn, WithoutTls};

use super::codec;
use super::error::Fail;
use super::records::{AuditEntry, HistoryEntry, PeerRecord};

pub(super) type Db = Database<'static, Bytes, Bytes>;

pub(super) const META: &str = "meta";
pub(super) const PEERS: &str = "peers";
pub(super) const HISTORY: &str = "history";
/// Ids of history records still open, value: the peer id. Lets a disconnect or a restart find
/// open records without scanning the whole history.
pub(super) const HISTORY_OPEN: &str = "history_open";
pub(super) const AUDIT: &str = "audit";
pub(super) const CONFIG_CACHE: &str = "config_cache";
/// Document transfers (transfers.rs); key: the transfer id.
pub(super) const TRANSFERS: &str = "transfers";
/// Index of incoming transfers waiting for a decision; key: `<peer id> NUL <transfer id>`,
/// value: a `PendingEntry`. Lets an offer count what a peer and everyone hold without
/// decoding every transfer. Kept by `put_transfer` in the same transaction as the record.
pub(super) const TRANSFERS_PENDING: &str = "transfers_pending";
/// Peers this daemon exchanged a transfer with (sent one to, or received one from); key: the
/// peer id, value empty. Kept by `put_transfer`.
pub(super) const TRANSFER_PEERS: &str = "transfer_peers";

/// Named databases of the env; `max_dbs` is set from this.
pub(super) const TABLE_COUNT: u32 = 9;

/// Keys of the `meta` table.
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
pub(super) const META_CREATED_MS: &str = "created_ms";
pub(super) const META_NEXT_HISTORY_ID: &str = "next_history_id";
pub(super) const META_NEXT_AUDIT_ID: &str = "next_audit_id";

#[derive(Clone, Copy)]
pub(super) struct Tables {
    pub meta: Db,
    pub peers: Db,
    pub history: Db,
    pub history_open: Db,
    pub audit: Db,
    pub config_cache: Db,
    pub transfers: Db,
    pub transfers_pending: Db,
    pub transfer_peers: Db,
}

impl Tables {
    /// Creates (or opens) every table in one committed write transaction.
    pub fn create(env: &Env<WithoutTls>) -> Result<Tables, Fail> {
        let wtxn = env.write_txn()?;
        let committed = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let t = (
                opener.create_database::<Bytes, Bytes>(wtxn, Some(META))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(PEERS))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(HISTORY))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(HISTORY_OPEN))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(AUDIT))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(CONFIG_CACHE))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(TRANSFERS))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(TRANSFERS_PENDING))?,
                opener.create_database::<Bytes, Bytes>(wtxn, Some(TRANSFER_PEERS))?,
            );
            Ok::<_, heed::Error>(CommitOrAbort::<_, Infallible>::Commit(t))
        })?;
        match committed {
            CommitOrAbort::Commit((
                meta,
                peers,
                history,
                history_open,
                audit,
                config_cache,
                transfers,
                transfers_pending,
                transfer_peers,
            )) => Ok(Tables {
                meta,
                peers,
                history,
                history_open,
                audit,
                config_cache,
                transfers,
                transfers_pending,
                transfer_peers,
            }),
            CommitOrAbort::Abort(never) => match never {},
        }
    }

    /// Every table with its name, for whole-store scans.
    pub fn all(&self) -> [(&'static str, Db); TABLE_COUNT as usize] {
        [
            (META, self.meta),
            (PEERS, self.peers),
            (HISTORY, self.history),
            (HISTORY_OPEN, self.history_open),
            (AUDIT, self.audit),
            (CONFIG_CACHE, self.config_cache),
            (TRANSFERS, self.transfers),
            (TRANSFERS_PENDING, self.transfers_pending),
            (TRANSFER_PEERS, self.transfer_peers),
        ]
    }

    pub fn get_peer(&self, txn: &RoTxn, peer_id: &str) -> Result<Option<PeerRecord>, Fail> {
        match self.peers.get(txn, peer_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => decode_peer(peer_id.as_bytes(), bytes).map(Some),
        }
    }

    pub fn put_peer(&self, txn: &mut RwTxn, rec: &PeerRecord) -> Result<(), Fail> {
        self.peers.put(txn, rec.peer_id.as_bytes(), &codec::encode(rec)?)?;
        Ok(())
    }

    pub fn get_history(&self, txn: &RoTxn, id: u64) -> Result<Option<HistoryEntry>, Fail> {
        match self.history.get(txn, &id.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => codec::decode(HISTORY, || id.to_string(), bytes).map(Some),
        }
    }

    pub fn put_history(&self, txn: &mut RwTxn, id: u64, entry: &HistoryEntry) -> Result<(), Fail> {
        self.history.put(txn, &id.to_be_bytes(), &codec::encode(entry)?)?;
        Ok(())
    }

    pub fn put_audit(&self, txn: &mut RwTxn, id: u64, entry: &AuditEntry) -> Result<(), Fail> {
        self.audit.put(txn, &id.to_be_bytes(), &codec::encode(entry)?)?;
        Ok(())
    }

    /// Every open history record as (history id, peer id).
    pub fn open_history(&self, txn: &RoTxn) -> Result<Vec<(u64, String)>, Fail> {
        let mut out = Vec::new();
        for item in self.history_open.iter(txn)? {
            let (key, value) = item?;
            let id = key_u64(HISTORY_OPEN, key)?;
            let peer: String = codec::decode(HISTORY_OPEN, || id.to_string(), value)?;
            out.push((id, peer));
        }
        Ok(out)
    }

    pub fn get_meta_u64(&self, txn: &RoTxn, key: &str) -> Result<Option<u64>, Fail> {
        match self.meta.get(txn, key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => codec::decode(META, || key.to_owned(), bytes).map(Some),
        }
    }

    pub fn put_meta_u64(&self, txn: &mut RwTxn, key: &str, value: u64) -> Result<(), Fail> {
        self.meta.put(txn, key.as_bytes(), &codec::encode(&value)?)?;
        Ok(())
    }

    pub fn get_meta_u32(&self, txn: &RoTxn, key: &str) -> Result<Option<u32>, Fail> {
        match self.meta.get(txn, key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => codec::decode(META, || key.to_owned(), bytes).map(Some),
        }
    }

    pub fn put_meta_u32(&self, txn: &mut RwTxn, key: &str, value: u32) -> Result<(), Fail> {
        self.meta.put(txn, key.as_bytes(), &codec::encode(&value)?)?;
        Ok(())
    }
}

pub(super) fn decode_peer(key: &[u8], bytes: &[u8]) -> Result<PeerRecord, Fail> {
    let key_text = || String::from_utf8_lossy(key).into_owned();
    let rec: PeerRecord = codec::decode(PEERS, key_text, bytes)?;
    if rec.peer_id.as_bytes() != key {
        return Err(Fail::Corrupt {
            table: PEERS,
            key: key_text(),
            detail: format!("record names peer `{}`", rec.peer_id),
        });
    }
    Ok(rec)
}

/// A big-endian u64 key (tables `history`, `history_open`, `audit`).
pub(super) fn key_u64(table: &'static str, key: &[u8]) -> Result<u64, Fail> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Fail::Corrupt {
            table,
            key: format!("{key:02x?}"),
            detail: format!("key is {} bytes, expected 8", key.len()),
        })
}

/// A UTF-8 key (tables `meta`, `peers`, `config_cache`).
pub(super) fn key_str<'a>(table: &'static str, key: &'a [u8]) -> Result<&'a str, Fail> {
    std::str::from_utf8(key).map_err(|e| Fail::Corrupt {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        detail: format!("key is not UTF-8 ({e})"),
    })
}
