//! `firmactl connect TARGET`: dial a multiaddr or a known peer id.

use firma_ipc::types::ConnectOutcome;

use crate::connect::Session;
use crate::exit::CliError;
use crate::output::Output;

pub async fn run(session: &Session, out: Output, target: String) -> Result<(), CliError> {
    let outcome = session
        .call(|c, ctx| async move { c.connect(ctx, target).await })
        .await?;
    out.emit(&outcome, render)
}

fn render(o: &ConnectOutcome) -> String {
    if o.already_connected {
        format!("already connected to {} via {}", o.peer_id, o.addr)
    } else {
        format!("connected to {} via {}", o.peer_id, o.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_whether_anything_was_dialled() {
        let mut o = ConnectOutcome {
            peer_id: "12D3".into(),
            addr: "/ip4/127.0.0.1/tcp/1".into(),
            already_connected: false,
        };
        assert_eq!(render(&o), "connected to 12D3 via /ip4/127.0.0.1/tcp/1");
        o.already_connected = true;
        assert!(render(&o).starts_with("already connected"));
    }
}
