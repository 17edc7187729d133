//! Free disk space the daemon cannot read is left out, never reported as 0 (which reads as a
//! full disk): status has no `disk_free_bytes`, the metrics have no `firma_disk_free_bytes`, and
//! firma-web's /api/info has no `diskFreeBytes`. Once the store's directory can be read again,
//! all three report it again.
//!
//! The daemon reads the free space of its store's directory by path; moving that directory
//! aside (LMDB keeps working through its open files) makes the read fail as an unmounted or
//! unreachable directory would.

use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::ctx;
use firma_tests::harness::flatten;
use firma_tests::web::{Web, WebOpts};
use firma_tests::{Daemon, DaemonOpts, wait_for};

const METRIC: &str = "firma_disk_free_bytes";

async fn disk_metric(d: &Daemon) -> anyhow::Result<Option<f64>> {
    let conn = d.client().await?;
    let m = flatten(conn.client.metrics(ctx(Duration::from_secs(10))).await)?;
    Ok(m.metrics.iter().find(|m| m.name == METRIC).map(|m| m.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_disk_space_is_left_out_not_zero() -> anyhow::Result<()> {
    let d = Daemon::spawn(DaemonOpts::named("diskfree")).await?;
    let web = Web::spawn(WebOpts::new("diskfree-web", d.socket())).await?;

    // Readable: reported everywhere, and not 0.
    let free = d
        .status()
        .await?
        .store
        .disk_free_bytes
        .context("no disk_free_bytes while readable")?;
    ensure!(free > 0, "disk_free_bytes {free}");
    ensure!(
        disk_metric(&d).await?.is_some_and(|v| v > 0.0),
        "no {METRIC} while readable"
    );
    let info = web.get_json("/api/info").await?;
    ensure!(
        info["storage"]["diskFreeBytes"].as_u64().is_some_and(|v| v > 0),
        "{info}"
    );

    let store = d.state_dir().join("store");
    let away = d.state_dir().join("store.away");
    std::fs::rename(&store, &away)?;
    let status = d.status().await?;
    ensure!(
        status.store.disk_free_bytes.is_none(),
        "unreadable disk reported as {:?}",
        status.store.disk_free_bytes
    );
    let metric = disk_metric(&d).await?;
    ensure!(metric.is_none(), "unreadable disk reported as {METRIC} {metric:?}");
    let info = web.get_json("/api/info").await?;
    ensure!(
        info["storage"].get("diskFreeBytes").is_none(),
        "unreadable disk in /api/info: {info}"
    );
    ensure!(
        info["storage"]["usedBytes"].is_u64(),
        "the rest of storage is gone: {info}"
    );
    let text = d.cli(&["status"]).await?;
    ensure!(
        !text.stdout.contains("free on disk"),
        "firmactl status: {}",
        text.stdout
    );

    std::fs::rename(&away, &store)?;
    wait_for(
        Duration::from_secs(10),
        "the free space to be reported again",
        || async { disk_metric(&d).await.ok().flatten().is_some_and(|v| v > 0.0) },
    )
    .await?;
    Ok(())
}
