//! What a control connection may hold and for how long: its slot, its deadline for `hello`, its
//! idle timeout, and how often refusals are written down.
//!
//! Slots are counted in total and per uid. The web role may fill the total only up to
//! `max_connections - reserved_for_operators`, so whatever the web tier (or a compromised web
//! account) opens, operators still get in. Unknown accounts never reach this: they are refused on
//! their credentials first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firma_ipc::types::Role;
use tokio::time::Instant;

use crate::config::ControlConfig;

/// The open connections, by uid; one lock, held only to count.
pub struct Slots {
    counts: Mutex<Counts>,
    max_total: u32,
    reserved: u32,
    per_uid: u32,
}

#[derive(Default)]
struct Counts {
    total: u32,
    by_uid: HashMap<u32, u32>,
}

/// One taken slot; dropping it gives it back.
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    pub fn new(cfg: &ControlConfig) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            max_total: cfg.max_connections,
            reserved: cfg.reserved_for_operators.min(cfg.max_connections),
            per_uid: cfg.max_connections_per_uid,
        })
    }

    /// A slot for a connection of `uid` whose credentials allow `role`, or the reason there is
    /// none, worded for the client (it names the setting to change).
    pub fn try_take(self: &Arc<Self>, uid: u32, role: Role) -> Result<Slot, String> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.per_uid {
            return Err(format!(
                "uid {uid} already has {mine} control connections open, the most one account may have \
                 (control.max_connections_per_uid); close idle clients of this account or raise the limit"
            ));
        }
        let cap = match role {
            Role::Operator => self.max_total,
            Role::Web => self.max_total - self.reserved,
        };
        if c.total >= cap {
            return Err(match role {
                Role::Operator => format!(
                    "all {} control connections are in use (control.max_connections); close idle clients or raise the limit",
                    self.max_total
                ),
                Role::Web => format!(
                    "the web role's {cap} control connections are all in use (control.max_connections minus the {} \
                     kept for operators, control.reserved_for_operators); close idle clients of this account or raise \
                     control.max_connections",
                    self.reserved
                ),
            });
        }
        c.total += 1;
        *c.by_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_uid.remove(&self.uid);
            }
        }
    }
}

/// What a connection has done lately, for its deadlines. Updated by every request.
pub struct Activity {
    opened: Instant,
    said_hello: AtomicBool,
    in_flight: AtomicU32,
    /// Milliseconds after `opened` at which a request last started or finished.
    last_ms: AtomicU64,
}

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    NoHello,
    Idle,
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::NoHello => "it did not call `hello` within control.hello_timeout",
            Expiry::Idle => "no request for control.idle_timeout",
        })
    }
}

/// A request in flight; dropping it marks the connection active now.
pub struct Busy<'a>(&'a Activity);

