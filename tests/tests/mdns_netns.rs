//! mDNS discovery between two daemons in two network namespaces joined by a veth pair. mDNS is
//! never enabled in the machine's own namespace; where namespaces cannot be made, the test says
//! why and skips.

use std::time::Duration;

use anyhow::ensure;
use firma_ipc::types::AddrSource;
use firma_tests::netns::NetnsPair;
use firma_tests::{Daemon, DaemonOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_discovers_across_veth() -> anyhow::Result<()> {
    // Declared first, dropped last: the daemons inside are reaped before the namespaces go.
    let Some(pair) = NetnsPair::create()? else {
        return Ok(());
    };
    let opts = |name: &str, end: &firma_tests::netns::NetnsEnd| DaemonOpts {
        mdns: true,
        wrapper: end.wrapper(),
        listen: vec![format!("/ip4/{}/tcp/0", end.addr)],
        ..DaemonOpts::named(name)
    };
    let (a, b) = tokio::try_join!(
        Daemon::spawn(opts("mdns-a", &pair.a)),
        Daemon::spawn(opts("mdns-b", &pair.b))
    )?;
    ensure!(a.status().await?.discovery.mdns_enabled, "mdns is off in a");
    a.wait_connected(b.peer_id(), Duration::from_secs(30)).await?;
    b.wait_connected(a.peer_id(), Duration::from_secs(30)).await?;
    let pb = a.peer(b.peer_id()).await?;
    ensure!(
        pb.addrs.iter().any(|x| x.source == AddrSource::Mdns),
        "b's addresses at a are not from mDNS: {:?}",
        pb.addrs
    );
    ensure!(
        pb.addrs.iter().any(|x| x.addr.contains(&pair.b.addr)),
        "b's veth address unknown to a: {:?}",
        pb.addrs
    );
    Ok(())
}
