//! `firmactl doctor`: the troubleshooting guide as a command. Each check prints what it found
//! and, when something is wrong, the exact fix. It never needs the daemon to be up: finding out
//! why it is not is the point.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use firma_ipc::client::{self, ConnectError};
use firma_ipc::types::{Role, Status, StoreHealth};
use serde::Serialize;

use crate::exit::CliError;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The daemon's P2P port to check when the daemon cannot be asked (default listeners use 9092).
    #[arg(long, default_value_t = 9092, value_name = "PORT")]
    pub p2p_port: u16,
    /// firma-web's address to check.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub web: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One finding: what was checked, what was found, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Ok,
        message: message.into(),
        fix: None,
    }
}

fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Warn,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        level: Level::Fail,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

pub async fn run(socket: &Path, timeout: Duration, out: Output, args: DoctorArgs) -> Result<(), CliError> {
    let mut findings = socket_file(socket);
    let status = match findings.iter().any(|f| f.level == Level::Fail && f.check == "socket") {
        true => None,
        false => {
            let (f, status) = daemon(socket, timeout).await;
            findings.extend(f);
            status
        }
    };
    let web = args.web;
    let p2p_ports = p2p_ports(status.as_ref(), args.p2p_port);
    let running = status.is_some();
    let blocking = tokio::task::spawn_blocking(move || {
        let listeners = Listeners::scan();
        let mut f = Vec::new();
        for port in p2p_ports {
            f.push(port_check(
                &listeners,
                "p2p port",
                port,
                "firma-transportd",
                running,
                p2p_fix(port),
            ));
        }
        f.push(port_check(
            &listeners,
            "web port",
            web.port(),
            "firma-web",
            true,
            format!("start firma-web on another address (firma-web --listen 127.0.0.1:<port>), or stop the process using {web}"),
        ));
        f.push(mdns());
        f.push(clock());
        f
    });
    findings.extend(blocking.await.map_err(std::io::Error::other)?);
    let failed = findings.iter().any(|f| f.level == Level::Fail);
    out.emit(&findings, |f| render(f))?;
    if failed {
        return Err(CliError::Doctor {
            failures: findings.iter().filter(|f| f.level == Level::Fail).count(),
        });
    }
    Ok(())
}

fn p2p_fix(port: u16) -> String {
    format!(
        "stop the process using port {port}, or give the daemon another port: firma-transportd --listen /ip4/0.0.0.0/tcp/<port> (or network.listen in the config; --dev picks a free port)"
    )
}

/// The socket file itself: there, a socket, the right modes.
fn socket_file(path: &Path) -> Vec<Finding> {
    let start = format!(
        "start the daemon: firma-transportd --socket {} (or: systemctl start firma-transportd)",
        path.display()
    );
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![fail(
                "socket",
                format!(
                    "no control socket at {}: the daemon is not running there",
                    path.display()
                ),
                start,
            )];
        }
        Err(e) => {
            return vec![fail(
                "socket",
                format!("cannot inspect {}: {e}", path.display()),
                "run as root or as a member of the control group",
            )];
        }
    };
    if !meta.file_type().is_socket() {
        return vec![fail(
            "socket",
            format!("{} exists but is not a socket", path.display()),
            format!("remove it (rm {}) and restart the daemon", path.display()),
        )];
    }
    let mut f = Vec::new();
    let mode = meta.permissions().mode() & 0o777;
    f.push(if mode == 0o660 {
        ok(
            "socket permissions",
            format!(
                "{} is mode 0660, owner uid {} gid {}",
                path.display(),
                meta.uid(),
                meta.gid()
            ),
        )
    } else if mode & 0o007 != 0 {
        fail(
            "socket permissions",
            format!(
                "{} is mode {mode:04o}: anyone on this machine can reach the control socket's door",
                path.display()
            ),
            format!(
                "chmod 660 {} (the daemon creates it 0660; something changed it)",
                path.display()
            ),
        )
    } else {
        warn(
            "socket permissions",
            format!(
                "{} is mode {mode:04o}, expected 0660: members of the control group may be locked out",
                path.display()
            ),
            format!("chmod 660 {}", path.display()),
        )
    });
    if let Some(dir) = path.parent()
        && let Ok(dm) = std::fs::metadata(dir)
    {
        let dmode = dm.permissions().mode() & 0o777;
        if dmode & 0o002 != 0 {
            f.push(fail(
                "socket directory",
                format!("{} is mode {dmode:04o}: anyone may replace the socket", dir.display()),
                format!("chmod 750 {}", dir.display()),
            ));
        } else {
            f.push(ok("socket directory", format!("{} is mode {dmode:04o}", dir.display())));
        }
    }
    f
}

