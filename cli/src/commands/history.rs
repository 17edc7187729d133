//! `firmactl history`: past and open connections, newest first.

use clap::Args;
use firma_ipc::types::{ConnectionRecord, HistoryQuery};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, render, table};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only connections to this peer.
    #[arg(long, value_name = "ID", value_parser = crate::commands::peer_id_arg)]
    pub peer: Option<String>,
    /// At most this many records (the daemon may cap it lower).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: u32,
}

pub async fn run(session: &Session, out: Output, args: HistoryArgs) -> Result<(), CliError> {
    let query = HistoryQuery {
        peer_id: args.peer,
        limit: args.limit,
    };
    let records = session
        .call(|c, ctx| async move { c.history(ctx, query).await })
        .await?;
    let now = format::now_ms();
    out.emit(&records, |r| render_table(r, now))
}

fn render_table(records: &[ConnectionRecord], now_ms: u64) -> String {
    if records.is_empty() {
        return "no connections recorded".to_owned();
    }
    let mut t = table(["PEER", "DIRECTION", "ADDRESS", "OPENED", "LASTED", "CLOSED BECAUSE"]);
    for r in records {
        let lasted = match r.closed_ms {
            Some(closed) => format::duration_ms(closed.saturating_sub(r.opened_ms)),
            None => format!("open, {}", format::duration_ms(now_ms.saturating_sub(r.opened_ms))),
        };
        t.add_row(vec![
            format::short_id(&r.peer_id),
            format::direction(r.direction).to_owned(),
            r.addr.clone(),
            format::ago(r.opened_ms, now_ms),
            lasted,
            r.close_reason.clone().unwrap_or_else(|| format::NONE.to_owned()),
        ]);
    }
    render(t)
}

#[cfg(test)]
mod tests {
    use firma_ipc::types::Direction;

    use super::*;

    #[test]
    fn open_and_closed_connections() {
        let closed = ConnectionRecord {
            peer_id: "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa".into(),
            addr: "/ip4/127.0.0.1/tcp/1".into(),
            direction: Direction::Inbound,
            opened_ms: 10_000,
            closed_ms: Some(70_000),
            close_reason: Some("keep-alive timeout".into()),
        };
        let open = ConnectionRecord {
            closed_ms: None,
            close_reason: None,
            direction: Direction::Outbound,
            ..closed.clone()
        };
        let text = render_table(&[open, closed], 100_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("outbound") && lines[1].contains("open, 1m 30s") && lines[1].ends_with('-'),
            "{text}"
        );
        assert!(lines[2].contains("inbound") && lines[2].contains("1m  ") && lines[2].ends_with("keep-alive timeout"));
    }
}
