//! The durable outbox: every outgoing transfer not in a final state lives in LMDB, and this task
//! keeps attempting delivery until it is delivered, fails for good, is cancelled, or passes its
//! deadline. Delays follow `network.retry` (exponential backoff with jitter); a recipient that
//! is offline is not an error, only a reason to wait. When a peer connects, its transfers are
//! attempted at once (the task follows the event log for that).
//!
//! At most `transfer.concurrency` attempts run at once; the schedule lives in memory, so after
//! a restart every pending transfer is attempted right away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use firma_ipc::event::Event;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::send::{self, Outcome};
use super::{Engine, is_final};
use crate::config::RetryConfig;
use crate::core::now_ms;
use crate::store::{TransferDir, TransferPhase};

/// Longest sleep between two looks at the outbox (deadlines are checked at least this often).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// After the recipient said "not decided yet", ask again this soon (it held our offer already).
const WAIT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Slot {
    failures: u32,
    next: Instant,
}

pub(crate) struct Outbox {
    wake: Notify,
    schedule: Mutex<HashMap<String, Slot>>,
    /// Running attempts, with the token that stops each.
    running: Mutex<HashMap<String, CancellationToken>>,
    slots: Arc<Semaphore>,
}

impl Outbox {
    pub fn new(concurrency: usize) -> Outbox {
        Outbox {
            wake: Notify::new(),
            schedule: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops a running attempt of `id` (cancel).
    pub fn cancel(&self, id: &str) {
        if let Some(t) = self.running.lock().unwrap_or_else(PoisonError::into_inner).get(id) {
            t.cancel();
        }
    }

    pub fn forget(&self, id: &str) {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    fn due(&self, id: &str, now: Instant) -> Option<Instant> {
        match self.schedule.lock().unwrap_or_else(PoisonError::into_inner).get(id) {
            Some(s) if s.next > now => Some(s.next),
            _ => None,
        }
    }

    fn reschedule(&self, id: &str, delay: Option<(Duration, bool)>) {
        let mut s = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
        match delay {
            None => {
                s.remove(id);
            }
            Some((d, failure)) => {
                let slot = s.entry(id.to_owned()).or_insert(Slot {
                    failures: 0,
                    next: Instant::now(),
                });
                if failure {
                    slot.failures = slot.failures.saturating_add(1);
                }
                slot.next = Instant::now() + d;
            }
        }
    }

    fn failures(&self, id: &str) -> u32 {
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map_or(0, |s| s.failures)
    }
}

/// The delay before attempt number `failures + 1`, per the retry strategy.
pub(crate) fn backoff(r: &RetryConfig, failures: u32) -> Duration {
    let base = r.initial_delay.as_secs_f64() * r.multiplier.powi(failures.min(64) as i32);
    let capped = base.min(r.max_delay.as_secs_f64());
    let jitter = capped * r.jitter * (rand::random::<f64>() * 2.0 - 1.0);
    Duration::from_secs_f64((capped + jitter).clamp(0.0, r.max_delay.as_secs_f64()))
}

pub(crate) async fn run(engine: Arc<Engine>) {
    loop {
        let next = match look(&engine).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e.message, "outbox: could not read the transfers; trying again shortly");
                Some(Instant::now() + Duration::from_secs(5))
            }
        };
        let sleep = next.map_or(MAX_IDLE, |n| n.saturating_duration_since(Instant::now()).min(MAX_IDLE));
        tokio::select! {
            () = engine.shutdown.cancelled() => break,
            () = engine.outbox.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
    let running: Vec<CancellationToken> = engine
        .outbox
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    for t in running {
        t.cancel();
    }
}

/// One pass: fails what passed its deadline, starts what is due. Returns the next due time.
async fn look(engine: &Arc<Engine>) -> Result<Option<Instant>, firma_ipc::IpcError> {
    let now = Instant::now();
    let wall = now_ms();
    let mut next: Option<Instant> = None;
    for rec in engine.list().await? {
        if rec.direction != TransferDir::Outgoing || is_final(rec.phase) {
            continue;
        }
        if engine
            .outbox
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&rec.id)
        {
            continue;
        }
        let deadline = super::manifest::Manifest::decode(&rec.manifest)
            .ok()
            .and_then(|m| m.deadline_ms);
        if deadline.is_some_and(|d| d <= wall) {
            let _ = engine
                .set_phase(
                    &rec.id,
                    TransferPhase::Failed,
                    Some("the deadline passed before delivery".into()),
                )
                .await;
            continue;
        }
        if let Some(at) = engine.outbox.due(&rec.id, now) {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let Ok(permit) = engine.outbox.slots.clone().try_acquire_owned() else {
            // Every slot busy: an attempt that ends wakes us.
            break;
        };
        let token = engine.shutdown.child_token();
        engine
            .outbox
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(rec.id.clone(), token.clone());
        let e = engine.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let id = rec.id.clone();
            let outcome = send::attempt(&e, rec, &token).await;
            conclude(&e, &id, outcome).await;
            e.outbox
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            e.outbox.wake();
        });
    }
    Ok(next)
}

