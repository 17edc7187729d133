//! The web tier's own counters and their Prometheus text form, appended after the daemon's.
//! Plain atomics: every handler bumps them, only `/metrics` reads them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use firma_ipc::types::{MetricKind, Metrics};

#[derive(Debug, Default)]
pub struct WebMetrics {
    pub http_requests: AtomicU64,
    pub ws_clients: AtomicU64,
    pub explorer_clients: AtomicU64,
    pub ws_messages_sent: AtomicU64,
    pub ws_lagged: AtomicU64,
    pub events_received: AtomicU64,
    pub daemon_up: AtomicU64,
    pub daemon_reconnects: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_rate_limited: AtomicU64,
}

/// Add one to a counter; relaxed is enough, nothing is ordered against these.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Decrements a gauge when dropped, so a client task that ends any way at all is counted out.
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub fn new(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn push(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Prometheus text exposition: the daemon's metrics when it answered, then ours.
pub fn render(daemon: Option<&Metrics>, web: &WebMetrics, uptime_secs: f64) -> String {
    let mut out = String::with_capacity(4096);
    if let Some(m) = daemon {
        for metric in &m.metrics {
            // Names come from the daemon; keep only characters Prometheus allows so a bad name cannot
            // break the exposition for every other metric.
            let name: String = metric
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let help = metric.help.replace(['\n', '\\'], " ");
            let kind = match metric.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            push(&mut out, &name, &help, kind, metric.value);
        }
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let rows: [(&str, &str, &str, f64); 11] = [
        ("firma_web_up", "1 while this web process serves.", "gauge", 1.0),
        (
            "firma_web_uptime_seconds",
            "Seconds since this web process started.",
            "gauge",
            uptime_secs,
        ),
        (
            "firma_web_http_requests_total",
            "HTTP requests received.",
            "counter",
            get(&web.http_requests),
        ),
        (
            "firma_web_ws_clients",
            "Open /ws clients.",
            "gauge",
            get(&web.ws_clients),
        ),
        (
            "firma_web_explorer_clients",
            "Open /explorer clients.",
            "gauge",
            get(&web.explorer_clients),
        ),
        (
            "firma_web_ws_messages_sent_total",
            "WebSocket messages sent to clients.",
            "counter",
            get(&web.ws_messages_sent),
        ),
        (
            "firma_web_ws_lagged_total",
            "Times a WebSocket client fell behind and was resynced.",
            "counter",
            get(&web.ws_lagged),
        ),
        (
            "firma_web_events_received_total",
            "Daemon events received by the one follower.",
            "counter",
            get(&web.events_received),
        ),
        (
            "firma_web_daemon_up",
            "1 while the daemon's control socket answers.",
            "gauge",
            get(&web.daemon_up),
        ),
        (
            "firma_web_daemon_reconnects_total",
            "Successful reconnects to the daemon.",
            "counter",
            get(&web.daemon_reconnects),
        ),
        (
            "firma_web_auth_failures_total",
            "Requests refused for a missing or wrong credential.",
            "counter",
            get(&web.auth_failures),
        ),
    ];
    for (name, help, kind, value) in rows {
        push(&mut out, name, help, kind, value);
    }
    push(
        &mut out,
        "firma_web_auth_rate_limited_total",
        "Authentication attempts refused by the failure rate limit.",
        "counter",
        get(&web.auth_rate_limited),
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use firma_ipc::types::Metric;

    #[test]
    fn renders_daemon_and_web_metrics() {
        let web = WebMetrics::default();
        inc(&web.http_requests);
        let daemon = Metrics {
            metrics: vec![Metric {
                name: "firma_connections_opened_total".into(),
                help: "Connections opened.".into(),
                kind: MetricKind::Counter,
                value: 3.0,
            }],
        };
        let text = render(Some(&daemon), &web, 1.5);
        assert!(text.contains("# TYPE firma_connections_opened_total counter\nfirma_connections_opened_total 3\n"));
        assert!(text.contains("firma_web_http_requests_total 1\n"));
        assert!(text.contains("firma_web_uptime_seconds 1.5\n"));
        let without = render(None, &web, 0.0);
        assert!(!without.contains("firma_connections_opened_total"));
    }

    #[test]
    fn gauge_guard_counts_out() {
        let g = AtomicU64::new(0);
        {
            let _a = GaugeGuard::new(&g);
            assert_eq!(g.load(Ordering::Relaxed), 1);
        }
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }
}
