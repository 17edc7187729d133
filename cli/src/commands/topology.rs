//! `firmactl topology`: the daemon's view of the network, drawn as a tree per node with links
//! (this node first), each link with its RTT, then the known peers without a link.

use std::collections::HashSet;

use firma_ipc::types::{Topology, TopologyNode};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

pub async fn run(session: &Session, out: Output) -> Result<(), CliError> {
    let topology = session.call(|c, ctx| async move { c.topology(ctx).await }).await?;
    out.emit(&topology, render)
}

fn node_label(node: Option<&TopologyNode>) -> String {
    let Some(node) = node else {
        return "(unknown node)".to_owned();
    };
    let state = if node.local {
        "this node"
    } else if node.connected {
        "connected"
    } else {
        "offline"
    };
    match &node.agent {
        Some(agent) if !node.local => format!("{state}, {agent}"),
        _ => state.to_owned(),
    }
}

fn render(t: &Topology) -> String {
    let find = |id: &str| t.nodes.iter().find(|n| n.peer_id == id);
    // Sources of links in a stable order: the local node, then as the daemon listed the nodes,
    // then any source the node list forgot.
    let mut sources: Vec<&str> = Vec::new();
    let local_first = t
        .nodes
        .iter()
        .filter(|n| n.local)
        .chain(t.nodes.iter().filter(|n| !n.local));
    for id in local_first
        .map(|n| n.peer_id.as_str())
        .chain(t.edges.iter().map(|e| e.from.as_str()))
    {
        if !sources.contains(&id) && t.edges.iter().any(|e| e.from == id) {
            sources.push(id);
        }
    }
    let linked: HashSet<&str> = t.edges.iter().flat_map(|e| [e.from.as_str(), e.to.as_str()]).collect();

    let mut lines = vec![format!("{} nodes, {} links", t.nodes.len(), t.edges.len())];
    for from in sources {
        lines.push(String::new());
        lines.push(format!("{}  ({})", format::short_id(from), node_label(find(from))));
        let edges: Vec<_> = t.edges.iter().filter(|e| e.from == from).collect();
        let rtt_width = edges
            .iter()
            .map(|e| format::rtt(e.rtt_us).chars().count())
            .max()
            .unwrap_or(0);
        for (i, edge) in edges.iter().enumerate() {
            let branch = if i + 1 == edges.len() { "└─" } else { "├─" };
            let rtt = format::rtt(edge.rtt_us);
            lines.push(format!(
                "{branch} {}  {rtt:>rtt_width$}  {}",
                format::short_id(&edge.to),
                node_label(find(&edge.to))
            ));
        }
    }
    let unlinked: Vec<&TopologyNode> = t
        .nodes
        .iter()
        .filter(|n| !linked.contains(n.peer_id.as_str()))
        .collect();
    if !unlinked.is_empty() {
        lines.push(String::new());
        lines.push(format!("without a link ({}):", unlinked.len()));
        for node in unlinked {
            lines.push(format!(
                "   {}  ({})",
                format::short_id(&node.peer_id),
                node_label(Some(node))
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use firma_ipc::types::TopologyEdge;

    use super::*;

    fn node(id: &str, local: bool, connected: bool) -> TopologyNode {
        TopologyNode {
            peer_id: id.into(),
            local,
            connected,
            agent: (!local).then(|| "js-libp2p/1.0".into()),
        }
    }

    #[test]
    fn draws_links_from_this_node_then_the_rest() {
        let t = Topology {
            nodes: vec![
                node("peer-b", false, true),
                node("self", true, true),
                node("peer-c", false, true),
                node("peer-d", false, false),
            ],
            edges: vec![
                TopologyEdge {
                    from: "self".into(),
                    to: "peer-b".into(),
                    rtt_us: Some(1_500),
                },
                TopologyEdge {
                    from: "self".into(),
                    to: "peer-c".into(),
                    rtt_us: Some(12_000),
                },
                TopologyEdge {
                    from: "self".into(),
                    to: "peer-x".into(),
                    rtt_us: None,
                },
            ],
        };
        let text = render(&t);
        let expected = "\
4 nodes, 3 links

self  (this node)
├─ peer-b   1.5 ms  connected, js-libp2p/1.0
├─ peer-c  12.0 ms  connected, js-libp2p/1.0
└─ peer-x        -  (unknown node)

without a link (1):
   peer-d  (offline, js-libp2p/1.0)";
        assert_eq!(text, expected);
    }

    #[test]
    fn lonely_node() {
        let t = Topology {
            nodes: vec![node("self", true, true)],
            edges: vec![],
        };
        assert_eq!(
            render(&t),
            "1 nodes, 0 links\n\nwithout a link (1):\n   self  (this node)"
        );
    }
}
