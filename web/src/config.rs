//! The web tier's configuration, merged once in `main` from flags and `FIRMA_*` variables and
//! handed down; nothing deeper reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `serve` needs. Durations are already parsed; addresses already validated.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where to listen when no socket is inherited through `LISTEN_FDS`.
    pub listen: SocketAddr,
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// Holds `web.token`, login nonces and browser sessions.
    pub state_dir: PathBuf,
    /// Extra `Host` header values to accept besides loopback names with the bound port.
    pub allowed_hosts: Vec<String>,
    /// Origins besides our own whose pages may call the API and open the WebSockets (CORS with
    /// credentials for them only), already normalised; they still need a session or the token.
    pub allow_origins: Vec<String>,
    /// A connection that has not sent a whole request head within this long is closed
    /// (slowloris: many half-sent requests holding connections).
    pub header_read_timeout: Duration,
    /// Most client connections at once (WebSockets included); more wait in the kernel's accept
    /// queue until one closes.
    pub max_connections: usize,
    /// First reconnect delay after the daemon goes away; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long in-flight requests get to finish on reload or stop.
    pub drain_timeout: Duration,
    /// Idle WebSocket clients get a ping after this long; silence for twice as long closes them.
    pub ws_ping_interval: Duration,
    /// Events buffered per WebSocket client before it is told it lagged and is resynced.
    pub ws_queue: usize,
    /// Most WebSocket clients (both sockets together); more are answered 503.
    pub max_ws_clients: usize,
    /// SO_SNDBUF of each client connection, bounding the kernel memory a stalled client pins
    /// (0 leaves the kernel's autotuning, which grows to several MiB per connection).
    pub tcp_send_buffer: usize,
    /// This start is our own re-execution for a reload (not a first start, whether or not a
    /// supervisor handed us the socket): no new login link is logged then.
    pub reexecuted: bool,
}

impl WebConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";
}

/// Largest request body and WebSocket message accepted. Nothing this API takes comes close.
pub const MAX_BODY: usize = 1024 * 1024;

/// Refuse a non-loopback bind unless the operator asked for it by name.
pub fn check_listen(addr: &SocketAddr, allow_non_loopback: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_non_loopback {
        return Ok(());
    }
    Err(format!(
        "--listen {addr} is not a loopback address; the web tier has no TLS of its own.\n  Bind 127.0.0.1 and put a \
         TLS proxy in front, or pass --allow-non-loopback (and --allowed-host NAME for the proxy's host name)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_explicit_flag() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_listen(&lo, false).is_ok());
        assert!(check_listen(&"[::1]:1".parse().unwrap(), false).is_ok());
        let err = check_listen(&any, false).unwrap_err();
        assert!(err.contains("--allow-non-loopback"), "{err}");
        assert!(check_listen(&any, true).is_ok());
    }
}
