//! Started as root with `--user nobody`, the daemon drops to nobody for good: /proc shows the
//! uids and gids of nobody, no supplementary root group, no effective capabilities.
//!
//! And it still works as that account, the way it is deployed: two daemons started as root with
//! `--user`, and two started directly as the account (systemd's `User=`), dial each other both
//! ways over TCP (from their listen ports, as hole punching needs) and QUIC, redial after a
//! restart and deliver transfers; with a privileged TCP listen port too. An account that cannot
//! reach its state or socket directory stops the daemon before anything starts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_ipc::transfer::TransferState;
use firma_tests::accounts::{self, Account};
use firma_tests::harness::{CONNECT_TIMEOUT, flatten};
use firma_tests::transfer::{download_sha256, make_document, send, upload_doc, wait_incoming, wait_state};
use firma_tests::{Daemon, DaemonOpts, wait_for};

const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

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

/// Opts for a daemon started as root that drops to `acct`, with TCP and QUIC listeners; its
/// inbox accepts transfers from unknown peers.
fn dropping(name: &str, acct: &Account) -> DaemonOpts {
    DaemonOpts {
        allow_root: false,
        user: Some(acct.name.clone()),
        world_traversable: true,
        quic: true,
        config: Some("[transfer]\nunknown_peers = \"accept\"\n".to_owned()),
        ..DaemonOpts::named(name)
    }
}

/// Opts for a daemon started directly as `acct` in `base/<name>/{state,run}`, which are made
/// as a service manager makes them (owned by the account); `base` itself stays root's.
fn account_started(name: &str, acct: &Account, base: &Path) -> anyhow::Result<DaemonOpts> {
    let home = base.join(name);
    std::fs::create_dir_all(&home)?;
    acct.make_dir(&home.join("state"), 0o700)?;
    acct.make_dir(&home.join("run"), 0o750)?;
    Ok(DaemonOpts {
        allow_root: false,
        wrapper: acct.wrapper(),
        state_dir: Some(home.join("state")),
        socket: Some(home.join("run/transportd.sock")),
        quic: true,
        config: Some("[transfer]\nunknown_peers = \"accept\"\n".to_owned()),
        ..DaemonOpts::named(name)
    })
}

/// The daemon's process runs as `acct`: every uid and gid.
fn runs_as(d: &Daemon, acct: &Account) -> anyhow::Result<()> {
    let st = d.proc_status()?;
    let (uid, gid) = (acct.uid.to_string(), acct.gid.to_string());
    ensure!(
        field(&st, "Uid:")? == [uid.as_str(); 4],
        "`{}` Uid: {:?}",
        d.name(),
        field(&st, "Uid:")?
    );
    ensure!(
        field(&st, "Gid:")? == [gid.as_str(); 4],
        "`{}` Gid: {:?}",
        d.name(),
        field(&st, "Gid:")?
    );
    Ok(())
}

fn port_of(addr: &str, proto: &str) -> anyhow::Result<u16> {
    let mut parts = addr.split('/');
    while let Some(p) = parts.next() {
        if p == proto {
            return Ok(parts.next().context("no port")?.parse()?);
        }
    }
    bail!("no {proto} port in {addr}")
}

/// Whether this machine has an established loopback TCP connection from `local` to `remote`.
fn tcp_established(local: u16, remote: u16) -> anyhow::Result<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let (l, r) = (format!("0100007F:{local:04X}"), format!("0100007F:{remote:04X}"));
    Ok(table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && f[1] == l && f[2] == r && f[3] == "01"
    }))
}

async fn disconnect(a: &Daemon, b: &Daemon) -> anyhow::Result<()> {
    let c = a.client().await?;
    flatten(c.client.disconnect(ctx(CALL_TIMEOUT), b.peer_id().to_owned()).await)?;
    for (x, y) in [(a, b), (b, a)] {
        let what = format!("`{}` to drop {}", x.name(), y.name());
        wait_for(CONNECT_TIMEOUT, &what, || async {
            !x.is_connected_to(y.peer_id()).await
        })
        .await?;
    }
    Ok(())
}

/// `from` dials `to` over `proto`, both see the connection, then it is closed again. Over TCP
/// with `reuse`, the connection must leave from `from`'s listen port.
async fn dial(from: &Daemon, to: &Daemon, proto: &str, reuse: bool) -> anyhow::Result<()> {
    from.connect_over(to, proto)
        .await
        .with_context(|| format!("`{}` dialling `{}` over {proto}", from.name(), to.name()))?;
    if proto == "/tcp/" && reuse {
        let (l, r) = (
            port_of(&from.tcp_addr().await?, "tcp")?,
            port_of(&to.tcp_addr().await?, "tcp")?,
        );
        ensure!(
            tcp_established(l, r)?,
            "`{}` did not dial `{}` from its listen port {l} (port reuse is lost)",
            from.name(),
            to.name()
        );
    }
    disconnect(from, to).await
}

/// `from` sends a small document to `to`; it must be delivered and arrive intact.
async fn deliver(from: &Daemon, to: &Daemon, seed: u64) -> anyhow::Result<()> {
    let doc = make_document(from.dir(), &format!("doc-{seed}.pdf"), 70_001, seed)?;
    let staged = upload_doc(from, &doc).await?;
    let t = send(from, to.peer_id(), &[staged], Some("as the service account")).await?;
    wait_state(from, &t.id, TransferState::Delivered, TRANSFER_DEADLINE).await?;
    let got = wait_incoming(to, from.peer_id(), TRANSFER_DEADLINE).await?;
    let got = wait_state(to, &got.id, TransferState::Received, TRANSFER_DEADLINE).await?;
    let d = got.documents.first().context("received transfer without documents")?;
    ensure!(
        download_sha256(to, &got.id, &d.id, doc.size).await? == doc.sha256,
        "document from `{}` arrived altered",
        from.name()
    );
    Ok(())
}