/// Reachability, API version, and the daemon's own view of its health.
async fn daemon(path: &Path, timeout: Duration) -> (Vec<Finding>, Option<Status>) {
    let conn = match tokio::time::timeout(timeout, client::connect(path, "firmactl-doctor", Role::Operator)).await {
        Err(_) => {
            return (
                vec![fail(
                    "daemon",
                    format!("the daemon at {} did not answer within {timeout:?}", path.display()),
                    "it may be overloaded or stuck: check its logs (journalctl -u firma-transportd) and restart it",
                )],
                None,
            );
        }
        Ok(Err(e)) => {
            let fix = match &e {
                ConnectError::NotRunning { .. } => format!(
                    "the socket is stale: start the daemon (firma-transportd --socket {}); it replaces a stale socket by itself",
                    path.display()
                ),
                ConnectError::Refused { .. } if !e.is_denied() => {
                    "the daemon is at a connection limit: close idle clients, or raise the [control] limit the message names".to_owned()
                }
                ConnectError::PermissionDenied { .. } | ConnectError::Refused { .. } | ConnectError::Closed { .. } => {
                    "run as root, as the daemon's user, or add yourself to its control group: sudo usermod -aG firma $USER (then log in again)".to_owned()
                }
                ConnectError::VersionMismatch { .. } => "install matching versions of firma-transportd and firmactl".to_owned(),
                ConnectError::Io { .. } => "check the daemon's logs (journalctl -u firma-transportd)".to_owned(),
                ConnectError::ForeignServer { .. } => {
                    "do not use this socket: stop whoever serves it, and start firma-transportd on a directory of its own".to_owned()
                }
            };
            return (vec![fail("daemon", e.to_string(), fix)], None);
        }
        Ok(Ok(c)) => c,
    };
    let mut f = vec![ok(
        "daemon",
        format!(
            "reachable at {}: firma-transportd {} (control API {}), peer {}",
            path.display(),
            conn.hello.daemon_version,
            conn.hello.api_version,
            conn.hello.peer_id
        ),
    )];
    let status = match conn.client.status(client::ctx(timeout)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            f.push(fail("daemon status", e.message, "check the daemon's logs"));
            return (f, None);
        }
        Err(e) => {
            f.push(fail("daemon status", e.to_string(), "check the daemon's logs"));
            return (f, None);
        }
    };
    f.push(match status.store.health {
        StoreHealth::Healthy => ok(
            "store",
            format!("healthy, {} of {} bytes of the map used", status.store.used_bytes, status.store.map_size_bytes),
        ),
        StoreHealth::Unhealthy => fail(
            "store",
            format!("unhealthy: {}", status.store.detail.clone().unwrap_or_default()),
            "the daemon refuses writes: stop it, move the state directory's store/ aside or restore a backup, start it again",
        ),
    });
    f.push(disk(status.store.disk_free_bytes));
    f.push(if status.listen_addrs.is_empty() {
        warn(
            "listeners",
            "the daemon listens nowhere: peers cannot dial it",
            "set network.listen (or --listen) and restart",
        )
    } else {
        ok("listeners", status.listen_addrs.join(", "))
    });
    (f, Some(status))
}

/// Below this much free space on the store's file system, doctor warns: a received document
/// or the store's next commit may not fit.
const LOW_DISK: u64 = 1 << 30;

