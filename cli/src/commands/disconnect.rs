//! `firmactl disconnect ID`: close every connection to a peer (it may dial back; `ban` stops that).

use serde::Serialize;

use crate::connect::Session;
use crate::exit::CliError;
use crate::output::Output;

/// The API answers `()`; scripts get the peer back so that `--json` output is never a bare `null`.
#[derive(Serialize)]
struct Disconnected {
    peer_id: String,
    disconnected: bool,
}

pub async fn run(session: &Session, out: Output, peer_id: String) -> Result<(), CliError> {
    let id = peer_id.clone();
    session
        .call(|c, ctx| async move { c.disconnect(ctx, id).await })
        .await?;
    out.emit(
        &Disconnected {
            peer_id,
            disconnected: true,
        },
        |d| format!("disconnected {}", d.peer_id),
    )
}
