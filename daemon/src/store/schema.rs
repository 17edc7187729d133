//! What `Store::open` does to the data before anyone reads it: the schema version check and
//! migrations, the whole-store validation scan, and closing history records left open by a crash.
//!
//! Schema versions: 1 is the first layout (records.rs as it is now); 2 adds the transfer index
//! tables (`transfers_pending`, `transfer_peers`, see transfers.rs). A change to any archived
//! type needs `SCHEMA_VERSION + 1` and a `Migration { from: SCHEMA_VERSION, .. }` that rewrites the
//! affected tables; all steps run in one write transaction, so a crash mid-migration leaves the
//! old version intact.

use heed::{RoTxn, RwTxn};

use super::codec;
use super::error::{Fail, StoreError};
use super::ops;
use super::records::{AuditEntry, HistoryEntry};
use super::tables::{self, Tables};

pub const SCHEMA_VERSION: u32 = 2;

/// One step of the migration table: turns a store at version `from` into version `from + 1`.
#[derive(Clone, Copy)]
pub(super) struct Migration {
    pub from: u32,
    pub run: fn(&mut RwTxn, &Tables) -> Result<(), Fail>,
}

/// The real migration table.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    from: 1,
    run: super::transfers::rebuild_indexes,
}];

/// Which schema this build writes and how it upgrades older stores.
#[derive(Clone, Copy)]
pub(super) struct Schema {
    pub version: u32,
    pub migrations: &'static [Migration],
}

impl Schema {
    pub const CURRENT: Schema = Schema {
        version: SCHEMA_VERSION,
        migrations: MIGRATIONS,
    };
}

/// Outcome of the version check, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VersionOutcome {
    Created,
    Current,
    Migrated { from: u32 },
}

/// Reads the stored version and brings it to `schema.version`. A store without a version is
/// new when every table is empty, and version 0 otherwise.
pub(super) fn check_version(
    txn: &mut RwTxn,
    t: &Tables,
    schema: Schema,
    dir: &std::path::Path,
    now_ms: u64,
) -> Result<VersionOutcome, Fail> {
    let stored = match t.get_meta_u32(txn, tables::META_SCHEMA_VERSION)? {
        Some(v) => v,
        None if all_empty(txn, t)? => {
            t.put_meta_u32(txn, tables::META_SCHEMA_VERSION, schema.version)?;
            t.put_meta_u64(txn, tables::META_CREATED_MS, now_ms)?;
            return Ok(VersionOutcome::Created);
        }
        None => 0,
    };
    if stored == schema.version {
        return Ok(VersionOutcome::Current);
    }
    if stored > schema.version {
        return Err(StoreError::SchemaTooNew {
            dir: dir.to_path_buf(),
            found: stored,
            supported: schema.version,
        }
        .into());
    }
    for from in stored..schema.version {
        let step = schema
            .migrations
            .iter()
            .find(|m| m.from == from)
            .ok_or_else(|| StoreError::NoMigration {
                dir: dir.to_path_buf(),
                from,
            })?;
        (step.run)(txn, t)?;
        tracing::info!(from, to = from + 1, dir = %dir.display(), "migrated store schema");
    }
    t.put_meta_u32(txn, tables::META_SCHEMA_VERSION, schema.version)?;
    Ok(VersionOutcome::Migrated { from: stored })
}

fn all_empty(txn: &RoTxn, t: &Tables) -> Result<bool, Fail> {
    for (_, db) in t.all() {
        if !db.is_empty(txn)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Validates every key and value of every table, so that damage is found at start (and
/// reported as an unhealthy store) rather than by whichever request first touches it.
pub(super) fn validate_all(txn: &RoTxn, t: &Tables) -> Result<(), Fail> {
    for item in t.meta.iter(txn)? {
        let (key, value) = item?;
        let key = tables::key_str(tables::META, key)?;
        match key {
            tables::META_SCHEMA_VERSION => {
                codec::decode::<u32>(tables::META, || key.to_owned(), value)?;
            }
            _ => {
                codec::decode::<u64>(tables::META, || key.to_owned(), value)?;
            }
        }
    }
    for item in t.peers.iter(txn)? {
        let (key, value) = item?;
        tables::key_str(tables::PEERS, key)?;
        tables::decode_peer(key, value)?;
    }
    for item in t.history.iter(txn)? {
        let (key, value) = item?;
        let id = tables::key_u64(tables::HISTORY, key)?;
        codec::decode::<HistoryEntry>(tables::HISTORY, || id.to_string(), value)?;
    }
    t.open_history(txn)?;
    for item in t.audit.iter(txn)? {
        let (key, value) = item?;
        let id = tables::key_u64(tables::AUDIT, key)?;
        codec::decode::<AuditEntry>(tables::AUDIT, || id.to_string(), value)?;
    }
    for item in t.config_cache.iter(txn)? {
        let (key, _) = item?;
        tables::key_str(tables::CONFIG_CACHE, key)?;
    }
    for item in t.transfers.iter(txn)? {
        let (key, value) = item?;
        super::transfers::decode_transfer(key, value)?;
    }
    super::transfers::validate_indexes(txn, t)
}

/// Closes the history records a crash left open; returns how many.
pub(super) fn close_dangling(txn: &mut RwTxn, t: &Tables, now_ms: u64) -> Result<usize, Fail> {
    let open = t.open_history(txn)?.len();
    if open > 0 {
        ops::close_open_history(txn, t, None, now_ms, Some(ops::REASON_CRASHED))?;
    }
    Ok(open)
}
