//! `firmactl accept|reject|cancel ID`: an operator's decision on a transfer. Accept and reject
//! answer an incoming transfer waiting under the `ask` inbox policy; cancel stops an outgoing (or
//! incoming) transfer that has not finished. Each prints the transfer as it is afterwards.

use crate::commands::transfer::render_transfer;
use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject { reason: String },
    Cancel,
}

pub async fn run(session: &Session, out: Output, id: String, decision: Decision) -> Result<(), CliError> {
    let verb = match decision {
        Decision::Accept => "accepted",
        Decision::Reject { .. } => "rejected",
        Decision::Cancel => "cancelled",
    };
    let info = session
        .call(|c, ctx| async move {
            match decision {
                Decision::Accept => c.accept_transfer(ctx, id).await,
                Decision::Reject { reason } => c.reject_transfer(ctx, id, reason).await,
                Decision::Cancel => c.cancel_transfer(ctx, id).await,
            }
        })
        .await?;
    let now = format::now_ms();
    out.emit(&info, |t| {
        format!("{verb} transfer {}\n\n{}", t.id, render_transfer(t, now))
    })
}