/// What a daemon must do as its account: dial and be dialled over TCP and QUIC, deliver both
/// ways, and after a restart redial the peer it had dialled and deliver again.
async fn works_as_account(a: &mut Daemon, b: &Daemon, reuse: bool) -> anyhow::Result<()> {
    for proto in ["/tcp/", "/quic-v1"] {
        dial(a, b, proto, reuse).await?;
        dial(b, a, proto, reuse).await?;
    }
    a.connect_to(b).await?;
    deliver(a, b, 1).await?;
    deliver(b, a, 2).await?;
    a.restart().await?;
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT)
        .await
        .context("redial after a restart")?;
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;
    deliver(a, b, 3).await?;
    deliver(b, a, 4).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_to_user_dials_redials_and_delivers() -> anyhow::Result<()> {
    let acct = accounts::ensure(accounts::SERVICE).await?;
    let (mut a, b) = tokio::try_join!(
        Daemon::spawn(dropping("drop-a", &acct)),
        Daemon::spawn(dropping("drop-b", &acct))
    )?;
    runs_as(&a, &acct)?;
    runs_as(&b, &acct)?;
    works_as_account(&mut a, &b, true).await?;
    runs_as(&a, &acct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_started_daemons_dial_redial_and_deliver() -> anyhow::Result<()> {
    let acct = accounts::ensure(accounts::SERVICE).await?;
    let base = tempfile::Builder::new()
        .prefix("firma-e2e-acct-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let base_path = base.path().display().to_string();
    let (oa, ob) = (
        account_started("acct-a", &acct, base.path())?,
        account_started("acct-b", &acct, base.path())?,
    );

    // The temp dir is root's and 0700: the account cannot reach its directories in it, and the
    // daemon must say so before it starts anything.
    let mut early = Daemon::launch(oa.clone())?;
    let st = early.wait_exit(Duration::from_secs(20)).await?;
    let log = early.log();
    ensure!(!st.success(), "daemon started without reaching its state dir:\n{log}");
    for want in [
        format!("cannot traverse {base_path}"),
        "root:root".to_owned(),
        "mode 0700".to_owned(),
        format!("chmod o+x {base_path}"),
    ] {
        ensure!(log.contains(&want), "the error lacks `{want}`:\n{log}");
    }
    ensure!(
        !log.contains("listening on"),
        "the network started before the check:\n{log}"
    );
    drop(early);

    // As the error says.
    std::process::Command::new("chmod").args(["o+x", &base_path]).status()?;
    let (mut a, b) = tokio::try_join!(Daemon::spawn(oa), Daemon::spawn(ob))?;
    runs_as(&a, &acct)?;
    works_as_account(&mut a, &b, true).await
}

/// A free loopback TCP port below 1024 (root may bind it; the account may not).
fn free_privileged_port() -> anyhow::Result<u16> {
    (600..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .context("no free TCP port in 600..1000 on 127.0.0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_tcp_port_still_dials_after_the_drop() -> anyhow::Result<()> {
    let acct = accounts::ensure(accounts::SERVICE).await?;
    let port = free_privileged_port()?;
    let low = DaemonOpts {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        ..dropping("low-a", &acct)
    };
    let (mut a, b) = tokio::try_join!(Daemon::spawn(low), Daemon::spawn(dropping("low-b", &acct)))?;
    runs_as(&a, &acct)?;
    ensure!(
        a.tcp_addr().await?.contains(&format!("/tcp/{port}/")),
        "not on port {port}"
    );
    ensure!(
        a.log().contains("TCP hole punching is off"),
        "no warning that port reuse is off:\n{}",
        a.log()
    );
    // b keeps reusing its port; a dials from fresh ports.
    dial(&b, &a, "/tcp/", true).await?;
    dial(&a, &b, "/tcp/", false).await?;
    a.connect_to(&b).await?;
    deliver(&a, &b, 5).await?;
    a.restart().await?;
    a.wait_connected(b.peer_id(), CONNECT_TIMEOUT)
        .await
        .context("redial after a restart")?;
    deliver(&a, &b, 6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_state_dir_stops_before_anything_starts() -> anyhow::Result<()> {
    let acct = accounts::ensure(accounts::SERVICE).await?;
    let base = tempfile::Builder::new()
        .prefix("firma-e2e-reach-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    let hidden = base.path().join("private");
    std::fs::create_dir(&hidden)?;
    let opts = DaemonOpts {
        state_dir: Some(hidden.join("state")),
        ..dropping("reach", &acct)
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(Duration::from_secs(20)).await?;
    let log = d.log();
    let blocked = base.path().display().to_string();
    ensure!(!st.success(), "daemon ran with an unreachable state dir:\n{log}");
    for want in [
        format!("`{}`", acct.name),
        format!("cannot traverse {blocked}"),
        "state directory".to_owned(),
        "mode 0700".to_owned(),
        format!("chmod o+x {blocked}"),
    ] {
        ensure!(log.contains(&want), "the error lacks `{want}`:\n{log}");
    }
    ensure!(
        !log.contains("listening on"),
        "the network started before the check:\n{log}"
    );
    ensure!(
        !hidden.join("state").exists(),
        "the state dir was created before the check"
    );
    Ok(())
}