impl Activity {
    pub fn new() -> Self {
        Self {
            opened: Instant::now(),
            said_hello: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn hello(&self) {
        self.said_hello.store(true, Ordering::Release);
    }

    pub fn begin(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Resolves when the connection should be closed, saying why: no `hello` within
    /// `hello_timeout`, or nothing in flight for `idle_timeout`. Never resolves otherwise.
    pub async fn expired(&self, hello_timeout: Duration, idle_timeout: Duration) -> Expiry {
        loop {
            match self.check(Instant::now(), hello_timeout, idle_timeout) {
                Ok(why) => return why,
                Err(again) => tokio::time::sleep_until(again).await,
            }
        }
    }

    /// At `now`: why the connection has expired, or when to look again.
    fn check(&self, now: Instant, hello_timeout: Duration, idle_timeout: Duration) -> Result<Expiry, Instant> {
        let hello_by = self.opened + hello_timeout;
        if now < hello_by {
            return Err(hello_by);
        }
        if !self.said_hello.load(Ordering::Acquire) {
            return Ok(Expiry::NoHello);
        }
        // While a request runs (a long poll), look again one timeout later.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Err(now + idle_timeout);
        }
        let idle_from = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        if now >= idle_from + idle_timeout {
            Ok(Expiry::Idle)
        } else {
            Err(idle_from + idle_timeout)
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets through at most `max` records per `window` and counts the rest, so that a flood of
/// connections cannot flood the log or the audit table; the next record says how many were
/// left out.
pub struct Throttle {
    max: u32,
    window: Duration,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    started: Instant,
    passed: u32,
    held_back: u64,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            state: Mutex::new(ThrottleState {
                started: Instant::now(),
                passed: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)` when this record may be written, `n` being how many were held back before it;
    /// `None` when it is held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now >= s.started + self.window {
            s.started = now;
            s.passed = 0;
        }
        if s.passed >= self.max {
            s.held_back += 1;
            return None;
        }
        s.passed += 1;
        Some(std::mem::take(&mut s.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(total: u32, per_uid: u32, reserved: u32) -> ControlConfig {
        ControlConfig {
            max_connections: total,
            max_connections_per_uid: per_uid,
            reserved_for_operators: reserved,
            ..ControlConfig::default()
        }
    }

    #[test]
    fn the_web_role_leaves_the_reserved_slots_to_operators() {
        let slots = Slots::new(&cfg(10, 10, 3));
        let web: Vec<Slot> = (0..7).map(|_| slots.try_take(500, Role::Web).unwrap()).collect();
        let e = slots.try_take(501, Role::Web).err().unwrap();
        assert!(e.contains("control.reserved_for_operators"), "{e}");
        let ops: Vec<Slot> = (0..3).map(|_| slots.try_take(0, Role::Operator).unwrap()).collect();
        let e = slots.try_take(0, Role::Operator).err().unwrap();
        assert!(e.contains("control.max_connections"), "{e}");
        drop(web);
        assert!(slots.try_take(500, Role::Web).is_ok());
        drop(ops);
    }

    #[test]
    fn one_uid_cannot_take_more_than_its_share() {
        let slots = Slots::new(&cfg(10, 2, 0));
        let a = slots.try_take(7, Role::Operator).unwrap();
        let _b = slots.try_take(7, Role::Operator).unwrap();
        let e = slots.try_take(7, Role::Operator).err().unwrap();
        assert!(
            e.contains("uid 7") && e.contains("control.max_connections_per_uid"),
            "{e}"
        );
        assert!(slots.try_take(8, Role::Operator).is_ok());
        drop(a);
        assert!(slots.try_take(7, Role::Operator).is_ok());
    }

    #[test]
    fn silence_before_hello_and_idleness_after_it_expire() {
        let (hello, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let a = Activity::new();
        let at = |secs: u64| a.opened + Duration::from_secs(secs);
        assert_eq!(a.check(at(1), hello, idle), Err(at(5)));
        assert_eq!(a.check(at(5), hello, idle), Ok(Expiry::NoHello));

        let a = Activity::new();
        let at = |secs: u64| a.opened + Duration::from_secs(secs);
        a.hello();
        let busy = a.begin();
        // A long request keeps the connection however long it runs.
        assert!(a.check(at(3600), hello, idle).is_err(), "closed while a request ran");
        drop(busy);
        // Idle from the end of that request (a few real milliseconds after `opened` here).
        assert!(matches!(a.check(at(30), hello, idle), Err(again) if again >= at(60) && again < at(61)));
        assert_eq!(a.check(at(61), hello, idle), Ok(Expiry::Idle));
    }

    #[test]
    fn the_throttle_counts_what_it_holds_back() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let t0 = t.state.lock().unwrap().started;
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(t.admit_at(at(0)), Some(0));
        assert_eq!(t.admit_at(at(1)), Some(0));
        assert_eq!(t.admit_at(at(2)), None);
        assert_eq!(t.admit_at(at(9)), None);
        assert_eq!(t.admit_at(at(11)), Some(2));
        assert_eq!(t.admit_at(at(12)), Some(0));
    }
}
