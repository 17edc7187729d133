//! The LMDB environment itself: its directory and file permissions, opening it, and resizing
//! its map. The two `unsafe` calls heed requires live here, each with the reason it is sound.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use heed::{Env, EnvOpenOptions, WithoutTls};

use super::error::StoreError;
use super::tables::TABLE_COUNT;

/// Map sizes are kept multiples of this, which is a multiple of every page size LMDB may use
/// (4 KiB, 16 KiB, 64 KiB), as `mdb_env_set_mapsize` requires.
pub(super) const MAP_GRANULE: usize = 1 << 20;

/// The data file LMDB keeps in the directory.
const DATA_FILE: &str = "data.mdb";
const LOCK_FILE: &str = "lock.mdb";

/// Creates `dir` (mode 0700) or tightens an existing one to 0700.
pub(super) fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |action, source| StoreError::Io {
        path: dir.to_path_buf(),
        action,
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("creating it (mode 0700)", e))?;
    let meta = fs::metadata(dir).map_err(|e| io("reading its metadata", e))?;
    if !meta.is_dir() {
        return Err(io(
            "checking it is a directory",
            std::io::Error::other("not a directory"),
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("setting mode 0700 (is it owned by the daemon's user?)", e))?;
    }
    Ok(())
}

/// The configured map size, or the data file's size if that is larger (the map grew in an
/// earlier run), rounded up to `MAP_GRANULE`.
pub(super) fn initial_map_size(dir: &Path, configured: usize) -> Result<usize, StoreError> {
    let path = dir.join(DATA_FILE);
    let existing = match fs::metadata(&path) {
        Ok(m) => usize::try_from(m.len()).unwrap_or(usize::MAX),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(StoreError::Io {
                path,
                action: "reading its size",
                source: e,
            });
        }
    };
    Ok(round_up(configured.max(existing)))
}

pub(super) fn round_up(size: usize) -> usize {
    size.max(MAP_GRANULE).div_ceil(MAP_GRANULE).saturating_mul(MAP_GRANULE)
}

/// Opens the environment with durable defaults: no NO_SYNC, NO_META_SYNC, WRITEMAP or NO_LOCK.
/// Read transactions do not use thread-local storage, so the blocking pool's many threads do
/// not each pin a reader slot.
#[allow(unsafe_code)]
pub(super) fn open_env(dir: &Path, map_size: usize) -> Result<Env<WithoutTls>, StoreError> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(TABLE_COUNT);
    // SAFETY: heed marks opening unsafe because the memory map is undefined behaviour if the
    // file is modified behind LMDB's back. Only this process writes the store (the daemon holds
    // a lock file against a second instance), always through LMDB with its lock file, and heed
    // refuses to open the same path twice in one process.
    let opened = unsafe { options.open(dir) };
    opened.map_err(|source| match source {
        heed::Error::EnvAlreadyOpened => StoreError::Io {
            path: dir.to_path_buf(),
            action: "opening the LMDB environment",
            source: std::io::Error::other("it is already open in this process; share the existing Store instead"),
        },
        source => StoreError::Heed {
            dir: dir.to_path_buf(),
            action: "opening the LMDB environment",
            source,
        },
    })
}

/// Sets LMDB's files to 0600, whatever the umask or an older build left.
pub(super) fn tighten_files(dir: &Path) -> Result<(), StoreError> {
    for name in [DATA_FILE, LOCK_FILE] {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o777 != 0o600 => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| StoreError::Io {
                    path: path.clone(),
                    action: "setting mode 0600",
                    source,
                })?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    action: "reading its metadata",
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Grows the map to `new_size` (a multiple of `MAP_GRANULE`).
///
/// The caller must hold the store's transaction gate exclusively.
#[allow(unsafe_code)]
pub(super) fn resize(env: &Env<WithoutTls>, new_size: usize) -> heed::Result<()> {
    // SAFETY: LMDB allows `mdb_env_set_mapsize` on an open environment when this process has no
    // active transaction. Every transaction of the store is taken while holding the transaction
    // gate shared, and the caller holds it exclusively, so none is active; no other process
    // writes the store.
    unsafe { env.resize(new_size) }
}
