//! `scripts/dev.sh --two-nodes` end to end, in a copy of the checkout: it comes up with two
//! connected daemons and firma-web; a change under web/ rebuilds firma-web and reloads it (new
//! instance, same pid, new binary, healthy) while the daemons and their P2P connection carry on
//! untouched; SIGINT then stops every process it started and removes the sockets.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use firma_ipc::event::Event;
use firma_tests::ops::{DevSh, Proc, RepoCopy, SocketApi, free_loopback_port};
use firma_tests::wait::{wait_for, wait_for_value};
use firma_tests::web::http;
use nix::sys::signal::Signal;

/// Until dev.sh says "ready": it may have to build (and, on a fresh machine, install cargo-watch).
const READY_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// From the edit under web/ to the new build answering: a rebuild of firma-web on a busy machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

fn pids(procs: &[Proc]) -> Vec<i32> {
    procs.iter().map(|p| p.pid).collect()
}

/// `/health` answered 200 with `status: ok`, and `/api/info` (the token is read afresh: dev.sh
/// creates it at the first start) names the serving instance: its `instance_id`.
async fn healthy_instance(addr: SocketAddr, token_file: &Path) -> Option<String> {
    let resp = http(addr, "GET", "/health", &[], None).await.ok()?;
    let ok = resp.status == 200 && resp.json().ok()?["status"] == "ok";
    let token = std::fs::read_to_string(token_file).ok()?;
    if !ok {
        return None;
    }
    info_instance(addr, token.trim()).await.ok()
}

/// `GET /api/info` with the API token: its `instance_id`.
async fn info_instance(addr: SocketAddr, token: &str) -> anyhow::Result<String> {
    let auth = [("authorization".to_owned(), format!("Bearer {token}"))];
    let resp = http(addr, "GET", "/api/info", &auth, None).await?;
    if resp.status != 200 {
        bail!("GET /api/info answered {}: {}", resp.status, resp.text());
    }
    let v = resp.json()?;
    v["instance_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no instance_id in /api/info: {v}"))
}