async fn conclude(engine: &Arc<Engine>, id: &str, outcome: Outcome) {
    match outcome {
        Outcome::Delivered => {
            tracing::info!(transfer = %id, "transfer delivered; receipt verified");
            engine.outbox.reschedule(id, None);
        }
        Outcome::Failed(why) => {
            tracing::warn!(transfer = %id, %why, "transfer failed");
            let _ = engine.set_phase(id, TransferPhase::Failed, Some(why)).await;
            engine.outbox.reschedule(id, None);
        }
        Outcome::Stopped => {}
        Outcome::Wait(why) => {
            let _ = engine
                .update(id, |r| {
                    if !is_final(r.phase) {
                        r.phase = TransferPhase::Pending;
                        r.error = Some(why);
                    }
                    Ok(())
                })
                .await;
            engine.outbox.reschedule(id, Some((WAIT_RETRY, false)));
        }
        Outcome::Retry(why) => {
            let failures = engine.outbox.failures(id);
            let delay = backoff(&engine.retry, failures);
            tracing::info!(transfer = %id, %why, retry_in = ?delay, "transfer attempt did not complete; will retry");
            let _ = engine
                .update(id, |r| {
                    if !is_final(r.phase) {
                        r.phase = TransferPhase::Pending;
                        r.error = Some(why);
                    }
                    Ok(())
                })
                .await;
            engine.outbox.reschedule(id, Some((delay, true)));
        }
    }
}

/// Follows the event log: when a peer connects, its waiting transfers are attempted now.
pub(crate) async fn follow_connections(engine: Arc<Engine>) {
    let mut after = engine.core.events.head();
    loop {
        let batch = tokio::select! {
            () = engine.shutdown.cancelled() => break,
            b = engine.core.events.poll(after, 256, Duration::from_secs(30)) => b,
        };
        if batch.resync {
            after = batch.head;
            continue;
        }
        for env in &batch.events {
            after = after.max(env.seq);
            if let Event::PeerConnected { peer_id, .. } = &env.event {
                let ids: Vec<String> = match engine.list().await {
                    Ok(list) => list
                        .into_iter()
                        .filter(|r| r.direction == TransferDir::Outgoing && !is_final(r.phase) && &r.peer_id == peer_id)
                        .map(|r| r.id)
                        .collect(),
                    Err(_) => continue,
                };
                for id in ids {
                    engine.outbox.reschedule(&id, None);
                }
                engine.outbox.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryConfig {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts: 0,
        };
        assert_eq!(backoff(&r, 0), Duration::from_millis(100));
        assert_eq!(backoff(&r, 3), Duration::from_millis(800));
        assert_eq!(backoff(&r, 30), Duration::from_secs(2));
    }
}
