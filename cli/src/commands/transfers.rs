//! `firmactl transfers`: every transfer, or the incoming, outgoing or unfinished ones, as a table.

use clap::Args;
use firma_ipc::transfer::{TransferFilter, TransferInfo};

use crate::commands::transfer::display_text;
use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, render, table};

/// Longest first file name shown in the table.
const NAME_WIDTH: usize = 32;

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct TransfersArgs {
    /// Only transfers from other peers.
    #[arg(long)]
    pub incoming: bool,
    /// Only transfers to other peers.
    #[arg(long)]
    pub outgoing: bool,
    /// Only transfers not yet finished (pending, sending, sent, receiving).
    #[arg(long)]
    pub active: bool,
}

impl TransfersArgs {
    pub fn filter(&self) -> TransferFilter {
        if self.incoming {
            TransferFilter::Incoming
        } else if self.outgoing {
            TransferFilter::Outgoing
        } else if self.active {
            TransferFilter::Active
        } else {
            TransferFilter::All
        }
    }
}

pub async fn run(session: &Session, out: Output, args: TransfersArgs) -> Result<(), CliError> {
    let filter = args.filter();
    let list = session
        .call(|c, ctx| async move { c.transfers(ctx, filter).await })
        .await?;
    let now = format::now_ms();
    out.emit(&list, |list| render_table(list, filter, now))
}

fn render_table(list: &[TransferInfo], filter: TransferFilter, now_ms: u64) -> String {
    if list.is_empty() {
        return match filter {
            TransferFilter::All => "no transfers yet (send one with: firmactl send PEER_ID FILE...)",
            TransferFilter::Incoming => "no incoming transfers",
            TransferFilter::Outgoing => "no outgoing transfers",
            TransferFilter::Active => "no unfinished transfers (all of them: firmactl transfers)",
        }
        .to_owned();
    }
    let mut t = table([
        "TRANSFER",
        "DIR",
        "STATE",
        "PEER",
        "DOCUMENTS",
        "SIZE",
        "DONE",
        "UPDATED",
    ]);
    for x in list {
        let docs = match x.documents.split_first() {
            None => format::NONE.to_owned(),
            Some((first, [])) => display_text(&first.file_name, NAME_WIDTH),
            Some((first, rest)) => format!("{} +{}", display_text(&first.file_name, NAME_WIDTH), rest.len()),
        };
        t.add_row(vec![
            x.id.clone(),
            match x.direction {
                firma_ipc::transfer::TransferDirection::Outgoing => "out",
                firma_ipc::transfer::TransferDirection::Incoming => "in",
            }
            .to_owned(),
            format::transfer_state(x.state).to_owned(),
            format::short_id(&x.peer_id),
            docs,
            format::bytes(x.bytes_total),
            format::percent(x.bytes_done, x.bytes_total),
            format::ago(x.updated_ms, now_ms),
        ]);
    }
    render(t)
}

#[cfg(test)]
mod tests {
    use firma_ipc::transfer::TransferState;

    use super::*;
    use crate::commands::transfer::tests::transfer;

    #[test]
    fn one_row_per_transfer_with_safe_names() {
        let mut two = transfer("T2", TransferState::Delivered);
        two.direction = firma_ipc::transfer::TransferDirection::Outgoing;
        two.documents.push(two.documents[0].clone());
        let text = render_table(
            &[transfer("T1", TransferState::Receiving), two],
            TransferFilter::All,
            5_000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TRANSFER  DIR  STATE"), "{text}");
        assert!(
            lines[1].starts_with("T1        in   receiving  12D3KooW…aaaaaa  ../../x\\u{0}"),
            "{text}"
        );
        assert!(lines[2].contains("delivered") && lines[2].contains("… +1"), "{text}");
        assert!(render_table(&[], TransferFilter::Active, 0).contains("no unfinished transfers"));
    }
}
