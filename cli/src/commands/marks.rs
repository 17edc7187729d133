//! `firmactl pin|unpin|ban|unban ID`: the operator's marks on a peer. Pinned peers are kept
//! connected and redialled after the daemon restarts; banned peers are disconnected and refused.
//! Both marks are stored, so they survive restarts. The four commands differ only in the call.

use crate::commands::peer;
use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pin,
    Ban,
}

pub async fn run(session: &Session, out: Output, peer_id: String, mark: Mark, on: bool) -> Result<(), CliError> {
    let info = session
        .call(|c, ctx| async move {
            match mark {
                Mark::Pin => c.pin(ctx, peer_id, on).await,
                Mark::Ban => c.ban(ctx, peer_id, on).await,
            }
        })
        .await?;
    let now = format::now_ms();
    out.emit(&info, |p| {
        format!("{} {}\n\n{}", verb(mark, on), p.peer_id, peer::render(p, now))
    })
}

fn verb(mark: Mark, on: bool) -> &'static str {
    match (mark, on) {
        (Mark::Pin, true) => "pinned",
        (Mark::Pin, false) => "unpinned",
        (Mark::Ban, true) => "banned",
        (Mark::Ban, false) => "unbanned",
    }
}
