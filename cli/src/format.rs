//! Pure text helpers for the human output of every command: shortened peer ids, "3s ago", RTTs
//! in milliseconds, timestamps, sizes and the names of the API's enums. No I/O and no clock reads
//! except [`now_ms`], so everything else is unit-tested with fixed inputs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firma_ipc::transfer::{TransferDirection, TransferState};
use firma_ipc::types::{AddrSource, Direction, DiscoveryState, Trust};

/// Shown where a value is absent (no RTT measured yet, no agent reported).
pub const NONE: &str = "-";

/// A peer id cut to its head and tail. Ids are ~52 characters; the head shows the key type
/// (`12D3KooW` is ed25519) and the tail is what a person compares by eye.
pub fn short_id(id: &str) -> String {
    const HEAD: usize = 8;
    const TAIL: usize = 6;
    let count = id.chars().count();
    if count <= HEAD + TAIL + 1 {
        return id.to_owned();
    }
    let head: String = id.chars().take(HEAD).collect();
    let tail: String = id.chars().skip(count - TAIL).collect();
    format!("{head}…{tail}")
}

/// Milliseconds since the Unix epoch, the unit every API time is in.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How long before `now_ms` the moment `then_ms` was, coarsely: "just now", "3s ago", "5m ago",
/// "2h ago", "4d ago". A zero time means the daemon never saw it.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".to_owned();
    }
    // The daemon runs on this machine, so a time ahead of ours is a clock step: say so plainly.
    if then_ms > now_ms.saturating_add(1_000) {
        return "in the future".to_owned();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1_000;
    match secs {
        0 => "just now".to_owned(),
        1..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A round-trip time given in microseconds, shown in milliseconds.
pub fn rtt(rtt_us: Option<u64>) -> String {
    match rtt_us {
        Some(us) => format!("{:.1} ms", us as f64 / 1_000.0),
        None => NONE.to_owned(),
    }
}

/// An API time as an RFC 3339 UTC timestamp with seconds, e.g. `2026-11-27T00:51:39Z`.
pub fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Like [`timestamp`] with milliseconds, for event lines where order within a second matters.
pub fn timestamp_millis(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A duration in milliseconds as "1h 2m 3s", rounded down to whole seconds.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    humantime::format_duration(Duration::from_secs(ms / 1_000)).to_string()
}

/// A byte count in binary units, e.g. "12.5 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A metric value: whole numbers without a fraction (counters), others to three decimals.
pub fn metric_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub fn discovery(state: &DiscoveryState) -> String {
    format!("mdns {}, dht {}", on_off(state.mdns_enabled), on_off(state.dht_enabled))
}

pub fn addr_source(source: AddrSource) -> &'static str {
    match source {
        AddrSource::Mdns => "mdns",
        AddrSource::Dht => "dht",
        AddrSource::Identify => "identify",
        AddrSource::Manual => "manual",
        AddrSource::Connection => "connection",
    }
}

pub fn direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

pub fn trust(trust: Trust) -> &'static str {
    match trust {
        Trust::Unknown => "unknown",
        Trust::Known => "known",
        Trust::Trusted => "trusted",
    }
}

/// `done` of `total` as a whole percentage; an empty total counts as complete.
pub fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "100%".to_owned();
    }
    format!("{}%", u128::from(done.min(total)) * 100 / u128::from(total))
}

pub fn transfer_direction(direction: TransferDirection) -> &'static str {
    match direction {
        TransferDirection::Outgoing => "outgoing",
        TransferDirection::Incoming => "incoming",
    }
}

pub fn transfer_state(state: TransferState) -> &'static str {
    match state {
        TransferState::Pending => "pending",
        TransferState::Sending => "sending",
        TransferState::Sent => "sent",
        TransferState::Delivered => "delivered",
        TransferState::Failed => "failed",
        TransferState::Cancelled => "cancelled",
        TransferState::Receiving => "receiving",
        TransferState::Received => "received",
        TransferState::Rejected => "rejected",
    }
}

/// The operator's marks on a peer, e.g. "pinned banned", or [`NONE`].
pub fn marks(pinned: bool, banned: bool) -> String {
    match (pinned, banned) {
        (true, true) => "pinned banned".to_owned(),
        (true, false) => "pinned".to_owned(),
        (false, true) => "banned".to_owned(),
        (false, false) => NONE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    #[test]
    fn short_id_keeps_head_and_tail() {
        assert_eq!(short_id(ID), "12D3KooW…CVe2Xo");
        assert_eq!(short_id("short"), "short");
        // Exactly at the limit nothing is gained by cutting.
        assert_eq!(short_id("123456789012345"), "123456789012345");
    }

    #[test]
    fn ago_picks_a_coarse_unit() {
        let now = 1_000_000_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - 3_000, now), "3s ago");
        assert_eq!(ago(now - 59_999, now), "59s ago");
        assert_eq!(ago(now - 60_000, now), "1m ago");
        assert_eq!(ago(now - 2 * 3_600_000, now), "2h ago");
        assert_eq!(ago(now - 4 * 86_400_000, now), "4d ago");
        assert_eq!(ago(0, now), "never");
        assert_eq!(ago(now + 5_000, now), "in the future");
        // Sub-second skew is noise, not the future.
        assert_eq!(ago(now + 500, now), "just now");
    }

    #[test]
    fn rtt_is_in_milliseconds() {
        assert_eq!(rtt(Some(12_345)), "12.3 ms");
        assert_eq!(rtt(Some(800)), "0.8 ms");
        assert_eq!(rtt(None), "-");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp_millis(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(duration_ms(3_723_000), "1h 2m 3s");
        assert_eq!(duration_ms(250), "250ms");
    }

    #[test]
    fn sizes_and_values() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(metric_value(42.0), "42");
        assert_eq!(metric_value(0.25), "0.25");
        assert_eq!(metric_value(4.897400033), "4.897");
        assert_eq!(metric_value(2.0004), "2");
        assert_eq!(metric_value(f64::NAN), "NaN");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(0, 0), "100%");
    }

    #[test]
    fn marks_and_names() {
        assert_eq!(marks(true, true), "pinned banned");
        assert_eq!(marks(false, false), "-");
        assert_eq!(
            discovery(&DiscoveryState {
                mdns_enabled: true,
                dht_enabled: false
            }),
            "mdns on, dht off"
        );
    }
}
