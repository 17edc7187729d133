//! `firmactl peers`: the connected, known or pinned peers as a table.

use clap::Args;
use firma_ipc::types::{PeerFilter, PeerInfo};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, render, table};

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct PeersArgs {
    /// Peers with an open connection (the default).
    #[arg(long)]
    pub connected: bool,
    /// Every peer the daemon has stored, connected or not.
    #[arg(long)]
    pub known: bool,
    /// Peers an operator pinned (kept connected and redialled after restarts).
    #[arg(long)]
    pub pinned: bool,
}

impl PeersArgs {
    pub fn filter(&self) -> PeerFilter {
        if self.known {
            PeerFilter::Known
        } else if self.pinned {
            PeerFilter::Pinned
        } else {
            PeerFilter::Connected
        }
    }
}

pub async fn run(session: &Session, out: Output, args: PeersArgs) -> Result<(), CliError> {
    let filter = args.filter();
    let peers = session.call(|c, ctx| async move { c.peers(ctx, filter).await }).await?;
    let now = format::now_ms();
    out.emit(&peers, |peers| render_table(peers, filter, now))
}

fn render_table(peers: &[PeerInfo], filter: PeerFilter, now_ms: u64) -> String {
    if peers.is_empty() {
        return match filter {
            PeerFilter::Connected => "no connected peers (see all stored peers with: firmactl peers --known)",
            PeerFilter::Known => "no known peers yet",
            PeerFilter::Pinned => "no pinned peers (pin one with: firmactl pin PEER_ID)",
        }
        .to_owned();
    }
    let mut t = table(["PEER", "STATE", "RTT", "AGENT", "LAST SEEN", "MARKS"]);
    for p in peers {
        t.add_row(vec![
            format::short_id(&p.peer_id),
            if p.connected { "connected" } else { "offline" }.to_owned(),
            format::rtt(p.last_rtt_us),
            p.agent.clone().unwrap_or_else(|| format::NONE.to_owned()),
            format::ago(p.last_seen_ms, now_ms),
            format::marks(p.pinned, p.banned),
        ]);
    }
    render(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use firma_ipc::types::Trust;

    use super::*;

    pub(crate) fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            peer_id: id.into(),
            connected: true,
            addrs: vec![],
            protocols: vec![],
            agent: Some("firma-transportd/0.1.0".into()),
            first_seen_ms: 1_000,
            last_seen_ms: 97_000,
            connect_count: 3,
            last_rtt_us: Some(1_250),
            trust: Trust::Known,
            pinned: true,
            banned: false,
        }
    }

    #[test]
    fn table_has_one_aligned_row_per_peer() {
        let mut offline = peer("12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb");
        offline.connected = false;
        offline.agent = None;
        offline.last_rtt_us = None;
        offline.pinned = false;
        let peers = vec![peer("12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"), offline];
        let text = render_table(&peers, PeerFilter::Known, 100_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("PEER"));
        assert!(
            lines[1].starts_with("12D3KooW…aaaaaa  connected  1.2 ms  firma-transportd/0.1.0  3s ago"),
            "{text}"
        );
        assert!(lines[1].ends_with("pinned"));
        assert!(lines[2].starts_with("12D3KooW…bbbbbb  offline    -       -"), "{text}");
        // Columns line up: MARKS starts at the same offset in every row.
        // Count characters, not bytes: the ellipsis is one column but three bytes.
        let column = |line: &str, word: &str| line.find(word).map(|at| line[..at].chars().count());
        assert_eq!(column(lines[1], "pinned"), column(lines[0], "MARKS"));
        assert_eq!(column(lines[2], "3s ago"), column(lines[0], "LAST SEEN"));
    }

    #[test]
    fn empty_lists_say_what_to_do() {
        assert!(render_table(&[], PeerFilter::Connected, 0).contains("firmactl peers --known"));
    }
}
