//! When to redial a peer we want to keep: exponential backoff with jitter from `RetryConfig`,
//! and the table of peers waiting for their next attempt.
//!
//! The table holds no timers of its own: the event loop asks for [`RedialTable::next_due`] and
//! sleeps until then inside its `select!`, then takes the due peers with [`RedialTable::take_due`].
//! That keeps every redial decision on the event loop's task, next to the swarm it dials with.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

use crate::config::RetryConfig;

/// Peers that are redialled only because they were connected once. Pinned peers are never
/// refused; the others are dropped past this many so that a churning network (js-libp2p nodes
/// make a new peer id at every start) cannot grow the table without end.
pub(crate) const MAX_UNPINNED_REDIALS: usize = 1024;

/// The delay before attempt number `attempt` (0 for the first redial after a loss), or `None`
/// once `max_attempts` attempts have been made (`max_attempts == 0` never gives up).
///
/// `unit` is a random number in `[0, 1)`; it removes up to `jitter` of the delay, so delays fall in
/// `[(1 - jitter) * base, base]` and never exceed `max_delay`.
pub(crate) fn delay_for_attempt(cfg: &RetryConfig, attempt: u32, unit: f64) -> Option<Duration> {
    if cfg.max_attempts != 0 && attempt >= cfg.max_attempts {
        return None;
    }
    let initial = cfg.initial_delay.as_secs_f64();
    let max = cfg.max_delay.as_secs_f64().max(initial);
    // powi saturates to infinity for large attempts; min() then caps it, so no overflow.
    let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
    let base = (initial * cfg.multiplier.max(1.0).powi(exponent)).min(max);
    let jitter = cfg.jitter.clamp(0.0, 1.0);
    let unit = unit.clamp(0.0, 1.0);
    let secs = base * (1.0 - jitter * unit);
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

/// What [`RedialTable::schedule`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheduled {
    /// The next attempt is due at this instant (possibly one that was already scheduled).
    At(Instant),
    /// `max_attempts` reached: no further attempt until something new is learnt about the peer.
    GaveUp,
    /// The table is full of unpinned peers; this one is not redialled.
    Full,
}

#[derive(Debug, Default)]
struct Entry {
    /// Attempts made since the peer was last connected.
    attempts: u32,
    /// Pinned peers stay in the table while connected, so their next loss is redialled too.
    pinned: bool,
    due: Option<Instant>,
}

/// Peers to redial and when. Bounded: see [`MAX_UNPINNED_REDIALS`].
#[derive(Debug, Default)]
pub(crate) struct RedialTable {
    entries: HashMap<PeerId, Entry>,
    /// The same deadlines as in `entries`, ordered, so the earliest is found in O(log n).
    queue: BTreeSet<(Instant, PeerId)>,
}

impl RedialTable {
    pub(crate) fn pin(&mut self, peer: PeerId) {
        self.entries.entry(peer).or_default().pinned = true;
    }

    /// Stops keeping the peer; a scheduled attempt is cancelled.
    pub(crate) fn unpin(&mut self, peer: &PeerId) {
        self.forget(peer);
    }

