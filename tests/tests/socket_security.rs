//! The control socket as an attack surface: file modes, a uid that is not allowed, garbage and
//! hostile length prefixes, and a second daemon on the same socket and state.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::{CALL_TIMEOUT, ctx};
use firma_tests::harness::flatten;
use firma_tests::{Daemon, DaemonOpts, wait_for};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const NOBODY: u32 = 65534;

fn mode(path: &std::path::Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Run sockprobe against `socket` as uid/gid `NOBODY`; its JSON line.
async fn probe_as_nobody(socket: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sockprobe"));
    // As root, std also clears the supplementary groups when a uid is set.
    cmd.arg(socket).uid(NOBODY).gid(NOBODY);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("sockprobe said {text:?} {:?}", out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_state_file_modes() -> anyhow::Result<()> {
    let d = Daemon::spawn(DaemonOpts::named("modes")).await?;
    let dir = d.socket().parent().context("socket has no parent")?;
    let key = d.state_dir().join("identity.key");
    let want = [
        (dir, 0o750),
        (d.socket(), 0o660),
        (d.state_dir(), 0o700),
        (key.as_path(), 0o600),
    ];
    let mut wrong = Vec::new();
    for (path, m) in want {
        let got = mode(path)?;
        if got != m {
            wrong.push(format!("{} is {got:o}, expected {m:o}", path.display()));
        }
    }
    ensure!(wrong.is_empty(), "wrong modes: {}", wrong.join("; "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_uid_is_refused_and_audited() -> anyhow::Result<()> {
    // The temp dir is opened up so that only the daemon's own modes and checks stand in the way.
    let d = Daemon::spawn(DaemonOpts {
        world_traversable: true,
        ..DaemonOpts::named("perm")
    })
    .await?;
    let dir = d.socket().parent().context("socket has no parent")?;

    // With the daemon's modes, nobody cannot even reach the socket.
    let p = probe_as_nobody(d.socket()).await?;
    ensure!(
        p["connect"].as_str().is_some_and(|s| s.starts_with("error")),
        "nobody connected through 0750: {p}"
    );

    // Loosen the file modes on purpose: the daemon's own credential check must still refuse.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666))?;
    let p = probe_as_nobody(d.socket()).await?;
    ensure!(p["uid"] == NOBODY, "probe did not run as nobody: {p}");
    ensure!(
        p["connect"] == "ok",
        "probe could not connect through loosened modes: {p}"
    );
    ensure!(
        p["read"] != "timeout" && !p["read"].as_str().is_some_and(|s| s.starts_with("data")),
        "nobody got an answer or was kept open: {p}"
    );

    let conn = d.client().await?;
    wait_for(Duration::from_secs(5), "an audit record of the refused uid", || async {
        flatten(conn.client.audit(ctx(CALL_TIMEOUT), 50).await)
            .is_ok_and(|recs| recs.iter().any(|r| r.uid == NOBODY && r.action == "connect-refused"))
    })
    .await?;
    ensure!(d.status().await.is_ok(), "daemon stopped answering after the refusal");
    Ok(())
}

/// Write `bytes` on a fresh connection and require the daemon to close it within 10 s.
async fn expect_closed(d: &Daemon, what: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(d.socket()).await?;
    // The write may fail half-way once the daemon has already hung up; that is a close too.
    let _ = s.write_all(bytes).await;
    // Meanwhile other clients are served.
    ensure!(
        d.status().await.is_ok(),
        "status failed while a {what} connection was open"
    );
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    ensure!(closed.is_ok(), "daemon kept a {what} connection open for 10 s");
    Ok(())
}

fn vm_rss_kib(d: &Daemon) -> anyhow::Result<u64> {
    let st = d.proc_status()?;
    let line = st.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_frames_leave_daemon_serving() -> anyhow::Result<()> {
    let d = Daemon::spawn(DaemonOpts::named("garbage")).await?;
    let rss_before = vm_rss_kib(&d)?;
    let mut rng = rand::thread_rng();

    // A plausible length with random content: the decoder must fail, not the daemon.
    let mut body = vec![0u8; 60 * 1024];
    rng.fill_bytes(&mut body);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    expect_closed(&d, "random-frame", &frame).await?;

    // A 4 GiB length prefix must be refused before anything is allocated.
    let mut huge = 0xFFFF_FFFFu32.to_be_bytes().to_vec();
    huge.extend_from_slice(&body[..4096]);
    expect_closed(&d, "4 GiB prefix", &huge).await?;
    // Just over the 1 MiB cap, too.
    let over = ((firma_ipc::MAX_FRAME + 1) as u32).to_be_bytes();
    expect_closed(&d, "over-cap prefix", &over).await?;

    // Pure noise, several times.
    for _ in 0..5 {
        let mut noise = vec![0u8; 8 * 1024];
        rng.fill_bytes(&mut noise);
        // A random prefix below the cap would wait for more bytes; force one above it.
        noise[0] = 0xFF;
        expect_closed(&d, "noise", &noise).await?;
    }

    let rss_after = vm_rss_kib(&d)?;
    ensure!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let mut d = d;
    ensure!(d.is_running(), "daemon died");
    let st = d.status().await?;
    ensure!(st.peer_id == d.peer_id(), "a different daemon answers");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_same_socket_and_state_fails_clearly() -> anyhow::Result<()> {
    let first = Daemon::spawn(DaemonOpts::named("first")).await?;
    let opts = DaemonOpts {
        state_dir: Some(first.state_dir().to_owned()),
        socket: Some(first.socket().to_owned()),
        ready_timeout: Duration::from_secs(20),
        ..DaemonOpts::named("second")
    };
    let mut second = Daemon::launch(opts)?;
    let st = second.wait_exit(Duration::from_secs(20)).await?;
    ensure!(!st.success(), "second daemon exited with {st}");
    let log = second.log();
    let names_it =
        log.contains(&*first.socket().to_string_lossy()) || log.contains(&*first.state_dir().to_string_lossy());
    ensure!(
        names_it,
        "second daemon's error names neither the socket nor the state dir:\n{log}"
    );
    ensure!(
        log.to_lowercase().contains("already"),
        "second daemon's error does not say another one is running:\n{log}"
    );
    // The first one is untouched.
    ensure!(
        first.socket().exists(),
        "the second daemon removed the first one's socket"
    );
    ensure!(
        first.status().await?.peer_id == first.peer_id(),
        "first daemon no longer answers"
    );

    // The same with only the socket shared (a different state dir).
    let opts = DaemonOpts {
        socket: Some(first.socket().to_owned()),
        ..DaemonOpts::named("third")
    };
    let mut third = Daemon::launch(opts)?;
    let st = third.wait_exit(Duration::from_secs(20)).await?;
    ensure!(!st.success(), "daemon on a taken socket exited with {st}");
    ensure!(
        third.log().contains(&*first.socket().to_string_lossy()),
        "error does not name the socket:\n{}",
        third.log()
    );
    ensure!(first.status().await.is_ok(), "first daemon no longer answers");
    Ok(())
}

/// Another local user creates the default user-mode socket directory first, open to all, with
/// the lock file a symlink to a file of the victim's: the daemon refuses the directory and the
/// victim's file is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_socket_dir_and_lock_symlink_are_refused() -> anyhow::Result<()> {
    use firma_tests::accounts::{self, ATTACKER, SERVICE};
    let victim = accounts::ensure(SERVICE).await?;
    let evil = accounts::ensure(ATTACKER).await?;
    let home = tempfile::tempdir()?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755))?;
    victim.make_dir(&home.path().join("state"), 0o700)?;
    let precious = home.path().join("state/precious");
    std::fs::write(&precious, b"the victim's data")?;
    nix::unistd::chown(&precious, Some(victim.uid.into()), Some(victim.gid.into()))?;

    let planted = std::path::PathBuf::from(format!("/tmp/firma-{}", victim.uid));
    let _ = std::fs::remove_dir_all(&planted);
    // The attacker's doing, as the attacker.
    let status = std::process::Command::new("/usr/bin/setpriv")
        .args([
            format!("--reuid={}", evil.uid),
            format!("--regid={}", evil.gid),
            "--clear-groups".into(),
        ])
        .args([
            "sh",
            "-c",
            "mkdir -m 1777 \"$0\" && chmod 1777 \"$0\" && ln -s \"$1\" \"$0/transportd.sock.lock\"",
        ])
        .arg(&planted)
        .arg(&precious)
        .status()?;
    ensure!(status.success(), "the attacker could not plant {}", planted.display());

    let opts = DaemonOpts {
        allow_root: false,
        wrapper: victim.wrapper(),
        state_dir: Some(home.path().join("state")),
        socket: Some(planted.join("transportd.sock")),
        ..DaemonOpts::named("planted")
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&planted);
    let st = st?;
    let log = d.log();
    ensure!(
        !st.success(),
        "the daemon used a socket dir another user planted:\n{log}"
    );
    ensure!(
        log.contains(&planted.display().to_string()),
        "the error does not name the directory:\n{log}"
    );
    ensure!(
        std::fs::read(&precious)? == b"the victim's data",
        "the victim's file was written through the planted lock symlink"
    );
    Ok(())
}

/// Started as root with `--socket` in /tmp, the daemon must not hand /tmp to its account (nor
/// use a directory anyone may write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_in_tmp_as_root_never_chowns_tmp() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let acct = firma_tests::accounts::ensure(firma_tests::accounts::SERVICE).await?;
    let sock = std::path::PathBuf::from(format!("/tmp/firma-e2e-{}.sock", std::process::id()));
    let opts = DaemonOpts {
        allow_root: false,
        user: Some(acct.name.clone()),
        world_traversable: true,
        socket: Some(sock.clone()),
        ..DaemonOpts::named("tmpsock")
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(Duration::from_secs(20)).await;
    let tmp = std::fs::metadata("/tmp")?;
    if tmp.uid() != 0 {
        // Put it back before failing: the whole machine depends on it.
        nix::unistd::chown("/tmp", Some(0.into()), Some(0.into()))?;
        anyhow::bail!("the daemon handed /tmp to uid {}", tmp.uid());
    }
    let st = st?;
    ensure!(!st.success(), "the daemon served a socket in world-writable /tmp");
    ensure!(d.log().contains("writable by others"), "no reason given:\n{}", d.log());
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

/// Another local user serves a socket where a client is pointed: the client (firma-ipc's, used
/// by firmactl and firma-web) checks who serves it and refuses, saying so, before sending a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_socket_served_by_another_user() -> anyhow::Result<()> {
    let evil = firma_tests::accounts::ensure(firma_tests::accounts::ATTACKER).await?;
    let dir = std::path::PathBuf::from(format!("/tmp/firma-e2e-foreign-{}", std::process::id()));
    let sock = dir.join("transportd.sock");
    let _ = std::fs::remove_dir_all(&dir);
    let serve = "import os,socket,sys,time\nos.mkdir(sys.argv[1],0o755)\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1]+'/transportd.sock')\nos.chmod(sys.argv[1]+'/transportd.sock',0o666)\ns.listen(8)\ntime.sleep(60)\n";
    let mut server = tokio::process::Command::new("/usr/bin/setpriv")
        .args([
            format!("--reuid={}", evil.uid),
            format!("--regid={}", evil.gid),
            "--clear-groups".into(),
        ])
        .args(["/usr/bin/python3", "-c", serve])
        .arg(&dir)
        .kill_on_drop(true)
        .spawn()?;
    let res = async {
        wait_for(Duration::from_secs(10), "the attacker's socket", || async {
            sock.exists()
        })
        .await?;
        match firma_ipc::client::connect(&sock, "firma-tests", firma_ipc::types::Role::Operator).await {
            Err(firma_ipc::client::ConnectError::ForeignServer { uid, .. }) => {
                ensure!(uid == evil.uid, "blamed uid {uid}, not the attacker's {}", evil.uid)
            }
            Err(e) => anyhow::bail!("the client did not name the foreign server: {e}"),
            Ok(_) => anyhow::bail!("the client talked to another user's server"),
        }
        let out = firma_tests::cli::run_cli(&["--socket", &sock.to_string_lossy(), "status"]).await?;
        let text = format!("{}{}", out.stdout, out.stderr);
        ensure!(
            text.contains("impersonating"),
            "firmactl did not say who serves the socket: {text}"
        );
        Ok(())
    }
    .await;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    res
}
