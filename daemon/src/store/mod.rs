//! The daemon's durable state in LMDB: peers, connection history, the audit log, a config
//! cache and document transfers (transfers.rs). The only module that imports heed; everything
//! leaves it as plain records or wire types.
//!
//! Who does what:
//! - `Store` (here): open, status and reads. All methods are blocking; async callers use
//!   `spawn_blocking`. No read transaction outlives the method call that opened it.
//! - `StoreWriter` (writer.rs): the one task that writes, batching queued `StoreOp`s into one
//!   `Store::apply` (one durable commit) at a time.
//! - ops.rs (what each op changes, and the caps on peer data), schema.rs (version, migrations,
//!   the open-time scan), tables.rs (tables and keys), codec.rs (rkyv with validated access),
//!   env.rs (directory, permissions, opening and growing the map), records.rs (stored types).
//!
//! Health: a value failing validation, or a failed write, marks the store unhealthy (with a
//! detail saying what and what to do). Reads keep working where the data is valid; every later
//! `apply` is refused without writing, until an operator acts and the daemon restarts. A full
//! disk is the exception: that batch fails with `DiskFull`, the store stays healthy, and the
//! next batch is tried as usual.

mod codec;
mod env;
mod error;
mod ops;
mod records;
mod schema;
mod tables;
mod transfers;
mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use firma_ipc::types::{AuditRecord, ConnectionRecord, StoreHealth, StoreStatus};
use heed::{Env, RoTxn, RwTxn, WithoutTls};

use crate::config::StoreConfig;

pub use error::StoreError;
pub use ops::{
    MAX_ADDRS, MAX_AUDIT_DETAIL, MAX_CONFIG_KEY, MAX_CONFIG_VALUE, MAX_PEER_ID, MAX_PEERS, MAX_PROTOCOLS, MAX_TEXT,
    StoreOp,
};
pub use records::{AddrRecord, AddrSource, Direction, PeerRecord, Trust};
pub use schema::SCHEMA_VERSION;
pub use transfers::{
    Admission, MAX_TRANSFER_ID, PendingEntry, PendingLimits, PendingUsage, ReceiptRecord, TransferDir, TransferPhase,
    TransferRecord,
};
pub use writer::{MAX_BATCH, StoreWriter};

use error::Fail;
use records::{AuditEntry, HistoryEntry};
use schema::Schema;
use tables::Tables;

/// The store's directory under the daemon's state directory.
pub const STORE_SUBDIR: &str = "store";

/// The map may grow up to this many times the configured `store.map_size_mib`.
pub const MAP_CEILING_FACTOR: usize = 16;

/// Handle to the open store. Cheap to clone; all clones share one LMDB environment.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

// Callers move handles into `spawn_blocking` and tasks; keep that a compile-time promise.
const _: () = {
    const fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();
    shareable::<StoreWriter>();
};

struct Inner {
    dir: PathBuf,
    env: Env<WithoutTls>,
    tables: Tables,
    history_retention: u64,
    audit_retention: u64,
    /// The map is never grown past this; a store that fills it is reported full.
    map_ceiling: usize,
    /// Every transaction is taken while holding this shared; a map resize holds it exclusively,
    /// because LMDB requires that no transaction of the process be active during a resize.
    /// Lock order: `write_lock` before `txn_gate`.
    txn_gate: RwLock<()>,
    /// One writer at a time, so that exactly one of them grows a full map.
    write_lock: Mutex<()>,
    health: Health,
}

/// Healthy until something stored fails validation or a write fails.
struct Health {
    unhealthy: AtomicBool,
    /// The first cause, kept: later failures usually follow from it.
    detail: Mutex<Option<String>>,
}

/// How to open the store; `Store::open` derives it from `StoreConfig`, tests build their own.
#[derive(Clone, Copy)]
struct OpenOptions {
    pub map_size: usize,
    pub map_ceiling: usize,
    pub history_retention: u64,
    pub audit_retention: u64,
    pub schema: Schema,
}

