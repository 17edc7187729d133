//! mDNS discovery between two daemons in two network namespaces joined by a veth pair. mDNS is
//! never enabled in the machine's own namespace; where namespaces cannot be made, the test says
//! why and skips.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::types::AddrSource;
use firma_tests::netns::NetnsPair;
use firma_tests::{Daemon, DaemonOpts, wait_for};

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
    // First discovery (the address book learns the other's veth address from mDNS), then the
    // connection, so that a failure says which of the two is missing.
    for (x, y, y_addr) in [(&a, &b, &pair.b.addr), (&b, &a, &pair.a.addr)] {
        let what = format!("`{}` to learn `{}` from mDNS", x.name(), y.name());
        wait_for(Duration::from_secs(30), &what, || async {
            x.peer(y.peer_id()).await.is_ok_and(|p| {
                p.addrs
                    .iter()
                    .any(|ad| ad.source == AddrSource::Mdns && ad.addr.contains(y_addr.as_str()))
            })
        })
        .await
        .with_context(|| x.log_tail())?;
    }
    a.wait_connected(b.peer_id(), Duration::from_secs(30)).await?;
    b.wait_connected(a.peer_id(), Duration::from_secs(30)).await?;
    Ok(())
}
