//! Signals an operator sends to the real daemon out of habit: SIGUSR2 (firma-web's hot reload)
//! must not kill firma-transportd; it says which signal reloads what and keeps serving.

use std::time::Duration;

use anyhow::ensure;
use firma_tests::{Daemon, DaemonOpts, wait_for};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_is_explained_and_the_daemon_keeps_running() -> anyhow::Result<()> {
    let mut d = Daemon::spawn(DaemonOpts::named("usr2")).await?;
    let before = d.status().await?;
    d.signal(Signal::SIGUSR2)?;
    wait_for(
        Duration::from_secs(10),
        "the daemon to log what SIGUSR2 means",
        || async {
            let log = d.log();
            log.contains("SIGUSR2") && log.contains("firma-web") && log.contains("SIGHUP")
        },
    )
    .await?;
    // Twice, so that a handler that only survives the first one is caught too.
    d.signal(Signal::SIGUSR2)?;
    wait_for(Duration::from_secs(10), "a second SIGUSR2 line", || async {
        d.log().matches("SIGUSR2 ignored").count() >= 2
    })
    .await?;
    ensure!(d.is_running(), "the daemon exited on SIGUSR2:\n{}", d.log_tail());
    let after = d.status().await?;
    ensure!(
        after.peer_id == before.peer_id && after.uptime_ms >= before.uptime_ms,
        "another daemon answers after SIGUSR2: {after:?}"
    );
    // It is not a reload either.
    ensure!(
        !d.log().contains("SIGHUP: reloading"),
        "SIGUSR2 was taken for a reload:\n{}",
        d.log_tail()
    );
    d.stop().await
}
