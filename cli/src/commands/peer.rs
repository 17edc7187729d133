//! `firmactl peer ID`: everything the daemon knows about one peer. Also renders the peer for the
//! commands that change one (pin, ban) so a peer always looks the same.

use firma_ipc::types::PeerInfo;

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, key_values};

pub async fn run(session: &Session, out: Output, peer_id: String) -> Result<(), CliError> {
    let info = session.call(|c, ctx| async move { c.peer(ctx, peer_id).await }).await?;
    let now = format::now_ms();
    out.emit(&info, |p| render(p, now))
}

pub fn render(p: &PeerInfo, now_ms: u64) -> String {
    let seen = |ms: u64| {
        if ms == 0 {
            "never".to_owned()
        } else {
            format!("{} ({})", format::timestamp(ms), format::ago(ms, now_ms))
        }
    };
    let addrs = if p.addrs.is_empty() {
        format::NONE.to_owned()
    } else {
        p.addrs
            .iter()
            .map(|a| match a.last_success_ms {
                Some(ms) => format!(
                    "{}  ({}, worked {})",
                    a.addr,
                    format::addr_source(a.source),
                    format::ago(ms, now_ms)
                ),
                None => format!("{}  ({})", a.addr, format::addr_source(a.source)),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let protocols = if p.protocols.is_empty() {
        format::NONE.to_owned()
    } else {
        p.protocols.join("\n")
    };
    key_values(&[
        ("peer id", p.peer_id.clone()),
        ("state", if p.connected { "connected" } else { "offline" }.to_owned()),
        ("marks", format::marks(p.pinned, p.banned)),
        ("trust", format::trust(p.trust).to_owned()),
        ("agent", p.agent.clone().unwrap_or_else(|| format::NONE.to_owned())),
        ("rtt", format::rtt(p.last_rtt_us)),
        ("first seen", seen(p.first_seen_ms)),
        ("last seen", seen(p.last_seen_ms)),
        ("connections", p.connect_count.to_string()),
        ("addresses", addrs),
        ("protocols", protocols),
    ])
}

#[cfg(test)]
mod tests {
    use firma_ipc::types::{AddrSource, PeerAddr};

    use super::*;
    use crate::commands::peers::tests::peer;

    #[test]
    fn detail_lists_addresses_with_their_source() {
        let mut p = peer("12D3KooWfull");
        p.addrs = vec![
            PeerAddr {
                addr: "/ip4/127.0.0.1/tcp/1".into(),
                source: AddrSource::Mdns,
                last_success_ms: Some(95_000),
            },
            PeerAddr {
                addr: "/ip4/127.0.0.1/tcp/2".into(),
                source: AddrSource::Manual,
                last_success_ms: None,
            },
        ];
        let text = render(&p, 100_000);
        assert!(text.contains("peer id      12D3KooWfull"), "{text}");
        assert!(
            text.contains("addresses    /ip4/127.0.0.1/tcp/1  (mdns, worked 5s ago)\n"),
            "{text}"
        );
        assert!(text.contains("             /ip4/127.0.0.1/tcp/2  (manual)"), "{text}");
        assert!(text.contains("marks        pinned"));
        assert!(text.contains("rtt          1.2 ms"));
    }
}
