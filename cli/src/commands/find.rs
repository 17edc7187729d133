//! `firmactl find ID`: ask the DHT for a peer's addresses.

use crate::connect::Session;
use crate::exit::CliError;
use crate::output::Output;

pub async fn run(session: &Session, out: Output, peer_id: String) -> Result<(), CliError> {
    let id = peer_id.clone();
    let addrs = session.call(|c, ctx| async move { c.find_peer(ctx, id).await }).await?;
    out.emit(&addrs, |addrs| {
        if addrs.is_empty() {
            format!("the DHT knows no addresses for {peer_id}")
        } else {
            addrs.join("\n")
        }
    })
}
