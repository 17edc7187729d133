//! Two network namespaces joined by a veth pair, so that daemons can run mDNS against each other
//! without a single multicast packet in the machine's own namespace. The addresses (10.x) exist
//! only on the veth ends inside the namespaces. Dropping a [`NetnsPair`] deletes both namespaces
//! (and with them the veth pair), also when the test failed.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One end: a namespace, its veth and its address.
#[derive(Debug, Clone)]
pub struct NetnsEnd {
    pub ns: String,
    pub veth: String,
    pub addr: String,
}

impl NetnsEnd {
    /// The command prefix that runs a program inside this namespace (it execs the program, so
    /// the child's pid is the program's own).
    pub fn wrapper(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }
}

pub struct NetnsPair {
    pub a: NetnsEnd,
    pub b: NetnsEnd,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetnsPair {
    /// Create the pair, or `Ok(None)` when this machine cannot (not root, no `ip`, no namespace
    /// support): the caller then returns from its test. The reason goes through
    /// [`crate::skip::skip`], so under CI it is an error instead.
    pub fn create() -> anyhow::Result<Option<NetnsPair>> {
        if !nix::unistd::geteuid().is_root() {
            crate::skip::skip("network namespaces need root")?;
            return Ok(None);
        }
        // pid + counter: unique across concurrently running test processes; veth names stay <= 15 chars.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let a = NetnsEnd {
            ns: format!("firma-e2e-{tag}-a"),
            veth: format!("fv{tag}a"),
            addr: "10.250.0.1".into(),
        };
        let b = NetnsEnd {
            ns: format!("firma-e2e-{tag}-b"),
            veth: format!("fv{tag}b"),
            addr: "10.250.0.2".into(),
        };
        if let Err(e) = ip(&["netns", "add", &a.ns]) {
            crate::skip::skip(format_args!("cannot create a network namespace here: {e:#}"))?;
            return Ok(None);
        }
        // From here on the guard exists, so any failure below still removes what was made.
        let pair = NetnsPair { a, b };
        ip(&["netns", "add", &pair.b.ns])?;
        let (a, b) = (&pair.a, &pair.b);
        ip(&[
            "-n", &a.ns, "link", "add", &a.veth, "type", "veth", "peer", "name", &b.veth, "netns", &b.ns,
        ])?;
        for end in [a, b] {
            ip(&["-n", &end.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &end.ns,
                "addr",
                "add",
                &format!("{}/30", end.addr),
                "dev",
                &end.veth,
            ])?;
            ip(&["-n", &end.ns, "link", "set", &end.veth, "multicast", "on"])?;
            ip(&["-n", &end.ns, "link", "set", &end.veth, "up"])?;
        }
        Ok(Some(pair))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for end in [&self.a, &self.b] {
            if let Err(e) = ip(&["netns", "del", &end.ns]) {
                eprintln!("could not delete network namespace {}: {e:#}", end.ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netns_list() -> String {
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn pair_is_wired_and_removed_on_drop() -> anyhow::Result<()> {
        let Some(pair) = NetnsPair::create()? else {
            return Ok(());
        };
        let names = [pair.a.ns.clone(), pair.b.ns.clone()];
        for end in [&pair.a, &pair.b] {
            let out = Command::new("ip")
                .args(["-n", &end.ns, "-4", "addr", "show", "dev", &end.veth])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            anyhow::ensure!(
                text.contains(&format!("{}/30", end.addr)),
                "{} lacks its address: {text}",
                end.veth
            );
            anyhow::ensure!(
                text.contains("MULTICAST") && text.contains(",UP"),
                "{} not up with multicast: {text}",
                end.veth
            );
        }
        // Nothing of it shows in the machine's own namespace.
        let host = Command::new("ip").args(["link", "show"]).output()?;
        anyhow::ensure!(
            !String::from_utf8_lossy(&host.stdout).contains(&pair.a.veth),
            "veth leaked into the host namespace"
        );
        anyhow::ensure!(
            names.iter().all(|n| netns_list().contains(n.as_str())),
            "namespaces missing: {}",
            netns_list()
        );
        drop(pair);
        anyhow::ensure!(
            names.iter().all(|n| !netns_list().contains(n.as_str())),
            "namespaces left behind: {}",
            netns_list()
        );
        Ok(())
    }
}