/// What dev.sh prints for a person: the page at `/` (not the `/explorer` WebSocket), and one
/// login link, the one firma-web itself logged, which signs in once.
async fn check_printed_addresses(log: &str, web: SocketAddr) -> anyhow::Result<()> {
    let field = |name: &str| {
        log.lines()
            .filter(|l| !l.starts_with('['))
            .find_map(|l| l.trim_start().strip_prefix(name))
            .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned())
            .with_context(|| format!("dev.sh printed no `{name}` line:\n{log}"))
    };
    let page = field("page:")?;
    anyhow::ensure!(page == format!("http://{web}/"), "dev.sh prints the page as {page}");
    anyhow::ensure!(
        !log.lines().any(|l| !l.starts_with('[') && l.contains("/explorer")),
        "dev.sh still prints /explorer as an address:\n{log}"
    );
    let link = field("sign in:")?;
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[web]") && l.contains("/login?nonce="))
        .collect();
    anyhow::ensure!(
        logged.len() == 1 && logged[0].contains(&link),
        "dev.sh printed {link}, firma-web logged {logged:?}: one link, the same"
    );
    let path = link
        .strip_prefix(&format!("http://{web}"))
        .with_context(|| format!("the login link {link} is not on {web}"))?;
    // Loading the link sends the browser to the page, which redeems the nonce once.
    let first = http(web, "GET", path, &[], None).await?;
    anyhow::ensure!(
        first.status == 303,
        "the printed login link answered {}: {}",
        first.status,
        first.text()
    );
    let nonce = path.split_once("nonce=").map(|(_, n)| n).unwrap_or_default();
    let body = serde_json::json!({ "nonce": nonce }).to_string();
    let h = [
        ("origin".to_owned(), format!("http://{web}")),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let redeemed = http(web, "POST", "/login", &h, Some(body.as_bytes())).await?;
    anyhow::ensure!(
        redeemed.status == 200,
        "the printed login link did not sign in: {} {}",
        redeemed.status,
        redeemed.text()
    );
    let again = http(web, "POST", "/login", &h, Some(body.as_bytes())).await?;
    anyhow::ensure!(
        again.status >= 400,
        "the printed login link worked twice ({})",
        again.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sh_reloads_web_without_touching_daemons_and_stops_cleanly() -> anyhow::Result<()> {
    let repo = RepoCopy::of_workspace()?;
    repo.separate_workspace_artifacts()?;
    let port = free_loopback_port()?;
    let web: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut dev = DevSh::spawn(
        repo.path(),
        &["--two-nodes"],
        &[
            // Discovery off: the two nodes find each other by dev.sh's dial. dev.sh listens on
            // 127.0.0.1 (9092, 9093, or free ports with --dev when those are taken).
            ("FIRMA_NO_MDNS", "true".to_owned()),
            ("FIRMA_NO_DHT", "true".to_owned()),
            ("FIRMA_WEB_LISTEN", web.to_string()),
        ],
    )?;
    let took = dev.wait_for_output("dev.sh: ready", READY_TIMEOUT).await?;
    println!("dev.sh ready after {took:?}");
    check_printed_addresses(&dev.log(), web).await?;

    // Its layout: state and sockets inside the copy (a short path, so no fallback dir).
    let run: PathBuf = repo.path().join("dev-state/run");
    let sock1 = run.join("node1/transportd.sock");
    let sock2 = run.join("node2/transportd.sock");
    let (node1, node2) = (SocketApi(&sock1), SocketApi(&sock2));
    let st1 = node1.status().await?;
    let st2 = node2.status().await?;
    assert!(
        !st1.discovery.mdns_enabled && !st2.discovery.mdns_enabled,
        "FIRMA_NO_MDNS reached both daemons"
    );
    assert!(
        !st1.discovery.dht_enabled && !st2.discovery.dht_enabled,
        "FIRMA_NO_DHT reached both daemons"
    );
    for addr in st1.listen_addrs.iter().chain(&st2.listen_addrs) {
        assert!(
            addr.starts_with("/ip4/127.0.0.1/"),
            "dev.sh's daemons listen on loopback only, not on {addr}"
        );
    }

    // dev.sh dialled node2 from node1; connecting again finds the connection in place.
    node1.wait_connected(&st2.peer_id, CONNECT_TIMEOUT).await?;
    node2.wait_connected(&st1.peer_id, CONNECT_TIMEOUT).await?;
    let again = node1.connect(&node2.loopback_tcp_addr().await?).await?;
    assert_eq!(again.peer_id, st2.peer_id);
    assert!(
        again.already_connected,
        "dev.sh's dial should already have connected the nodes: {again:?}"
    );

    let daemons = dev.processes_named("firma-transportd");
    assert_eq!(daemons.len(), 2, "two daemons under dev.sh: {:?}", dev.processes());
    let webs = dev.processes_named("firma-web");
    assert_eq!(webs.len(), 1, "one firma-web under dev.sh: {:?}", dev.processes());
    let web_before = webs[0].clone();
    let token_file = repo.path().join("dev-state/web/web.token");
    let instance_before = healthy_instance(web, &token_file)
        .await
        .context("firma-web is not healthy after dev.sh said ready")?;
    let token = std::fs::read_to_string(&token_file)?;
    assert_eq!(info_instance(web, token.trim()).await?, instance_before);
    let link1 = node1.peer(&st2.peer_id).await?;
    let link2 = node2.peer(&st1.peer_id).await?;
    let head1 = node1.status().await?.event_head;
    let head2 = node2.status().await?.event_head;

    // A change under web/: the watcher rebuilds firma-web and sends it SIGUSR2.
    let edited = repo.path().join("web/src/lib.rs");
    let mut text = std::fs::read_to_string(&edited)?;
    text.push_str("\n// Changed by the ops_dev test: dev.sh must rebuild and reload firma-web.\n");
    std::fs::write(&edited, text)?;

    let (instance_after, took) = wait_for_value(
        RELOAD_TIMEOUT,
        "firma-web to come back healthy as a new instance",
        || {
            let before = instance_before.clone();
            let token_file = token_file.clone();
            async move { healthy_instance(web, &token_file).await.filter(|id| *id != before) }
        },
    )
    .await
    .with_context(|| format!("dev.sh output:\n{}", dev.log_tail()))?;
    println!("firma-web reloaded after {took:?}: instance {instance_before} -> {instance_after}");
    assert_eq!(info_instance(web, token.trim()).await?, instance_after);

    // Reloaded, not restarted: the same process, now running the new build.
    let webs = dev.processes_named("firma-web");
    assert_eq!(
        pids(&webs),
        vec![web_before.pid],
        "firma-web re-executes in place: {:?}",
        dev.processes()
    );
    assert_ne!(
        webs[0].exe_inode, web_before.exe_inode,
        "firma-web should run the rebuilt binary"
    );
    assert!(
        dev.log().contains("sent SIGUSR2"),
        "the watcher sent SIGUSR2:\n{}",
        dev.log_tail()
    );

    // The daemons did not notice: same processes, same lifetimes, the link never dropped.
    assert_eq!(
        pids(&dev.processes_named("firma-transportd")),
        pids(&daemons),
        "daemon pids changed"
    );
    for (api, st, peer, link) in [
        (&node1, &st1, &st2.peer_id, &link1),
        (&node2, &st2, &st1.peer_id, &link2),
    ] {
        let now = api.status().await?;
        assert_eq!(now.peer_id, st.peer_id);
        assert!(
            now.uptime_ms > st.uptime_ms,
            "{} restarted: uptime {} -> {}",
            api.0.display(),
            st.uptime_ms,
            now.uptime_ms
        );
        let info = api.peer(peer).await?;
        assert!(info.connected, "{} lost {peer}", api.0.display());
        assert_eq!(
            info.connect_count,
            link.connect_count,
            "{} reconnected to {peer}",
            api.0.display()
        );
    }
    for (api, head, peer) in [(&node1, head1, &st2.peer_id), (&node2, head2, &st1.peer_id)] {
        let batch = api.events_after(head).await?;
        assert!(!batch.resync, "the event log of {} was reset", api.0.display());
        let drops: Vec<_> = batch
            .events
            .iter()
            .filter(|e| matches!(&e.event, Event::PeerDisconnected { peer_id, .. } | Event::PeerConnected { peer_id, .. } if peer_id == peer))
            .collect();
        assert!(
            drops.is_empty(),
            "{} saw the link to {peer} change during the reload: {drops:?}",
            api.0.display()
        );
    }

    // Ctrl-C: everything stops, nothing is left, the sockets are gone.
    dev.signal(Signal::SIGINT)?;
    let st = dev.wait_exit(STOP_TIMEOUT).await?;
    println!("dev.sh exited with {st} after SIGINT");
    if !(st.code() == Some(130) || st.signal() == Some(libc_sigint())) {
        bail!(
            "dev.sh should exit 130 after SIGINT, got {st}; output:\n{}",
            dev.log_tail()
        );
    }
    wait_for(
        Duration::from_secs(10),
        "every process started by dev.sh to be gone",
        || {
            let left = dev.processes();
            async move { left.is_empty() }
        },
    )
    .await
    .with_context(|| format!("left behind: {:?}", dev.processes()))?;
    assert!(
        !sock1.exists() && !sock2.exists(),
        "sockets left behind in {}",
        run.display()
    );
    Ok(())
}

fn libc_sigint() -> i32 {
    Signal::SIGINT as i32
}

/// `dev.sh --paths` in a checkout at `root`, as `key=value` pairs.
fn dev_sh_paths(root: &std::path::Path, runtime_dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let script = root.join("scripts/dev.sh");
    std::fs::create_dir_all(root.join("scripts"))?;
    std::fs::copy(firma_tests::bins::workspace_root().join("scripts/dev.sh"), &script)?;
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--paths")
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env_remove("FIRMA_WEB_LISTEN")
        .output()?;
    if !out.status.success() {
        bail!("dev.sh --paths failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect())
}

/// Sockets live in the checkout's dev-state when the path fits a Unix socket address (107
/// bytes), and in a short per-checkout directory under the runtime dir when it does not.
#[test]
fn dev_sh_socket_paths_fit_the_unix_limit() -> anyhow::Result<()> {
    let base = tempfile::Builder::new().prefix("firma-ops-").tempdir()?;
    let runtime = base.path().join("rt");
    let value = |paths: &[(String, String)], key: &str| {
        paths
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };

    let short = base.path().join("short");
    let paths = dev_sh_paths(&short, &runtime)?;
    assert_eq!(value(&paths, "run"), short.join("dev-state/run").to_string_lossy());
    assert_eq!(value(&paths, "web"), "http://127.0.0.1:8080/");

    let long = base.path().join("a".repeat(60)).join("b".repeat(40));
    let paths = dev_sh_paths(&long, &runtime)?;
    assert_eq!(value(&paths, "state"), long.join("dev-state").to_string_lossy());
    for key in ["node1_socket", "node2_socket"] {
        let socket = value(&paths, key);
        assert!(
            socket.starts_with(&*runtime.to_string_lossy()),
            "{key} = {socket}: not under the runtime dir"
        );
        assert!(socket.len() <= 107, "{key} = {socket}: {} bytes", socket.len());
    }
    // The same checkout always gets the same fallback directory.
    assert_eq!(dev_sh_paths(&long, &runtime)?, paths);
    Ok(())
}
