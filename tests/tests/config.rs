//! Configuration at the edges: a wrong key stops the daemon with a message naming the key, and
//! SIGHUP reloads the file without touching live connections (a bad reload is refused, not fatal).

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::ctx;
use firma_ipc::event::Event;
use firma_tests::harness::{CONNECT_TIMEOUT, flatten};
use firma_tests::{Daemon, DaemonOpts, wait_for};

/// Start with `toml` as the config file; require a non-zero exit whose output names `key`.
async fn refused(name: &str, toml: &str, key: &str) -> anyhow::Result<()> {
    let mut d = Daemon::launch(DaemonOpts {
        config: Some(toml.to_owned()),
        ..DaemonOpts::named(name)
    })?;
    let st = d.wait_exit(Duration::from_secs(20)).await?;
    ensure!(!st.success(), "daemon accepted config {toml:?} (exit {st})");
    ensure!(
        d.log().contains(key),
        "error for {toml:?} does not name `{key}`:\n{}",
        d.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_names_the_key() -> anyhow::Result<()> {
    refused("badtop", "bogus_setting = 1\n", "bogus_setting").await?;
    refused("badnest", "[network.retry]\ninitial_dely = \"1s\"\n", "initial_dely").await?;
    refused("badval", "[network.retry]\njitter = 3.0\n", "network.retry.jitter").await?;
    refused(
        "badaddr",
        "[network]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n",
        "network.bootstrap[0]",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_value_names_the_key() -> anyhow::Result<()> {
    // Nested keys come from FIRMA_* variables with `__` between levels, checked like the file.
    let opts = DaemonOpts {
        env: vec![("FIRMA_NETWORK__RETRY__JITTER".into(), "7".into())],
        ..DaemonOpts::named("badenv")
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(Duration::from_secs(20)).await?;
    ensure!(
        !st.success() && d.log().contains("jitter"),
        "bad env value accepted or not named (exit {st}):\n{}",
        d.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_connections() -> anyhow::Result<()> {
    let cfg = "[network]\nrtt_event_interval = \"5s\"\n";
    let mut a = Daemon::spawn(DaemonOpts {
        config: Some(cfg.into()),
        ..DaemonOpts::named("hup-a")
    })
    .await?;
    let b = Daemon::spawn(DaemonOpts::named("hup-b")).await?;
    a.connect_to(&b).await?;
    let head = a.status().await?.event_head;
    let config_path = a.dir().join("transportd.toml");

    // A valid change: wait for the daemon to say it applied it ("...reloaded"), not merely that
    // it began, so that the next write cannot race with this reload's read of the file.
    std::fs::write(&config_path, "[network]\nrtt_event_interval = \"7s\"\n")?;
    let offset = a.log().len();
    a.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for(Duration::from_secs(10), "the daemon to log that it reloaded", || {
        let hit = a.log().get(offset..).is_some_and(|new| {
            new.lines()
                .any(|l| l.contains("reloaded") && !l.contains("not reloaded"))
        });
        async move { hit }
    })
    .await
    .with_context(|| a.log_tail())?;
    let after_valid = a.log().get(offset..).unwrap_or_default().to_owned();
    ensure!(
        !after_valid.contains("refused"),
        "a valid reload was refused:\n{after_valid}"
    );

    // An invalid change: refused, daemon keeps running with the old config.
    std::fs::write(&config_path, "[network]\nrtt_event_intervall = \"7s\"\n")?;
    a.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for(
        Duration::from_secs(10),
        "the refused reload to name the bad key",
        || {
            let hit = a.log().contains("rtt_event_intervall");
            async move { hit }
        },
    )
    .await
    .with_context(|| a.log_tail())?;

    ensure!(a.is_running(), "the daemon exited on SIGHUP");
    a.status().await.context("status after the reloads")?;
    ensure!(a.is_connected_to(b.peer_id()).await, "a lost b across SIGHUP");
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;
    let conn = a.client().await?;
    let batch = flatten(conn.client.events(ctx(Duration::from_secs(10)), head, 1024, 0).await)?;
    let dropped = batch
        .events
        .iter()
        .any(|e| matches!(&e.event, Event::PeerDisconnected { peer_id, .. } if peer_id == b.peer_id()));
    ensure!(!dropped, "b was disconnected during the reloads: {batch:?}");
    Ok(())
}
