//! `firmactl watch --json` keeps following the daemon's events across a daemon restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use firma_tests::harness::{CONNECT_TIMEOUT, spawn_many};
use firma_tests::wait_for;
use tokio::io::{AsyncBufReadExt, BufReader};

fn collect_lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut r = BufReader::new(pipe).lines();
        while let Ok(Some(l)) = r.next_line().await {
            into.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_across_restart() -> anyhow::Result<()> {
    let mut ds = spawn_many("watch", 3).await?;
    let mut cmd = tokio::process::Command::new(firma_tests::bins::firmactl()?);
    cmd.arg("--socket")
        .arg(ds[0].socket())
        .args(["--json", "watch", "--since", "0"]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.kill_on_drop(true);
    let mut watch = cmd.spawn()?;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = watch.stdout.take().context("no stdout")?;
    let stderr = watch.stderr.take().context("no stderr")?;
    // Both pipes are drained, so that watch never blocks on a full one.
    let reader = collect_lines(stdout, lines.clone());
    let err_reader = collect_lines(stderr, notices.clone());
    let printed = || {
        format!(
            "watch printed: {:?}\nand on stderr: {:?}",
            lines.lock().unwrap_or_else(|p| p.into_inner()),
            notices.lock().unwrap_or_else(|p| p.into_inner())
        )
    };
    let seen = |id: String| {
        let lines = lines.clone();
        move || {
            let hit = lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|l| l.contains(&id));
            async move { hit }
        }
    };

    ds[0].connect_to(&ds[1]).await?;
    wait_for(
        Duration::from_secs(10),
        "watch to print b's connection",
        seen(ds[1].peer_id().to_owned()),
    )
    .await?;

    let resyncs = || {
        lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains("\"resync\""))
            .count()
    };
    let before = resyncs();
    ds[0].restart().await?;
    ensure!(
        watch.try_wait()?.is_none(),
        "firmactl watch exited when the daemon restarted"
    );
    // The restarted daemon numbers its events anew: watch must notice, say so, and go on. Only
    // then is the next event sure to be after its reconnect.
    // Generous: no bound is promised; the lag is printed so that a slow reconnect is visible.
    let took = wait_for(
        Duration::from_secs(40),
        "watch to print a resync after the restart",
        || {
            let n = resyncs();
            async move { n > before }
        },
    )
    .await
    .with_context(printed)?;
    println!("watch printed its resync {took:?} after the restarted daemon was ready");

    // A new peer after the restart: only a watch that reconnected can print it.
    ds[0].connect(&ds[2].tcp_addr().await?).await?;
    ds[0].wait_connected(ds[2].peer_id(), CONNECT_TIMEOUT).await?;
    wait_for(
        Duration::from_secs(15),
        "watch to print c's connection after the restart",
        seen(ds[2].peer_id().to_owned()),
    )
    .await
    .with_context(printed)?;
    ensure!(watch.try_wait()?.is_none(), "firmactl watch exited");

    let _ = watch.start_kill();
    let _ = watch.wait().await;
    let _ = reader.await;
    let _ = err_reader.await;
    // With --json every line on stdout is one JSON value.
    for l in lines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        ensure!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "watch --json printed a non-JSON line: {l:?}"
        );
    }
    Ok(())
}
