//! `firmactl status`: who the daemon is, where it listens, and how healthy it is.

use firma_ipc::types::{Status, StoreHealth};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, key_values};

pub async fn run(session: &Session, out: Output) -> Result<(), CliError> {
    let status = session.call(|c, ctx| async move { c.status(ctx).await }).await?;
    out.emit(&status, render)
}

fn render(s: &Status) -> String {
    let listening = if s.listen_addrs.is_empty() {
        "nowhere yet".to_owned()
    } else {
        s.listen_addrs.join("\n")
    };
    let store = match s.store.health {
        StoreHealth::Healthy => "healthy".to_owned(),
        StoreHealth::Unhealthy => "UNHEALTHY (writes refused)".to_owned(),
    };
    let mut store = format!(
        "{store}, {} of {} used",
        format::bytes(s.store.used_bytes),
        format::bytes(s.store.map_size_bytes)
    );
    if let Some(free) = s.store.disk_free_bytes {
        store.push_str(&format!(", {} free on disk", format::bytes(free)));
    }
    if let Some(detail) = &s.store.detail {
        store.push('\n');
        store.push_str(detail);
    }
    key_values(&[
        ("peer id", s.peer_id.clone()),
        ("version", format!("{} (control API {})", s.version, s.api_version)),
        ("uptime", format::duration_ms(s.uptime_ms)),
        ("listening", listening),
        (
            "peers",
            format!(
                "{} connected, {} known, {} pinned",
                s.connected_peers, s.known_peers, s.pinned_peers
            ),
        ),
        ("discovery", format::discovery(&s.discovery)),
        ("store", store),
        ("event head", s.event_head.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use firma_ipc::types::{DiscoveryState, StoreStatus};

    use super::*;

    #[test]
    fn renders_every_section() {
        let status = Status {
            peer_id: "12D3KooWpeer".into(),
            version: "0.1.0".into(),
            api_version: 1,
            uptime_ms: 61_000,
            listen_addrs: vec![
                "/ip4/127.0.0.1/tcp/9092".into(),
                "/ip4/127.0.0.1/udp/9092/quic-v1".into(),
            ],
            connected_peers: 2,
            known_peers: 5,
            pinned_peers: 1,
            discovery: DiscoveryState {
                mdns_enabled: false,
                dht_enabled: true,
            },
            store: StoreStatus {
                health: StoreHealth::Unhealthy,
                detail: Some("peers table failed validation; run firma-transportd --repair".into()),
                map_size_bytes: 1 << 30,
                used_bytes: 3 << 20,
                disk_free_bytes: Some(5 << 30),
            },
            event_head: 42,
        };
        let text = render(&status);
        assert!(text.contains("peer id     12D3KooWpeer"), "{text}");
        assert!(text.contains("listening   /ip4/127.0.0.1/tcp/9092\n            /ip4/127.0.0.1/udp/9092/quic-v1"));
        assert!(text.contains("uptime      1m 1s"));
        assert!(text.contains("2 connected, 5 known, 1 pinned"));
        assert!(text.contains("mdns off, dht on"));
        assert!(text.contains(
            "UNHEALTHY (writes refused), 3.0 MiB of 1.0 GiB used, 5.0 GiB free on disk\n            peers table failed"
        ));
        assert!(text.ends_with("event head  42"));
    }
}
