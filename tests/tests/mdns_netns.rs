//! mDNS discovery between two daemons in two network namespaces joined by a veth pair. mDNS is
//! never enabled in the machine's own namespace; where namespaces cannot be made, the test says
//! why and skips.

use std::time::Duration;

use anyhow::ensure;
use firma_ipc::client::ctx;
use firma_ipc::event::Event;
use firma_ipc::types::AddrSource;
use firma_tests::harness::flatten;
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
    // Nothing but mDNS could have told either one where the other is: both must say so.
    for (x, y, y_addr) in [(&a, &b, &pair.b.addr), (&b, &a, &pair.a.addr)] {
        let conn = x.client().await?;
        let batch = flatten(conn.client.events(ctx(Duration::from_secs(10)), 0, 1024, 0).await)?;
        let from_mdns = batch.events.iter().any(|e| {
            matches!(&e.event, Event::PeerDiscovered { peer_id, source: AddrSource::Mdns, .. } if peer_id == y.peer_id())
        });
        ensure!(
            from_mdns,
            "`{}` has no mDNS discovery event for `{}`: {:?}",
            x.name(),
            y.name(),
            batch.events
        );
        let p = x.peer(y.peer_id()).await?;
        ensure!(
            p.addrs.iter().any(|ad| ad.addr.contains(y_addr.as_str())),
            "`{}` does not know `{}` at its veth address: {:?}",
            x.name(),
            y.name(),
            p.addrs
        );
    }
    Ok(())
}
