//! The event log: a bounded ring of seq-numbered events plus a `watch` of the newest sequence
//! number, so that any number of long polls wait without holding a lock.
//!
//! Sequence numbers start at 1 for each daemon start and grow by one per event; `instance`
//! tells clients which daemon run the numbers belong to.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use firma_ipc::event::{Event, EventBatch, EventEnvelope};
use tokio::sync::watch;

pub struct EventLog {
    /// Lock order: taken alone, never across an await; held only to push or copy out.
    ring: Mutex<VecDeque<EventEnvelope>>,
    capacity: usize,
    head: watch::Sender<u64>,
    instance: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let (head, _) = watch::channel(0);
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            head,
            instance: rand::random(),
        }
    }

    pub fn instance(&self) -> u64 {
        self.instance
    }

    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Numbers the event and makes it visible to every waiting poll.
    pub fn append(&self, event: Event, at_ms: u64) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = ring.back().map_or(self.head() + 1, |last| last.seq + 1);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(EventEnvelope { seq, at_ms, event });
        drop(ring);
        self.head.send_replace(seq);
        seq
    }

    /// What a poll with this cursor gets right now, without waiting.
    pub fn after(&self, after: u64, max: usize) -> EventBatch {
        let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let head = ring.back().map_or(0, |e| e.seq);
        let oldest = ring.front().map_or(head + 1, |e| e.seq);
        // Resync when the client missed events that left the ring, or holds a cursor from a
        // previous daemon run (newer than anything this run numbered).
        let resync = after > head || (after + 1 < oldest && after < head);
        let events = if resync {
            Vec::new()
        } else {
            let skip = (after + 1).saturating_sub(oldest) as usize;
            ring.iter().skip(skip).take(max).cloned().collect()
        };
        EventBatch {
            events,
            head,
            resync,
            instance: self.instance,
        }
    }

    /// Long poll: returns at once when events after `after` exist (or a resync is due),
    /// otherwise waits up to `wait` for the first new one.
    pub async fn poll(&self, after: u64, max: usize, wait: Duration) -> EventBatch {
        let mut rx = self.head.subscribe();
        let batch = self.after(after, max);
        if !batch.events.is_empty() || batch.resync || wait.is_zero() {
            return batch;
        }
        let _ = tokio::time::timeout(wait, rx.wait_for(|head| *head > after)).await;
        self.after(after, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firma_ipc::types::DiscoveryState;

    fn ev() -> Event {
        Event::DiscoveryChanged {
            state: DiscoveryState {
                mdns_enabled: true,
                dht_enabled: false,
            },
        }
    }

    #[test]
    fn cursor_returns_exactly_what_followed() {
        let log = EventLog::new(16);
        for _ in 0..5 {
            log.append(ev(), 0);
        }
        let b = log.after(2, 100);
        assert_eq!(b.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(!b.resync);
        assert!(log.after(5, 100).events.is_empty());
    }

    #[test]
    fn falling_out_of_the_window_asks_for_resync() {
        let log = EventLog::new(16);
        for _ in 0..40 {
            log.append(ev(), 0);
        }
        assert!(log.after(3, 100).resync);
        // The oldest retained is 25: a cursor of 24 still continues gaplessly.
        let b = log.after(24, 100);
        assert!(!b.resync);
        assert_eq!(b.events.first().map(|e| e.seq), Some(25));
        // A cursor from a previous daemon run is ahead of head.
        assert!(log.after(1000, 10).resync);
    }

    #[tokio::test]
    async fn poll_wakes_on_append() {
        let log = std::sync::Arc::new(EventLog::new(16));
        let l2 = log.clone();
        let waiter = tokio::spawn(async move { l2.poll(0, 10, Duration::from_secs(10)).await });
        // The waiter may subscribe before or after this append; both paths must return the event.
        log.append(ev(), 0);
        let b = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.events.len(), 1);
    }
}