impl OpenOptions {
    fn from_config(cfg: &StoreConfig) -> Self {
        let map_size = usize::try_from(cfg.map_size_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let map_size = env::round_up(map_size);
        OpenOptions {
            map_size,
            map_ceiling: map_size.saturating_mul(MAP_CEILING_FACTOR),
            history_retention: u64::from(cfg.history_retention),
            audit_retention: u64::from(cfg.audit_retention),
            schema: Schema::CURRENT,
        }
    }
}

impl Store {
    /// The directory `Store::open` should be given for a daemon state directory.
    pub fn dir_in(state_dir: &Path) -> PathBuf {
        state_dir.join(STORE_SUBDIR)
    }

    /// Opens (creating if needed) the store in `dir` (the store's own directory, see `dir_in`):
    /// creates `dir` 0700, clears stale reader slots, checks and migrates the schema, validates
    /// every stored value and closes history records a crash left open (at `now_ms`). A corrupt
    /// value does not fail the open: the store opens unhealthy and says why in `status()`.
    pub fn open(dir: &Path, cfg: &StoreConfig, now_ms: u64) -> Result<Store, StoreError> {
        Self::open_with(dir, OpenOptions::from_config(cfg), now_ms)
    }

    fn open_with(dir: &Path, opts: OpenOptions, now_ms: u64) -> Result<Store, StoreError> {
        env::prepare_dir(dir)?;
        let map_size = env::initial_map_size(dir, opts.map_size)?;
        let lmdb = env::open_env(dir, map_size)?;
        env::tighten_files(dir)?;
        let heed_err = |action| {
            move |source| StoreError::Heed {
                dir: dir.to_path_buf(),
                action,
                source,
            }
        };
        let stale = lmdb
            .clear_stale_readers()
            .map_err(heed_err("clearing stale reader slots"))?;
        if stale > 0 {
            tracing::info!(stale, dir = %dir.display(), "cleared stale LMDB reader slots left by a dead process");
        }
        let tables = Tables::create(&lmdb).map_err(|f| f.into_store_error(dir, "creating the tables"))?;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                env: lmdb,
                tables,
                history_retention: opts.history_retention,
                audit_retention: opts.audit_retention,
                map_ceiling: env::round_up(opts.map_ceiling.max(map_size)),
                txn_gate: RwLock::new(()),
                write_lock: Mutex::new(()),
                health: Health {
                    unhealthy: AtomicBool::new(false),
                    detail: Mutex::new(None),
                },
            }),
        };
        store.prepare(opts.schema, now_ms)?;
        Ok(store)
    }

    /// The open-time steps that touch data. A corrupt value stops them and marks the store
    /// unhealthy; any other failure fails the open.
    fn prepare(&self, schema: Schema, now_ms: u64) -> Result<(), StoreError> {
        let dir = self.inner.dir.clone();
        let version = self.write("checking the schema version", |txn, t| {
            schema::check_version(txn, t, schema, &dir, now_ms)
        });
        match version {
            Ok(outcome) => tracing::debug!(?outcome, dir = %dir.display(), "store schema checked"),
            Err(e @ StoreError::Corrupt { .. }) => return self.keep_unhealthy(e),
            Err(e) => return Err(e),
        }
        if let Err(e) = self.read("validating the store", schema::validate_all) {
            return match e {
                StoreError::Corrupt { .. } => self.keep_unhealthy(e),
                e => Err(e),
            };
        }
        match self.write("closing connections left open by a crash", |txn, t| {
            schema::close_dangling(txn, t, now_ms)
        }) {
            Ok(0) => Ok(()),
            Ok(closed) => {
                tracing::info!(
                    closed,
                    "closed connection-history records left open by an unexpected stop"
                );
                Ok(())
            }
            Err(e @ StoreError::Corrupt { .. }) => self.keep_unhealthy(e),
            Err(e) => Err(e),
        }
    }

    fn keep_unhealthy(&self, e: StoreError) -> Result<(), StoreError> {
        tracing::error!(error = %e, "store opened unhealthy; writes are refused");
        Ok(())
    }

    /// Health, why unhealthy, the map size, how much of it is used, and the disk's free space.
    pub fn status(&self) -> StoreStatus {
        let (map_size, used) = {
            let _gate = self.gate();
            let info = self.inner.env.info();
            let page = self.inner.env.unnamed_database_stat().page_size as usize;
            (
                info.map_size,
                info.last_page_number.saturating_add(1).saturating_mul(page),
            )
        };
        let detail = self.unhealthy_detail();
        StoreStatus {
            health: if detail.is_some() {
                StoreHealth::Unhealthy
            } else {
                StoreHealth::Healthy
            },
            detail,
            map_size_bytes: map_size as u64,
            used_bytes: used as u64,
            disk_free_bytes: disk_free(&self.inner.dir),
        }
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn get_peer(&self, peer_id: &str) -> Result<Option<PeerRecord>, StoreError> {
        self.read("reading a peer", |txn, t| t.get_peer(txn, peer_id))
    }

    /// Every known peer, in peer-id order.
    pub fn list_peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.read("listing peers", |txn, t| {
            let mut out = Vec::new();
            for item in t.peers.iter(txn)? {
                let (key, value) = item?;
                out.push(tables::decode_peer(key, value)?);
            }
            Ok(out)
        })
    }

    /// How many peers the store holds: O(1), from LMDB's own count.
    pub fn peer_total(&self) -> Result<u64, StoreError> {
        self.read("counting peers", |txn, t| Ok(t.peers.len(txn)?))
    }

    /// How many peers are known and how many of them are pinned, without keeping the records.
    pub fn peer_counts(&self) -> Result<(u32, u32), StoreError> {
        self.read("counting peers", |txn, t| {
            let mut known = 0u32;
            let mut pinned = 0u32;
            for item in t.peers.iter(txn)? {
                let (key, value) = item?;
                known += 1;
                if tables::decode_peer(key, value)?.pinned {
                    pinned += 1;
                }
            }
            Ok((known, pinned))
        })
    }

    /// Peers to dial at start: those connected when the daemon stopped, and the pinned ones;
    /// never banned ones.
    pub fn peers_to_redial(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let mut peers = self.list_peers()?;
        peers.retain(|p| (p.was_connected || p.pinned) && !p.banned);
        Ok(peers)
    }

    /// Connection history, newest first, optionally of one peer only.
    pub fn history(&self, peer_id: Option<&str>, limit: usize) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.read("reading connection history", |txn, t| {
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            for item in t.history.rev_iter(txn)? {
                let (key, value) = item?;
                let id = tables::key_u64(tables::HISTORY, key)?;
                let entry: HistoryEntry = codec::decode(tables::HISTORY, || id.to_string(), value)?;
                if peer_id.is_none_or(|p| p == entry.peer_id) {
                    out.push(entry.into());
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Audit log, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read("reading the audit log", |txn, t| {
            let mut out = Vec::new();
            for item in t.audit.rev_iter(txn)?.take(limit) {
                let (key, value) = item?;
                let id = tables::key_u64(tables::AUDIT, key)?;
                let entry: AuditEntry = codec::decode(tables::AUDIT, || id.to_string(), value)?;
                out.push(entry.into());
            }
            Ok(out)
        })
    }

    pub fn config_cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("reading the config cache", |txn, t| {
            Ok(t.config_cache.get(txn, key.as_bytes())?.map(<[u8]>::to_vec))
        })
    }

    /// Applies every op in ONE write transaction: one durable commit, all or nothing. Refused
    /// without writing when the store is unhealthy or an op is invalid. A full map is grown
    /// (doubled, up to the ceiling) and the transaction retried once. A full disk fails the
    /// batch with `DiskFull` and nothing else; any other failure to write marks the store
    /// unhealthy.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if let Some(detail) = self.unhealthy_detail() {
            return Err(StoreError::Unhealthy(detail));
        }
        for op in ops {
            op.validate()?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        let now_ms = wall_clock_ms();
        let (history_retention, audit_retention) = (self.inner.history_retention, self.inner.audit_retention);
        let result = self.write("applying a batch of changes", |txn, t| {
            let mut batch = ops::Batch::begin(txn, t, now_ms)?;
            for op in ops {
                batch.apply(txn, op)?;
            }
            batch.finish(txn, history_retention, audit_retention)
        });
        match &result {
            // Corrupt values have marked the store already, with their own detail.
            Ok(()) | Err(StoreError::Corrupt { .. }) => {}
            // Transient: nothing was written and the environment is intact; later writes retry.
            Err(e @ StoreError::DiskFull { .. }) => tracing::error!(error = %e, "store write refused"),
            Err(e) => self.mark_unhealthy(format!("a write failed, so writes are refused until a restart: {e}")),
        }
        result
    }

    /// Runs `f` in a read transaction that ends before this returns.
    fn read<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&RoTxn, &Tables) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let result = {
            let _gate = self.gate();
            match self.inner.env.read_txn() {
                Ok(txn) => f(&txn, &self.inner.tables),
                Err(e) => Err(Fail::Heed(e)),
            }
        };
        result.map_err(|f| self.to_error(f, action))
    }

    /// Runs `f` in a write transaction and commits it; on a full map grows it and runs `f`
    /// again in a fresh transaction, once.
    fn write<T>(
        &self,
        action: &'static str,
        mut f: impl FnMut(&mut RwTxn, &Tables) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let _writer = self.inner.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match self.write_once(&mut f) {
            Err(fail) if fail.is_map_full() => {
                self.grow_map()?;
                match self.write_once(&mut f) {
                    Err(fail) if fail.is_map_full() => return Err(self.map_full_error()),
                    other => other,
                }
            }
            other => other,
        };
        result.map_err(|fail| match fail.is_disk_full(&self.inner.dir) {
            true => StoreError::DiskFull {
                dir: self.inner.dir.clone(),
            },
            false => self.to_error(fail, action),
        })
    }

    fn write_once<T>(&self, f: &mut impl FnMut(&mut RwTxn, &Tables) -> Result<T, Fail>) -> Result<T, Fail> {
        let _gate = self.gate();
        let mut txn = self.inner.env.write_txn()?;
        // On error the transaction is dropped, which aborts it.
        let value = f(&mut txn, &self.inner.tables)?;
        txn.commit()?;
        Ok(value)
    }

    /// Doubles the map, up to the ceiling. Called with `write_lock` held and no transaction.
    fn grow_map(&self) -> Result<(), StoreError> {
        let _exclusive = self.inner.txn_gate.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.inner.env.info().map_size;
        if current >= self.inner.map_ceiling {
            return Err(self.map_full_error_with(current));
        }
        let new_size = env::round_up(current.saturating_mul(2)).min(self.inner.map_ceiling);
        env::resize(&self.inner.env, new_size).map_err(|source| StoreError::Heed {
            dir: self.inner.dir.clone(),
            action: "growing the map",
            source,
        })?;
        tracing::info!(from = current, to = new_size, dir = %self.inner.dir.display(), "store map was full; grew it");
        Ok(())
    }

    fn map_full_error(&self) -> StoreError {
        let current = {
            let _gate = self.gate();
            self.inner.env.info().map_size
        };
        self.map_full_error_with(current)
    }

    fn map_full_error_with(&self, current: usize) -> StoreError {
        StoreError::MapFull {
            dir: self.inner.dir.clone(),
            map_size_bytes: current as u64,
            ceiling_bytes: self.inner.map_ceiling as u64,
        }
    }

    fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.txn_gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Converts an internal failure; a corrupt value also marks the store unhealthy.
    fn to_error(&self, fail: Fail, action: &'static str) -> StoreError {
        let e = fail.into_store_error(&self.inner.dir, action);
        if matches!(e, StoreError::Corrupt { .. }) {
            self.mark_unhealthy(e.to_string());
        }
        e
    }

    fn mark_unhealthy(&self, detail: String) {
        let mut slot = self.inner.health.detail.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            tracing::error!(%detail, "store marked unhealthy; writes are refused");
            *slot = Some(detail);
        }
        self.inner.health.unhealthy.store(true, Ordering::Release);
    }

    fn unhealthy_detail(&self) -> Option<String> {
        if !self.inner.health.unhealthy.load(Ordering::Acquire) {
            return None;
        }
        let slot = self.inner.health.detail.lock().unwrap_or_else(PoisonError::into_inner);
        Some(slot.clone().unwrap_or_else(|| "unknown cause".to_owned()))
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
// `blocks_available` is u64 on Linux but u32 on macOS: the conversion is needed there.
#[allow(clippy::useless_conversion)]
fn disk_free(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(u64::from(s.blocks_available()).saturating_mul(s.fragment_size()))
}