    pub(crate) fn is_pinned(&self, peer: &PeerId) -> bool {
        self.entries.get(peer).is_some_and(|e| e.pinned)
    }

    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.entries.contains_key(peer)
    }

    pub(crate) fn is_scheduled(&self, peer: &PeerId) -> bool {
        self.entries.get(peer).is_some_and(|e| e.due.is_some())
    }

    /// Removes every trace of the peer (disconnected or banned on purpose).
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        if let Some(entry) = self.entries.remove(peer)
            && let Some(due) = entry.due
        {
            self.queue.remove(&(due, *peer));
        }
    }

    /// Counts a dial made to keep the peer; the next delay grows from it.
    pub(crate) fn note_attempt(&mut self, peer: &PeerId) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.attempts = entry.attempts.saturating_add(1);
        }
    }

    /// The peer is connected: its scheduled attempt is cancelled, the backoff starts over and
    /// unpinned peers leave the table. Returns the attempts made before, for
    /// [`RedialTable::restore_attempts`] when the connection does not last.
    pub(crate) fn connected(&mut self, peer: &PeerId) -> u32 {
        let before = self.entries.get(peer).map_or(0, |e| e.attempts);
        let pinned = self.is_pinned(peer);
        self.forget(peer);
        if pinned {
            self.pin(*peer);
        }
        before
    }

    /// A connection that dropped soon after it opened does not count as success: the attempts
    /// made before it are put back, so a peer that accepts and then closes at once is redialled
    /// with a growing delay, not every `initial_delay`. Respects the table's bound.
    pub(crate) fn restore_attempts(&mut self, peer: PeerId, attempts: u32) {
        if !self.entries.contains_key(&peer) && self.unpinned() >= MAX_UNPINNED_REDIALS {
            return;
        }
        let entry = self.entries.entry(peer).or_default();
        entry.attempts = entry.attempts.max(attempts);
    }

    /// Something new was learnt about a pinned peer that had been given up on (a fresh address):
    /// its attempts start over. Returns true when the caller should dial it now.
    pub(crate) fn rearm(&mut self, peer: &PeerId) -> bool {
        match self.entries.get_mut(peer) {
            Some(entry) if entry.pinned && entry.due.is_none() => {
                entry.attempts = 0;
                true
            }
            _ => false,
        }
    }

    /// Schedules the next attempt after a loss or a failed dial, from the attempts made so far.
    /// An attempt already scheduled is kept (two failures must not double the pace).
    pub(crate) fn schedule(&mut self, peer: PeerId, cfg: &RetryConfig, now: Instant, unit: f64) -> Scheduled {
        if !self.entries.contains_key(&peer) && self.unpinned() >= MAX_UNPINNED_REDIALS {
            return Scheduled::Full;
        }
        let entry = self.entries.entry(peer).or_default();
        if let Some(due) = entry.due {
            return Scheduled::At(due);
        }
        match delay_for_attempt(cfg, entry.attempts, unit) {
            Some(delay) => {
                let due = now + delay;
                entry.due = Some(due);
                self.queue.insert((due, peer));
                Scheduled::At(due)
            }
            None => {
                if !entry.pinned {
                    self.entries.remove(&peer);
                }
                Scheduled::GaveUp
            }
        }
    }

    /// The earliest scheduled attempt, for the event loop's sleep.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|(due, _)| *due)
    }

    /// Removes and returns the peers whose attempt is due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<PeerId> {
        let mut due = Vec::new();
        while let Some(&(at, peer)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            if let Some(entry) = self.entries.get_mut(&peer) {
                entry.due = None;
            }
            due.push(peer);
        }
        due
    }

    fn unpinned(&self) -> usize {
        self.entries.values().filter(|e| !e.pinned).count()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_attempts: u32, jitter: f64) -> RetryConfig {
        RetryConfig {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
            jitter,
            max_attempts,
        }
    }

    #[test]
    fn delays_grow_by_the_multiplier_and_stop_at_max_delay() {
        let c = cfg(0, 0.0);
        let delays: Vec<u128> = (0..8)
            .map(|a| delay_for_attempt(&c, a, 0.5).map(|d| d.as_millis()).unwrap_or(0))
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        // Far past any realistic count, still capped (no overflow, no panic).
        assert_eq!(delay_for_attempt(&c, u32::MAX - 1, 0.0), Some(Duration::from_secs(2)));
    }

    #[test]
    fn jitter_stays_within_its_fraction_below_the_base_delay() {
        let c = cfg(0, 0.2);
        for attempt in 0..10 {
            let base = delay_for_attempt(&cfg(0, 0.0), attempt, 0.0).unwrap_or_default();
            for unit in [0.0, 0.25, 0.5, 0.999_999] {
                let d = delay_for_attempt(&c, attempt, unit).unwrap_or_default();
                assert!(d <= base, "attempt {attempt} unit {unit}: {d:?} > {base:?}");
                assert!(
                    d >= base.mul_f64(0.8) - Duration::from_nanos(1),
                    "attempt {attempt}: {d:?} too short"
                );
            }
        }
        // The jitter really varies the delay.
        assert_ne!(delay_for_attempt(&c, 3, 0.0), delay_for_attempt(&c, 3, 0.9));
        // And random units keep the bounds.
        let base = Duration::from_millis(800);
        for _ in 0..1000 {
            let d = delay_for_attempt(&c, 3, rand::random::<f64>()).unwrap_or_default();
            assert!(d <= base && d >= base.mul_f64(0.8) - Duration::from_nanos(1), "{d:?}");
        }
    }

    #[test]
    fn gives_up_after_max_attempts_and_zero_means_forever() {
        let c = cfg(3, 0.0);
        assert!(delay_for_attempt(&c, 2, 0.0).is_some());
        assert_eq!(delay_for_attempt(&c, 3, 0.0), None);
        assert!(delay_for_attempt(&cfg(0, 0.0), 1_000_000, 0.0).is_some());
    }

    #[test]
    fn table_schedules_by_attempts_and_returns_due_peers_in_order() {
        let c = cfg(2, 0.0);
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut t = RedialTable::default();
        assert_eq!(
            t.schedule(a, &c, now, 0.0),
            Scheduled::At(now + Duration::from_millis(100))
        );
        t.note_attempt(&b);
        t.pin(b);
        t.note_attempt(&b);
        assert_eq!(
            t.schedule(b, &c, now, 0.0),
            Scheduled::At(now + Duration::from_millis(200))
        );
        // A second failure report does not move an attempt already scheduled.
        assert_eq!(
            t.schedule(a, &c, now, 0.0),
            Scheduled::At(now + Duration::from_millis(100))
        );
        assert_eq!(t.next_due(), Some(now + Duration::from_millis(100)));
        assert!(t.take_due(now).is_empty());
        assert_eq!(t.take_due(now + Duration::from_millis(150)), vec![a]);
        assert_eq!(t.take_due(now + Duration::from_secs(1)), vec![b]);
        assert_eq!(t.next_due(), None);

        // b (pinned) used both attempts: it is given up on but stays known; a new address rearms it.
        t.note_attempt(&b);
        assert_eq!(t.schedule(b, &c, now, 0.0), Scheduled::GaveUp);
        assert!(t.is_pinned(&b) && !t.is_scheduled(&b));
        assert!(t.rearm(&b));
        assert!(matches!(t.schedule(b, &c, now, 0.0), Scheduled::At(_)));

        // a (unpinned) that gives up leaves the table.
        t.note_attempt(&a);
        t.note_attempt(&a);
        assert_eq!(t.schedule(a, &c, now, 0.0), Scheduled::GaveUp);
        assert!(!t.contains(&a));

        // Connected: backoff resets, pinned peers stay, the scheduled attempt is cancelled.
        assert_eq!(t.connected(&b), 0, "rearm started b over");
        assert!(t.is_pinned(&b) && !t.is_scheduled(&b));
        assert_eq!(t.next_due(), None);
        t.forget(&b);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_connection_that_drops_at_once_keeps_the_backoff_growing() {
        let c = cfg(0, 0.0);
        let now = Instant::now();
        let peer = PeerId::random();
        let mut t = RedialTable::default();
        for _ in 0..3 {
            t.schedule(peer, &c, now, 0.0);
            t.take_due(now + Duration::from_secs(10));
            t.note_attempt(&peer);
        }
        let before = t.connected(&peer);
        assert_eq!(before, 3);
        assert!(!t.contains(&peer), "unpinned peers leave the table while connected");
        t.restore_attempts(peer, before);
        assert_eq!(
            t.schedule(peer, &c, now, 0.0),
            Scheduled::At(now + Duration::from_millis(800))
        );
    }

    #[test]
    fn unpinned_peers_are_bounded_but_pinned_ones_always_fit() {
        let c = cfg(0, 0.0);
        let now = Instant::now();
        let mut t = RedialTable::default();
        for _ in 0..MAX_UNPINNED_REDIALS {
            assert!(matches!(t.schedule(PeerId::random(), &c, now, 0.0), Scheduled::At(_)));
        }
        assert_eq!(t.schedule(PeerId::random(), &c, now, 0.0), Scheduled::Full);
        let pinned = PeerId::random();
        t.pin(pinned);
        assert!(matches!(t.schedule(pinned, &c, now, 0.0), Scheduled::At(_)));
    }
}
