//! `StoreError`, the one error type of the store, and `Fail`, the internal error that inner
//! functions return before the public method adds the store directory to the message.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Messages name the directory, table or key
/// involved and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored value failed rkyv validation. The store is now unhealthy and refuses writes.
    #[error(
        "store table `{table}` key `{key}` holds a corrupt value ({detail}); restore from backup or move {} aside",
        dir.display()
    )]
    Corrupt {
        table: &'static str,
        key: String,
        detail: String,
        dir: PathBuf,
    },
    /// The store was marked unhealthy earlier (corrupt value or failed write); writes are refused.
    #[error("store is unhealthy, writes are refused: {0}")]
    Unhealthy(String),
    /// The LMDB map stayed full after growing it once (or it could not grow any more).
    #[error(
        "store at {} is full: map is {map_size_bytes} bytes, growth ceiling {ceiling_bytes} bytes; \
         raise store.map_size_mib (the ceiling is 16 times it) and restart, or prune the store",
        dir.display()
    )]
    MapFull {
        dir: PathBuf,
        map_size_bytes: u64,
        ceiling_bytes: u64,
    },
    /// The file system holding the store is full (or over quota): this batch was not written.
    /// Nothing stored earlier is affected, and writes work again once there is room.
    #[error(
        "store at {}: the disk is full, so this change was not saved; free space on that file system \
         (everything stored before is intact, and writing resumes by itself once there is room)",
        dir.display()
    )]
    DiskFull { dir: PathBuf },
    /// A file-system operation on the store directory failed.
    #[error("store directory {}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// LMDB (through heed) reported an error.
    #[error("store at {}: LMDB error while {action}: {source}", dir.display())]
    Heed {
        dir: PathBuf,
        action: &'static str,
        #[source]
        source: heed::Error,
    },
    /// The store was written by a newer build whose schema this build cannot read.
    #[error(
        "store at {} has schema version {found}, this build understands up to {supported}; \
         run a newer firma-transportd or move the directory aside",
        dir.display()
    )]
    SchemaTooNew { dir: PathBuf, found: u32, supported: u32 },
    /// No migration step exists from a stored schema version.
    #[error(
        "store at {} has schema version {from} and this build has no migration from it; \
         move the directory aside to start empty",
        dir.display()
    )]
    NoMigration { dir: PathBuf, from: u32 },
    /// An operation carried data the store refuses (nothing was written).
    #[error("store refused {op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// The writer task has stopped (daemon shutting down); the operation was not queued.
    #[error("store writer task has stopped; the daemon is shutting down")]
    WriterStopped,
    /// A batch queued through `StoreWriter` failed to commit; its operations were lost.
    #[error("store write failed: {0}")]
    WriteFailed(String),
}

/// Internal error: heed errors stay raw until the public method knows which action failed,
/// so that map-full can be recognised and retried.
#[derive(Debug)]
pub(super) enum Fail {
    Heed(heed::Error),
    Corrupt {
        table: &'static str,
        key: String,
        detail: String,
    },
    Store(StoreError),
}

impl From<heed::Error> for Fail {
    fn from(e: heed::Error) -> Self {
        Fail::Heed(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    /// A full file system under the store: ENOSPC or EDQUOT, or EIO while almost no space is
    /// left (LMDB reports a short page write as EIO). LMDB aborted the transaction and left the
    /// environment as it was; a failure while writing its meta page would instead surface as
    /// MDB_PANIC on the next transaction, which marks the store unhealthy as any other write
    /// failure does.
    pub(super) fn is_disk_full(&self, dir: &std::path::Path) -> bool {
        use nix::errno::Errno;
        /// Below this much free space, an EIO from a write is taken for a full disk.
        const LOW_SPACE: u64 = 1 << 20;
        let Fail::Heed(heed::Error::Io(e)) = self else {
            return false;
        };
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOSPC | Errno::EDQUOT) => true,
            Some(Errno::EIO) => super::disk_free(dir).is_some_and(|free| free < LOW_SPACE),
            _ => false,
        }
    }

    pub(super) fn is_map_full(&self) -> bool {
        matches!(self, Fail::Heed(heed::Error::Mdb(heed::MdbError::MapFull)))
    }

    /// Adds the store directory and the action to the error.
    pub(super) fn into_store_error(self, dir: &std::path::Path, action: &'static str) -> StoreError {
        match self {
            Fail::Heed(source) => StoreError::Heed {
                dir: dir.to_path_buf(),
                action,
                source,
            },
            Fail::Corrupt { table, key, detail } => StoreError::Corrupt {
                table,
                key,
                detail,
                dir: dir.to_path_buf(),
            },
            Fail::Store(e) => e,
        }
    }
}
