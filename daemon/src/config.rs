//! The daemon's configuration: defaults, then the TOML file, then `FIRMA_*` variables, then
//! flags, merged once in `main`. Each component receives its own section and nothing deeper
//! reads the environment.
//!
//! Nested keys come from the environment with `__` between levels, e.g.
//! `FIRMA_NETWORK__RETRY__MAX_ATTEMPTS=20`. Durations are written as `500ms`, `30s`, `5m`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the daemon needs to run. Unknown keys are errors, so a typo is never ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity key, LMDB store and lock file live here (created 0700).
    pub state_dir: PathBuf,
    /// The control socket; its directory is created 0750.
    pub socket: PathBuf,
    /// Account to drop to when started as root.
    pub user: String,
    /// Keep running as root (not recommended: only for containers that already confine the process).
    pub allow_root: bool,
    /// Development mode: a taken P2P port is replaced by a free one instead of failing.
    pub dev: bool,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub store: StoreConfig,
    pub control: ControlConfig,
    pub events: EventsConfig,
    pub transfer: TransferConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: firma_ipc::paths::default_state_dir(),
            socket: firma_ipc::paths::default_socket(),
            user: "firma".to_owned(),
            allow_root: false,
            dev: false,
            log: LogConfig::default(),
            network: NetworkConfig::default(),
            store: StoreConfig::default(),
            control: ControlConfig::default(),
            events: EventsConfig::default(),
            transfer: TransferConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald under systemd (JOURNAL_STREAM set), readable text on stderr otherwise.
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `firma_daemon=debug,libp2p=info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on. Default: TCP and QUIC on port 9092, all IPv4 interfaces.
    pub listen: Vec<String>,
    pub mdns: bool,
    pub dht: bool,
    /// Kademlia bootstrap peers, each `/ip4/.../tcp/.../p2p/<id>`. Empty by default: a signing
    /// network is private unless its operator says otherwise. The public libp2p bootstrap nodes
    /// are an opt-in (see README).
    pub bootstrap: Vec<String>,
    pub limits: LimitsConfig,
    pub retry: RetryConfig,
    /// Close a connection with no open stream after this long. Long, because the point of this
    /// daemon is to keep peers connected.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often a peer's RTT may be reported as an event (changes below 10 % are not reported).
    #[serde(with = "humantime_serde")]
    pub rtt_event_interval: Duration,
    /// How often ping measures each connection.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/9092".to_owned(),
                "/ip4/0.0.0.0/udp/9092/quic-v1".to_owned(),
            ],
            mdns: true,
            dht: true,
            bootstrap: Vec::new(),
            limits: LimitsConfig::default(),
            retry: RetryConfig::default(),
            idle_timeout: Duration::from_secs(3600),
            rtt_event_interval: Duration::from_secs(5),
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// Connection limits; every one is set. Inbound stays below the total so that outbound slots
/// always remain (eclipse resistance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_pending_incoming: u32,
    pub max_pending_outgoing: u32,
    pub max_established_incoming: u32,
    pub max_established_outgoing: u32,
    pub max_established_total: u32,
    pub max_established_per_peer: u32,
    /// Refuse new connections once the process uses this many MiB.
    pub max_memory_mib: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            max_established_incoming: 192,
            max_established_outgoing: 128,
            max_established_total: 256,
            max_established_per_peer: 2,
            max_memory_mib: 1024,
        }
    }
}

/// How a lost or remembered peer is redialled: exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Each delay is the previous one times this (>= 1.0).
    pub multiplier: f64,
    /// Fraction (0.0 to 1.0) of each delay that is randomised, so peers don't redial in lockstep.
    pub jitter: f64,
    /// Give up on a peer after this many failed attempts in a row (0 = never give up).
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// LMDB map size. Sparse on Linux, so generous costs nothing; grown automatically when full.
    pub map_size_mib: u64,
    /// Connection-history records kept; the oldest are pruned past this.
    pub history_retention: u32,
    /// Audit-log records kept.
    pub audit_retention: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            map_size_mib: 1024,
            history_retention: 10_000,
            audit_retention: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Members of this group (and root, and the daemon's own uid) are operators.
    pub group: String,
    /// Accounts that only get the web tier's narrower role even if they are in `group`.
    pub web_users: Vec<String>,
    /// Open control connections, all accounts together.
    pub max_connections: u32,
    pub max_connections_per_uid: u32,
    /// Slots of `max_connections` that only operators may take: the web role never holds more
    /// than the rest, so a busy or compromised web tier cannot lock operators out.
    pub reserved_for_operators: u32,
    /// A connection that has not called `hello` this long after it opened is closed.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// A connection with no request in flight for this long is closed (clients reconnect).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Requests one connection may have in flight at once.
    pub max_in_flight: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            group: "firma".to_owned(),
            web_users: vec!["firma-web".to_owned()],
            max_connections: 128,
            max_connections_per_uid: 64,
            reserved_for_operators: 16,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_in_flight: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events kept for clients that reconnect with an older sequence number.
    pub retained: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { retained: 4096 }
    }
}

/// What happens to a transfer from a peer that is neither pinned nor known from an earlier
/// transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxPolicy {
    Accept,
    /// Kept `pending` until an operator accepts or rejects it; the sender waits or retries.
    Ask,
    Reject,
}

/// Document transfers (transfer/): inbox policy, size limits and the knobs of the data path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Transfers from unknown peers: `accept`, `ask` or `reject`.
    pub unknown_peers: InboxPolicy,
    /// Largest transfer (all documents together), sent or received.
    pub max_transfer_bytes: u64,
    /// Largest single document.
    pub max_document_bytes: u64,
    /// Largest legacy v1 message (JSON with base64 documents): v1 has to be held in memory whole.
    pub v1_max_bytes: u64,
    /// Transfers moving at once in each direction; the rest wait their turn.
    pub concurrency: u32,
    /// Bytes per chunk of new transfers (16 KiB to 1 MiB); each is verified on arrival, and a
    /// resume loses at most the chunks in flight.
    pub chunk_size: u32,
    /// Streams one transfer spreads its chunks over; more streams, more throughput on fast links.
    pub parallel_streams: u32,
    /// Incoming transfers from unknown peers waiting for a decision (inbox `ask`), all peers
    /// together; past it further offers are told to come back later.
    pub pending_max_transfers: u32,
    /// Bytes those waiting transfers may hold here (manifests, and the documents of legacy v1
    /// transfers, which arrive whole), all peers together.
    pub pending_max_bytes: u64,
    /// The same two limits for any one peer, so one peer cannot take every place.
    pub pending_max_transfers_per_peer: u32,
    pub pending_max_bytes_per_peer: u64,
    /// A transfer still waiting for a decision after this long is rejected and its documents
    /// deleted.
    #[serde(with = "humantime_serde")]
    pub pending_expiry: Duration,
    /// An upload over the control socket that receives nothing for this long is removed.
    #[serde(with = "humantime_serde")]
    pub upload_idle_timeout: Duration,
    /// Bytes of open uploads (as announced) and staged documents not yet in a transfer, together;
    /// past it a new upload is refused.
    pub max_staged_bytes: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            unknown_peers: InboxPolicy::Ask,
            max_transfer_bytes: 16 << 30,
            max_document_bytes: 8 << 30,
            v1_max_bytes: 64 << 20,
            concurrency: 4,
            chunk_size: 1 << 20,
            parallel_streams: 4,
            pending_max_transfers: 64,
            pending_max_bytes: 256 << 20,
            pending_max_transfers_per_peer: 8,
            pending_max_bytes_per_peer: 64 << 20,
            pending_expiry: Duration::from_secs(7 * 24 * 3600),
            upload_idle_timeout: Duration::from_secs(15 * 60),
            max_staged_bytes: 32 << 30,
        }
    }
}

/// A configuration value that is wrong: names the key, says what is wrong and what would be right.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

impl Config {
    /// Checks every value that serde's types cannot express. Called after every merge and reload.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use libp2p::Multiaddr;
        for (i, a) in self.network.listen.iter().enumerate() {
            a.parse::<Multiaddr>().map_err(|e| {
                bad(
                    &format!("network.listen[{i}]"),
                    format!("`{a}` is not a multiaddr ({e})"),
                )
            })?;
        }
        for (i, a) in self.network.bootstrap.iter().enumerate() {
            let addr: Multiaddr = a.parse().map_err(|e| {
                bad(
                    &format!("network.bootstrap[{i}]"),
                    format!("`{a}` is not a multiaddr ({e})"),
                )
            })?;
            if !addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_))) {
                return Err(bad(
                    &format!("network.bootstrap[{i}]"),
                    format!("`{a}` needs a /p2p/<peer id> suffix"),
                ));
            }
        }
        let r = &self.network.retry;
        if r.initial_delay.is_zero() {
            return Err(bad(
                "network.retry.initial_delay",
                "must be more than 0 (e.g. \"100ms\")",
            ));
        }
        if r.max_delay < r.initial_delay {
            return Err(bad(
                "network.retry.max_delay",
                "must be at least network.retry.initial_delay",
            ));
        }
        if !(r.multiplier >= 1.0 && r.multiplier <= 100.0) {
            return Err(bad(
                "network.retry.multiplier",
                format!("{} is out of range; use 1.0 to 100.0", r.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(bad(
                "network.retry.jitter",
                format!("{} is out of range; use 0.0 to 1.0", r.jitter),
            ));
        }
        let l = &self.network.limits;
        for (key, v) in [
            ("max_pending_incoming", l.max_pending_incoming),
            ("max_pending_outgoing", l.max_pending_outgoing),
            ("max_established_incoming", l.max_established_incoming),
            ("max_established_outgoing", l.max_established_outgoing),
            ("max_established_total", l.max_established_total),
            ("max_established_per_peer", l.max_established_per_peer),
        ] {
            if v == 0 {
                return Err(bad(&format!("network.limits.{key}"), "must be at least 1"));
            }
        }
        if l.max_established_incoming >= l.max_established_total {
            return Err(bad(
                "network.limits.max_established_incoming",
                "must be below network.limits.max_established_total so that outbound slots remain",
            ));
        }
        if l.max_memory_mib < 64 {
            return Err(bad("network.limits.max_memory_mib", "must be at least 64"));
        }
        if self.store.map_size_mib < 16 {
            return Err(bad("store.map_size_mib", "must be at least 16"));
        }
        if self.store.history_retention == 0 {
            return Err(bad("store.history_retention", "must be at least 1"));
        }
        if self.store.audit_retention == 0 {
            return Err(bad(
                "store.audit_retention",
                "must be at least 1 (the audit log is not optional)",
            ));
        }
        if self.events.retained < 16 {
            return Err(bad("events.retained", "must be at least 16"));
        }
        let c = &self.control;
        if c.max_connections == 0 || c.max_in_flight == 0 || c.max_connections_per_uid == 0 {
            return Err(bad("control.max_connections", "control limits must be at least 1"));
        }
        if c.reserved_for_operators >= c.max_connections {
            return Err(bad(
                "control.reserved_for_operators",
                "must be below control.max_connections (the rest is what the web role may use)",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&c.hello_timeout) {
            return Err(bad("control.hello_timeout", "use 100ms to 5m"));
        }
        if c.idle_timeout < Duration::from_secs(1) || c.idle_timeout < c.hello_timeout {
            return Err(bad(
                "control.idle_timeout",
                "must be at least 1s and at least control.hello_timeout",
            ));
        }
        let t = &self.transfer;
        if t.max_document_bytes == 0 {
            return Err(bad("transfer.max_document_bytes", "must be at least 1"));
        }
        if t.max_transfer_bytes < t.max_document_bytes {
            return Err(bad(
                "transfer.max_transfer_bytes",
                "must be at least transfer.max_document_bytes",
            ));
        }
        if !(1 << 10..=1 << 30).contains(&t.v1_max_bytes) {
            return Err(bad("transfer.v1_max_bytes", "use 1 KiB to 1 GiB (1024 to 1073741824)"));
        }
        if !(1..=64).contains(&t.concurrency) {
            return Err(bad("transfer.concurrency", "use 1 to 64"));
        }
        if !(16 << 10..=1 << 20).contains(&t.chunk_size) {
            return Err(bad(
                "transfer.chunk_size",
                "use 16384 to 1048576 bytes (16 KiB to 1 MiB)",
            ));
        }
        if !(1..=16).contains(&t.parallel_streams) {
            return Err(bad("transfer.parallel_streams", "use 1 to 16"));
        }
        if !(1..=100_000).contains(&t.pending_max_transfers) {
            return Err(bad("transfer.pending_max_transfers", "use 1 to 100000"));
        }
        if !(1..=t.pending_max_transfers).contains(&t.pending_max_transfers_per_peer) {
            return Err(bad(
                "transfer.pending_max_transfers_per_peer",
                "use 1 to transfer.pending_max_transfers",
            ));
        }
        if t.pending_max_bytes_per_peer < 64 << 10 {
            return Err(bad(
                "transfer.pending_max_bytes_per_peer",
                "use at least 65536 (a manifest must fit)",
            ));
        }
        if t.pending_max_bytes < t.pending_max_bytes_per_peer {
            return Err(bad(
                "transfer.pending_max_bytes",
                "must be at least transfer.pending_max_bytes_per_peer",
            ));
        }
        if t.pending_expiry < Duration::from_secs(1) {
            return Err(bad("transfer.pending_expiry", "use at least 1s (e.g. \"7d\")"));
        }
        if t.upload_idle_timeout < Duration::from_secs(1) {
            return Err(bad("transfer.upload_idle_timeout", "use at least 1s (e.g. \"15m\")"));
        }
        if t.max_staged_bytes < t.max_document_bytes {
            return Err(bad(
                "transfer.max_staged_bytes",
                "must be at least transfer.max_document_bytes (one document must fit)",
            ));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(bad(
                "socket",
                "must be a filesystem path (abstract sockets are refused)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn bad_jitter_names_its_key() {
        let mut c = Config::default();
        c.network.retry.jitter = 3.0;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "network.retry.jitter");
    }

    #[test]
    fn transfer_chunk_size_over_one_mib_names_its_key() {
        let mut c = Config::default();
        c.transfer.chunk_size = 2 << 20;
        assert_eq!(c.validate().unwrap_err().key, "transfer.chunk_size");
        c.transfer.chunk_size = 1 << 20;
        c.transfer.parallel_streams = 0;
        assert_eq!(c.validate().unwrap_err().key, "transfer.parallel_streams");
    }

    #[test]
    fn bootstrap_without_peer_id_is_refused() {
        let mut c = Config::default();
        c.network.bootstrap = vec!["/ip4/127.0.0.1/tcp/1".into()];
        assert_eq!(c.validate().unwrap_err().key, "network.bootstrap[0]");
    }
}
