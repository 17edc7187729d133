//! The inbox: incoming transfers from unknown peers that wait for an operator's decision (inbox
//! policy `ask`). What they may hold here is capped by count and bytes, per peer and in total
//! (`transfer.pending_*`), checked against the store's pending index in the same transaction
//! that inserts a new one; nothing scans the transfers to count them.
//!
//! A rejected, cancelled, failed or expired incoming transfer loses its files at once: a v1 body
//! waiting for a decision sits in its incoming folder as a bounded quarantine (its bytes count
//! against the limits) and is either accepted in place or deleted. At start, incoming folders
//! that no live transfer owns (left by a crash or by an older version) are removed.

use std::sync::Arc;
use std::time::Duration;

use firma_ipc::IpcError;

use super::{Engine, is_final};
use crate::core::now_ms;
use crate::store::{Admission, PendingLimits, PendingUsage, Store, TransferDir, TransferPhase, TransferRecord};

impl Engine {
    pub(crate) fn pending_limits(&self) -> PendingLimits {
        let c = &self.cfg;
        PendingLimits {
            max_transfers: u64::from(c.pending_max_transfers),
            max_bytes: c.pending_max_bytes,
            max_transfers_per_peer: u64::from(c.pending_max_transfers_per_peer),
            max_bytes_per_peer: c.pending_max_bytes_per_peer,
        }
    }

    /// What waits for a decision now, in total and from `peer`.
    pub(crate) async fn pending_usage(&self, peer: &str) -> Result<PendingUsage, IpcError> {
        let p = peer.to_owned();
        self.core.read(move |s| s.pending_usage(&p)).await
    }

    /// Stores a new incoming transfer that waits for a decision, within the pending limits;
    /// announces it when stored.
    pub(crate) async fn insert_pending(&self, rec: TransferRecord) -> Result<Admission, IpcError> {
        let _g = self.record_lock.lock().await;
        let (store, limits, r) = (self.core.store.clone(), self.pending_limits(), rec.clone());
        let admission = tokio::task::spawn_blocking(move || store.insert_pending(&r, &limits))
            .await
            .map_err(|e| IpcError::internal(format!("store write task failed: {e}")))?
            .map_err(super::store_err)?;
        if admission == Admission::Stored {
            self.announce(&rec);
        }
        Ok(admission)
    }

    /// Deletes everything this daemon holds on disk of incoming transfer `id` (a decision
    /// against it, or a failure). Best effort: a file that cannot go is logged, and the start
    /// sweep tries again.
    pub(crate) async fn discard_incoming(&self, id: &str) {
        let dir = self.blobs.incoming_dir(id);
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("{}: {e}", dir.display())),
        })
        .await;
        match removed {
            Ok(Ok(true)) => tracing::info!(transfer = %id, "deleted the documents of a refused incoming transfer"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(transfer = %id, error = %e, "could not delete a refused transfer's documents"),
            Err(e) => tracing::warn!(transfer = %id, error = %e, "deleting a refused transfer's documents"),
        }
    }
}

/// Rejects every transfer that waited for a decision longer than `transfer.pending_expiry`, and
/// deletes its documents. Returns how many.
pub(super) async fn expire(engine: &Arc<Engine>) -> Result<usize, IpcError> {
    let max_age = u64::try_from(engine.cfg.pending_expiry.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms();
    let due: Vec<String> = engine
        .core
        .read(|s| s.pending_transfers())
        .await?
        .into_iter()
        .filter(|(_, _, e)| now.saturating_sub(e.created_ms) >= max_age)
        .map(|(_, id, _)| id)
        .collect();
    let why = format!(
        "no decision within transfer.pending_expiry ({}); rejected and its documents deleted",
        humantime_serde::re::humantime::format_duration(engine.cfg.pending_expiry)
    );
    let mut expired = 0;
    for id in due {
        let mut rejected = false;
        let updated = engine
            .update(&id, |r| {
                if r.direction == TransferDir::Incoming && r.phase == TransferPhase::Pending {
                    r.phase = TransferPhase::Rejected;
                    r.error = Some(why.clone());
                    rejected = true;
                }
                Ok(())
            })
            .await;
        let rec = match updated {
            Ok(rec) => rec,
            Err(e) => {
                tracing::warn!(transfer = %id, error = %e.message, "could not expire a pending transfer");
                continue;
            }
        };
        if rejected {
            engine.decide(&id, false);
            engine.discard_incoming(&id).await;
            tracing::info!(transfer = %id, peer = %rec.peer_id, "an incoming transfer waited too long for a decision; rejected");
            expired += 1;
        }
    }
    Ok(expired)
}

/// Removes incoming folders that no transfer still receiving, waiting or received owns.
/// Blocking; run at start, before any stream is accepted.
pub(super) fn sweep_incoming(blobs: &super::Blobs, store: &Store) -> usize {
    let Ok(dir) = std::fs::read_dir(blobs.root().join("incoming")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.filter_map(Result::ok) {
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let keep = match store.get_transfer(&id) {
            Ok(Some(r)) => {
                r.direction == TransferDir::Incoming && (!is_final(r.phase) || r.phase == TransferPhase::Received)
            }
            Ok(None) => false,
            // Unreadable: keep it, the store says why elsewhere.
            Err(_) => true,
        };
        if !keep && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How often the upkeep task looks for expired pending transfers and idle uploads: often
/// enough for the shorter of the two limits, at most once a minute, at least once a second.
pub(super) fn upkeep_every(cfg: &crate::config::TransferConfig) -> Duration {
    (cfg.pending_expiry.min(cfg.upload_idle_timeout) / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The upkeep task: expires pending transfers and removes idle uploads and old staged documents.
pub(super) async fn upkeep(engine: Arc<Engine>) {
    let every = upkeep_every(&engine.cfg);
    loop {
        tokio::select! {
            () = engine.shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        match expire(&engine).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "rejected transfers that waited too long for a decision"),
            Err(e) => tracing::warn!(error = %e.message, "could not look for expired pending transfers"),
        }
        let (blobs, idle) = (engine.blobs.clone(), engine.cfg.upload_idle_timeout);
        let _guard = engine.uploads_lock.lock().await;
        match tokio::task::spawn_blocking(move || blobs.prune_idle(idle, super::STAGED_MAX_AGE)).await {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::info!(removed = n, "removed idle uploads and old staged documents"),
        }
    }
}
