//! Started as root with `--user nobody`, the daemon drops to nobody for good: /proc shows the
//! uids and gids of nobody, no supplementary root group, no effective capabilities.

use anyhow::{Context, ensure};
use firma_tests::{Daemon, DaemonOpts};

fn field<'a>(status: &'a str, name: &str) -> anyhow::Result<Vec<&'a str>> {
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .with_context(|| format!("no {name} in /proc status"))?;
    Ok(line[name.len()..].split_whitespace().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_with_user_nobody_drops_privileges() -> anyhow::Result<()> {
    let nobody = nix::unistd::User::from_name("nobody")?.context("no user nobody on this machine")?;
    let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
    // The temp dir must be reachable by nobody once the daemon has dropped root.
    let opts = DaemonOpts {
        allow_root: false,
        user: Some("nobody".into()),
        world_traversable: true,
        ..DaemonOpts::named("drop")
    };
    let d = Daemon::spawn(opts).await?;
    let st = d.proc_status()?;
    ensure!(
        field(&st, "Uid:")? == [uid.as_str(); 4],
        "Uid line: {:?}",
        field(&st, "Uid:")?
    );
    ensure!(
        field(&st, "Gid:")? == [gid.as_str(); 4],
        "Gid line: {:?}",
        field(&st, "Gid:")?
    );
    ensure!(
        !field(&st, "Groups:")?.contains(&"0"),
        "still in group 0: {:?}",
        field(&st, "Groups:")?
    );
    ensure!(
        field(&st, "CapEff:")? == ["0000000000000000"],
        "CapEff: {:?}",
        field(&st, "CapEff:")?
    );
    ensure!(
        field(&st, "CapPrm:")? == ["0000000000000000"],
        "CapPrm: {:?}",
        field(&st, "CapPrm:")?
    );
    // Still serving root (an operator) after the drop.
    ensure!(d.status().await?.peer_id == d.peer_id(), "status after the drop");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_user_or_allow_root_is_refused() -> anyhow::Result<()> {
    // The default user `firma` does not exist on a test machine, and root is not allowed: the
    // daemon must stop with a message instead of running as root.
    let opts = DaemonOpts {
        allow_root: false,
        user: Some("firma-no-such-user".into()),
        ..DaemonOpts::named("noroot")
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(std::time::Duration::from_secs(20)).await?;
    ensure!(!st.success(), "daemon ran as root without --allow-root and exited {st}");
    ensure!(
        d.log().contains("firma-no-such-user"),
        "the error does not name the missing user:\n{}",
        d.log()
    );
    Ok(())
}