fn disk(free: Option<u64>) -> Finding {
    const FIX: &str = "free space on the file system holding the daemon's state dir, or move state_dir there \
                       (received documents and the store stop being written when it is full; both resume once there is room)";
    match free {
        None => warn("disk", "the daemon could not read its file system's free space", FIX),
        Some(n) if n < LOW_DISK => warn(
            "disk",
            format!(
                "{} free on the file system holding the daemon's store",
                crate::format::bytes(n)
            ),
            FIX,
        ),
        Some(n) => ok(
            "disk",
            format!("{} free for the daemon's state", crate::format::bytes(n)),
        ),
    }
}

/// TCP ports the daemon listens on, from its status, or the default one.
fn p2p_ports(status: Option<&Status>, fallback: u16) -> Vec<u16> {
    let mut ports: Vec<u16> = status
        .map(|s| {
            s.listen_addrs
                .iter()
                .filter_map(|a| {
                    let mut parts = a.split('/');
                    while let Some(p) = parts.next() {
                        if p == "tcp" {
                            return parts.next().and_then(|n| n.parse().ok());
                        }
                    }
                    None
                })
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        ports.push(fallback);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Listening TCP sockets and the processes that hold them, read from /proc.
struct Listeners {
    entries: Vec<(SocketAddr, Option<(i32, String)>)>,
}

impl Listeners {
    fn scan() -> Self {
        use procfs::net::TcpState;
        let mut sockets = Vec::new();
        for table in [procfs::net::tcp(), procfs::net::tcp6()].into_iter().flatten() {
            for e in table {
                if e.state == TcpState::Listen {
                    sockets.push((e.local_address, e.inode));
                }
            }
        }
        let mut owners = std::collections::HashMap::new();
        if let Ok(procs) = procfs::process::all_processes() {
            for p in procs.flatten() {
                let Ok(fds) = p.fd() else { continue };
                for fd in fds.flatten() {
                    if let procfs::process::FDTarget::Socket(inode) = fd.target {
                        let name = p.stat().map(|s| s.comm).unwrap_or_else(|_| "?".to_owned());
                        owners.entry(inode).or_insert((p.pid, name));
                    }
                }
            }
        }
        Self {
            entries: sockets
                .into_iter()
                .map(|(addr, inode)| (addr, owners.get(&inode).cloned()))
                .collect(),
        }
    }

    fn holders(&self, port: u16) -> Vec<(SocketAddr, Option<(i32, String)>)> {
        self.entries.iter().filter(|(a, _)| a.port() == port).cloned().collect()
    }
}

fn port_check(l: &Listeners, check: &'static str, port: u16, ours: &str, expect_ours: bool, fix: String) -> Finding {
    let holders = l.holders(port);
    if holders.is_empty() {
        return if expect_ours && check == "p2p port" {
            warn(
                check,
                format!("nothing listens on TCP port {port}"),
                "start the daemon, or check network.listen",
            )
        } else {
            ok(check, format!("TCP port {port} is free"))
        };
    }
    // comm is cut to 15 characters by the kernel.
    let short = &ours[..ours.len().min(15)];
    let describe = |(addr, owner): &(SocketAddr, Option<(i32, String)>)| match owner {
        Some((pid, name)) => format!("{name} (pid {pid}) on {addr}"),
        None => format!("a process this user cannot see on {addr}"),
    };
    let foreign: Vec<_> = holders
        .iter()
        .filter(|(_, o)| o.as_ref().is_none_or(|(_, n)| n != short))
        .collect();
    if foreign.is_empty() {
        ok(check, format!("TCP port {port} is held by {}", describe(&holders[0])))
    } else {
        let who = foreign.iter().map(|h| describe(h)).collect::<Vec<_>>().join(", ");
        fail(check, format!("TCP port {port} is used by {who}, not by {ours}"), fix)
    }
}

/// mDNS needs an interface that is up, not loopback, and multicast-capable.
fn mdns() -> Finding {
    use nix::net::if_::InterfaceFlags as F;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return warn(
            "mdns",
            "could not list network interfaces",
            "check that /proc and /sys are readable",
        );
    };
    let mut names: Vec<String> = addrs
        .filter(|a| a.flags.contains(F::IFF_UP | F::IFF_MULTICAST) && !a.flags.contains(F::IFF_LOOPBACK))
        .map(|a| a.interface_name)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        warn(
            "mdns",
            "no interface is up with multicast: mDNS discovery cannot find peers on the local network",
            "connect a network interface, or connect peers explicitly (firmactl connect MULTIADDR) and pin them",
        )
    } else {
        ok("mdns", format!("multicast-capable interfaces: {}", names.join(", ")))
    }
}

/// Signatures and receipts carry times: a clock far off makes them look forged or stale.
fn clock() -> Finding {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 2025-01-01: anything earlier is a clock that was never set.
    if now < 1_735_689_600 {
        return fail(
            "clock",
            "the system clock is before 2025: it was never set",
            "enable time synchronisation: timedatectl set-ntp true",
        );
    }
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    if synced {
        ok("clock", "set, and synchronised by systemd-timesyncd")
    } else {
        ok(
            "clock",
            "set (no systemd-timesyncd marker; make sure NTP or chrony keeps it right)",
        )
    }
}

fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        s.push_str(&format!("[{tag}] {:<18} {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("       {:<18} fix: {fix}\n", ""));
        }
    }
    let fails = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = findings.iter().filter(|f| f.level == Level::Warn).count();
    s.push_str(&format!("\n{fails} problem(s), {warns} warning(s)"));
    s
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn missing_socket_says_how_to_start_the_daemon() {
        let f = socket_file(Path::new("/nonexistent/firma/t.sock"));
        assert_eq!(f[0].level, Level::Fail);
        assert!(
            f[0].fix
                .as_deref()
                .unwrap_or("")
                .contains("firma-transportd --socket /nonexistent/firma/t.sock")
        );
    }

    #[test]
    fn little_free_disk_is_a_warning_that_says_where_and_what_to_do() {
        let low = disk(Some(100 << 20));
        assert_eq!(low.level, Level::Warn);
        assert!(low.message.contains("100.0 MiB"), "{}", low.message);
        assert!(low.fix.as_deref().unwrap_or("").contains("state_dir"));
        assert_eq!(disk(None).level, Level::Warn);
        assert_eq!(disk(Some(50 << 30)).level, Level::Ok);
    }

    #[test]
    fn world_open_socket_is_a_failure_with_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let f = socket_file(&p);
        let perm = f.iter().find(|f| f.check == "socket permissions").unwrap();
        assert_eq!(perm.level, Level::Fail);
        assert!(perm.fix.as_deref().unwrap().contains("chmod 660"));
    }

    #[test]
    fn a_port_held_by_another_program_names_it() {
        let l = std::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let scan = Listeners::scan();
        let f = port_check(&scan, "web port", port, "firma-web", true, "fix it".into());
        assert_eq!(f.level, Level::Fail, "{f:?}");
        assert!(
            f.message.contains(&format!("pid {}", std::process::id())),
            "{}",
            f.message
        );
    }

    #[test]
    fn tcp_ports_come_from_listen_addrs() {
        let s = Status {
            peer_id: "p".into(),
            version: "0".into(),
            api_version: 1,
            uptime_ms: 0,
            listen_addrs: vec![
                "/ip4/127.0.0.1/tcp/4001/p2p/x".into(),
                "/ip4/127.0.0.1/udp/4001/quic-v1".into(),
            ],
            connected_peers: 0,
            known_peers: 0,
            pinned_peers: 0,
            discovery: firma_ipc::types::DiscoveryState {
                mdns_enabled: false,
                dht_enabled: false,
            },
            store: firma_ipc::types::StoreStatus {
                health: StoreHealth::Healthy,
                detail: None,
                map_size_bytes: 0,
                used_bytes: 0,
                disk_free_bytes: None,
            },
            event_head: 0,
        };
        assert_eq!(p2p_ports(Some(&s), 9092), vec![4001]);
        assert_eq!(p2p_ports(None, 9092), vec![9092]);
    }
}
