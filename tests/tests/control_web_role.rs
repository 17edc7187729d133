//! What the web role may dial, through the control socket as the web-role account (`nobody`
//! listed in `control.web_users`, with `firmactl` run as that uid): peers and addresses the
//! daemon already knows, nothing else; operators keep full `connect`.

use anyhow::{Context, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::types::PeerFilter;
use firma_tests::cli::{CliOutput, run_cli_as};
use firma_tests::harness::{CONNECT_TIMEOUT, flatten};
use firma_tests::{Daemon, DaemonOpts, wait_for};

const NOBODY: u32 = 65534;

async fn connect_as_web(d: &Daemon, target: &str) -> anyhow::Result<CliOutput> {
    let socket = d.socket().to_string_lossy().into_owned();
    run_cli_as(NOBODY, NOBODY, &["--socket", &socket, "--json", "connect", target]).await
}

/// The web role is refused `target`, with a coded answer that says what it may dial.
async fn refused(d: &Daemon, target: &str) -> anyhow::Result<()> {
    let out = connect_as_web(d, target).await?;
    ensure!(
        out.code == 1,
        "the web role's connect to {target} exited {}: {out:?}",
        out.code
    );
    let json = out.json()?;
    ensure!(json["error"]["code"] == "denied", "{target}: {json}");
    let msg = json["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        msg.contains("already knows") && msg.contains("firmactl connect"),
        "{target}: the refusal does not say what the web role may dial: {msg}"
    );
    Ok(())
}

/// Disconnect `peer` from `d` as an operator and wait until it is gone.
async fn disconnect(d: &Daemon, peer: &str) -> anyhow::Result<()> {
    let c = d.client().await?;
    flatten(c.client.disconnect(ctx(CALL_TIMEOUT), peer.to_owned()).await)?;
    wait_for(CONNECT_TIMEOUT, "the peer to be disconnected", || async {
        !d.is_connected_to(peer).await
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_role_dials_only_known_peers_and_addresses() -> anyhow::Result<()> {
    let (a, b, c) = tokio::try_join!(
        Daemon::spawn(DaemonOpts {
            world_traversable: true,
            config: Some("[control]\nweb_users = [\"nobody\"]\n".to_owned()),
            ..DaemonOpts::named("web-dial-a")
        }),
        Daemon::spawn(DaemonOpts::named("web-dial-b")),
        Daemon::spawn(DaemonOpts::named("web-dial-c")),
    )?;
    a.open_socket_to_all()?;
    let b_addr = b.tcp_addr().await?;
    let c_addr = c.tcp_addr().await?;
    let b_plain = b_addr.split("/p2p/").next().context("no address part")?.to_owned();

    // Nothing is known yet: neither an address nor a peer id may be dialled by the web role.
    refused(&a, &b_addr).await?;
    refused(&a, &b_plain).await?;
    refused(&a, b.peer_id()).await?;
    ensure!(!a.is_connected_to(b.peer_id()).await, "a refused dial connected anyway");

    // An operator introduces b; from then on the web role may dial it by id and by its address.
    a.connect_to(&b).await?;
    disconnect(&a, b.peer_id()).await?;
    let out = connect_as_web(&a, b.peer_id()).await?.ok()?;
    ensure!(out.json()?["peer_id"] == b.peer_id(), "connect printed {}", out.stdout);
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;
    disconnect(&a, b.peer_id()).await?;
    connect_as_web(&a, &b_addr).await?.ok()?;
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;
    disconnect(&a, b.peer_id()).await?;
    connect_as_web(&a, &b_plain).await?.ok()?;
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT).await?;

    // A known peer at an address nobody told us about, and an unknown peer, stay refused.
    let elsewhere = format!(
        "{}/p2p/{}",
        c_addr.split("/p2p/").next().unwrap_or_default(),
        b.peer_id()
    );
    refused(&a, &elsewhere).await?;
    refused(&a, &c_addr).await?;
    refused(&a, c.peer_id()).await?;

    // Operators keep full connect.
    a.connect_to(&c).await?;
    let peers = a.peers(PeerFilter::Connected).await?;
    ensure!(
        peers.iter().any(|p| p.peer_id == c.peer_id()),
        "the operator's dial of c did not connect: {peers:?}"
    );
    // The web tier reads "connected" for c now; a web dial of a connected, known peer is fine.
    connect_as_web(&a, c.peer_id()).await?.ok()?;
    Ok(())
}
