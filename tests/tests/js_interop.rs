//! Wire compatibility with js-libp2p 2.x (what upstream Firma-Sign runs): TCP + Noise + Yamux,
//! identify and ping, both directions. The first test checks the js node alone, so a broken
//! js side is told apart from a broken daemon.

use std::time::Duration;

use anyhow::ensure;
use firma_tests::harness::CONNECT_TIMEOUT;
use firma_tests::js::JsNode;
use firma_tests::{Daemon, DaemonOpts, wait_for};
use serde_json::json;

const JS_AGENT: &str = "firma-js-interop/1.0.0";
const STEP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_nodes_ping_and_identify_each_other() -> anyhow::Result<()> {
    let mut x = JsNode::spawn(JS_AGENT).await?;
    let mut y = JsNode::spawn("firma-js-other/2.0.0").await?;
    let dialled = x.request(json!({"cmd": "dial", "addr": y.addr()}), STEP).await?;
    ensure!(dialled["peer_id"] == y.peer_id.as_str(), "dialled {dialled}");
    let ping = x.request(json!({"cmd": "ping", "addr": y.addr()}), STEP).await?;
    ensure!(ping["rtt_ms"].is_number(), "ping answered {ping}");
    let yid = y.peer_id.clone();
    let seen = x
        .wait_line(STEP, "x to identify y", |v| {
            v["event"] == "identify" && v["peer_id"] == yid.as_str()
        })
        .await?;
    ensure!(seen["agent"] == "firma-js-other/2.0.0", "x saw agent {}", seen["agent"]);
    let xid = x.peer_id.clone();
    let seen = y
        .wait_line(STEP, "y to identify x", |v| {
            v["event"] == "identify" && v["peer_id"] == xid.as_str()
        })
        .await?;
    ensure!(seen["agent"] == JS_AGENT, "y saw agent {}", seen["agent"]);
    Ok(())
}

fn daemon_opts(name: &str) -> DaemonOpts {
    let mut o = DaemonOpts::named(name);
    // Ping often, so that the daemon's RTT of the js peer shows up within the test.
    o.env.push(("FIRMA_NETWORK__PING_INTERVAL".into(), "300ms".into()));
    o
}

/// The daemon's view of the js node: identified as js, with ping measured.
async fn daemon_sees_js(d: &Daemon, js: &JsNode) -> anyhow::Result<()> {
    wait_for(
        STEP,
        "the daemon to identify the js node and measure its RTT",
        || async {
            d.peer(&js.peer_id)
                .await
                .is_ok_and(|p| p.connected && p.agent.as_deref() == Some(JS_AGENT) && p.last_rtt_us.is_some())
        },
    )
    .await
    .map_err(|e| e.context(format!("daemon log:\n{}", d.log_tail())))?;
    let p = d.peer(&js.peer_id).await?;
    ensure!(
        p.protocols.iter().any(|x| x == "/ipfs/ping/1.0.0"),
        "js protocols seen by the daemon: {:?}",
        p.protocols
    );
    Ok(())
}

/// The js node's view of the daemon: identified as firma-transportd, and pingable.
async fn js_sees_daemon(js: &mut JsNode, d: &Daemon) -> anyhow::Result<()> {
    let id = d.peer_id().to_owned();
    let seen = js
        .wait_line(STEP, "js to identify the daemon", |v| {
            v["event"] == "identify" && v["peer_id"] == id.as_str()
        })
        .await?;
    ensure!(
        seen["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("firma-transportd/")),
        "js saw agent {} from the daemon",
        seen["agent"]
    );
    ensure!(
        seen["protocols"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p == "/ipfs/ping/1.0.0")),
        "daemon protocols seen by js: {}",
        seen["protocols"]
    );
    let ping = js.request(json!({"cmd": "ping", "peer_id": id}), STEP).await?;
    ensure!(ping["rtt_ms"].is_number(), "js ping of the daemon answered {ping}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_dials_js_node() -> anyhow::Result<()> {
    let d = Daemon::spawn(daemon_opts("to-js")).await?;
    let mut js = JsNode::spawn(JS_AGENT).await?;
    let out = d.connect(js.addr()).await?;
    ensure!(
        out.peer_id == js.peer_id,
        "daemon reached {} instead of the js node",
        out.peer_id
    );
    d.wait_connected(&js.peer_id, CONNECT_TIMEOUT).await?;
    daemon_sees_js(&d, &js).await?;
    js_sees_daemon(&mut js, &d).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_node_dials_daemon() -> anyhow::Result<()> {
    let d = Daemon::spawn(daemon_opts("from-js")).await?;
    let mut js = JsNode::spawn(JS_AGENT).await?;
    let addr = d.tcp_addr().await?;
    let dialled = js.request(json!({"cmd": "dial", "addr": addr}), STEP).await?;
    ensure!(dialled["peer_id"] == d.peer_id(), "js reached {dialled}");
    d.wait_connected(&js.peer_id, CONNECT_TIMEOUT).await?;
    js_sees_daemon(&mut js, &d).await?;
    daemon_sees_js(&d, &js).await?;
    Ok(())
}
