//! DNS multiaddrs: `/dns4` names and a `/dnsaddr` bootstrap entry resolve through the system's
//! resolver. Everything happens inside two network namespaces joined by a veth pair: a dnsmasq
//! in namespace `a` serves the test's names on the veth address, and namespace `b` gets its own
//! resolv.conf and hosts pointing there (`ip netns exec` bind-mounts `/etc/netns/NS/*` over
//! `/etc/*`), so not one query leaves the namespaces.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use firma_tests::netns::{NetnsEnd, NetnsPair};
use firma_tests::wait::wait_for;
use firma_tests::{Daemon, DaemonOpts};

const DEADLINE: Duration = Duration::from_secs(30);
/// A name only the test's dnsmasq knows (`.test` is reserved for testing, RFC 6761).
const NODE_NAME: &str = "node-a.firma.test";
const DNSADDR_NAME: &str = "boot.firma.test";

/// dnsmasq in a namespace, serving fixed records; killed and reaped on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(end: &NetnsEnd, records: &[String]) -> anyhow::Result<Dnsmasq> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &end.ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
        ])
        .args([
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--port=53",
        ])
        .arg(format!("--listen-address={}", end.addr))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .context("starting dnsmasq (Debian: apt-get install dnsmasq-base; scripts/test.sh installs it)")?;
        Ok(Dnsmasq(child))
    }

    /// Until something listens on UDP port 53 at `end.addr` inside the namespace.
    async fn wait_listening(&mut self, end: &NetnsEnd) -> anyhow::Result<()> {
        let what = format!("dnsmasq to listen on {}:53 in {}", end.addr, end.ns);
        let listening = wait_for(DEADLINE, &what, || async {
            Command::new("ip")
                .args(["netns", "exec", &end.ns, "ss", "-Hlun", "sport", "= :53"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&end.addr))
        })
        .await;
        ensure!(self.0.try_wait()?.is_none(), "dnsmasq exited at start");
        listening.map(drop)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/etc/netns/NS/`: the resolver files `ip netns exec` mounts over `/etc` in that namespace.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn write(ns: &str, files: &[(&str, String)]) -> anyhow::Result<NetnsEtc> {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = NetnsEtc(dir);
        for (name, text) in files {
            fs::write(guard.0.join(name), text).with_context(|| format!("writing {name} for {ns}"))?;
        }
        Ok(guard)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

fn port_of(addr: &str) -> anyhow::Result<&str> {
    addr.split("/tcp/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("no TCP port in {addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns4_and_dnsaddr_multiaddrs_resolve_through_the_system_resolver() -> anyhow::Result<()> {
    // Declared first, dropped last: daemons and dnsmasq go before the namespaces do.
    let Some(pair) = NetnsPair::create()? else {
        return Ok(());
    };
    let etc = NetnsEtc::write(
        &pair.b.ns,
        &[
            ("resolv.conf", format!("nameserver {}\n", pair.a.addr)),
            ("hosts", "127.0.0.1 localhost\n".to_owned()),
        ],
    )?;
    let in_ns = |name: &str, end: &NetnsEnd, listen: String| DaemonOpts {
        wrapper: end.wrapper(),
        listen: vec![listen],
        ..DaemonOpts::named(name)
    };
    let a = Daemon::spawn(in_ns("dns-a", &pair.a, format!("/ip4/{}/tcp/0", pair.a.addr))).await?;
    let a_port = port_of(&a.tcp_addr().await?)?.to_owned();
    let mut dns = Dnsmasq::start(
        &pair.a,
        &[
            format!("--address=/{NODE_NAME}/{}", pair.a.addr),
            format!(
                "--txt-record=_dnsaddr.{DNSADDR_NAME},dnsaddr=/ip4/{}/tcp/{a_port}/p2p/{}",
                pair.a.addr,
                a.peer_id()
            ),
        ],
    )?;
    dns.wait_listening(&pair.a).await?;

    // A `/dnsaddr` bootstrap entry (the README's example shape): b finds a through the TXT record.
    let bootstrap = format!(
        "[network]\nbootstrap = [\"/dnsaddr/{DNSADDR_NAME}/p2p/{}\"]\n",
        a.peer_id()
    );
    let b = Daemon::spawn(DaemonOpts {
        dht: true,
        config: Some(bootstrap),
        ..in_ns("dns-b", &pair.b, "/ip4/127.0.0.1/tcp/0".to_owned())
    })
    .await?;
    b.wait_connected(a.peer_id(), DEADLINE).await?;

    // `/dns4/localhost/...`: from the hosts file.
    let c = Daemon::spawn(in_ns("dns-c", &pair.b, "/ip4/127.0.0.1/tcp/0".to_owned())).await?;
    let c_port = port_of(&c.tcp_addr().await?)?.to_owned();
    let out = b
        .connect(&format!("/dns4/localhost/tcp/{c_port}/p2p/{}", c.peer_id()))
        .await?;
    ensure!(
        out.peer_id == c.peer_id(),
        "/dns4/localhost reached {} instead of c",
        out.peer_id
    );
    b.wait_connected(c.peer_id(), DEADLINE).await?;

    // `/dns4/<name>/...` that only the DNS server knows, given without a peer id.
    let out = c.connect(&format!("/dns4/{NODE_NAME}/tcp/{a_port}")).await?;
    ensure!(
        out.peer_id == a.peer_id(),
        "/dns4/{NODE_NAME} reached {} instead of a",
        out.peer_id
    );
    c.wait_connected(a.peer_id(), DEADLINE).await?;

    // A name nobody serves fails with an error, and the daemon stays up.
    let err = c
        .connect(&format!("/dns4/missing.firma.test/tcp/{a_port}"))
        .await
        .err()
        .context("dialling a name no server knows succeeded")?;
    ensure!(
        c.status().await.is_ok(),
        "c stopped answering after a failed resolution: {err:#}"
    );
    drop((a, b, c, dns, etc));
    Ok(())
}
