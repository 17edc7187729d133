//! The service definitions: systemd units (accepted by `systemd-analyze verify`, the daemon's
//! rated at an exposure of 2.0 or lower by `systemd-analyze security`, carrying the settings the
//! design asks for), sysusers.d/tmpfiles.d (applied to a scratch root), and the launchd plists
//! (parsed, with their keys).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use firma_tests::bins;
use firma_tests::ops::{parse_unit, read_plist, unit_values};
use serde_json::Value;

/// The exposure the daemon's unit must not exceed (security-defaults.md).
const MAX_EXPOSURE: f64 = 2.0;
const UNITS: [&str; 4] = [
    "firma-transportd.service",
    "firma-transportd.socket",
    "firma-web.service",
    "firma-web.socket",
];

fn systemd_dir() -> PathBuf {
    bins::workspace_root().join("systemd")
}

fn launchd_dir() -> PathBuf {
    bins::workspace_root().join("launchd")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output().with_context(|| {
        format!(
            "running {:?} (systemd-analyze, systemd-sysusers and systemd-tmpfiles come from the `systemd` package)",
            cmd
        )
    })
}

/// The units copied to `dir` with ExecStart naming the built binaries: `verify` checks that the
/// programs exist, and nothing is installed in /usr/bin here.
fn units_with_built_binaries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let daemon = bins::daemon()?;
    let web = bins::bin("firma-web")?;
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = read(&systemd_dir().join(unit))?
            .replace("/usr/bin/firma-transportd", &daemon.to_string_lossy())
            .replace("/usr/bin/firma-web", &web.to_string_lossy());
        let path = dir.join(unit);
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    Ok(paths)
}

/// `systemd-analyze verify` of `units`: Ok when it accepts them without a word about them.
fn verify(units: &[PathBuf]) -> anyhow::Result<()> {
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .args(units))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are warnings with exit code 0: any line naming our units fails.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("firma")).collect();
    if !out.status.success() || !about_ours.is_empty() {
        bail!("systemd-analyze verify refused the units ({}):\n{stderr}", out.status);
    }
    Ok(())
}

#[test]
fn systemd_units_pass_verify() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let units = units_with_built_binaries(dir.path())?;
    verify(&units)?;

    // The check can fail: a unit with a typo in a key is refused.
    let broken = dir.path().join("firma-transportd.service");
    let text = read(&broken)?.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    std::fs::write(&broken, text)?;
    let err = verify(&units).expect_err("verify accepted an unknown key");
    assert!(err.to_string().contains("NoNewPrivilege"), "{err:#}");
    Ok(())
}

/// The "Overall exposure level for UNIT: N.N ..." figure of `systemd-analyze security --offline=yes`.
fn exposure(unit: &Path) -> anyhow::Result<f64> {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| {
            format!(
                "no exposure figure for {}:\n{stdout}\n{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let figure = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next());
    figure
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("cannot read the figure in {line:?}"))
}

#[test]
fn daemon_unit_exposure_is_at_most_2() -> anyhow::Result<()> {
    let daemon = exposure(&systemd_dir().join("firma-transportd.service"))?;
    let web = exposure(&systemd_dir().join("firma-web.service"))?;
    println!("systemd-analyze security exposure: firma-transportd.service {daemon:.1}, firma-web.service {web:.1}");
    assert!(
        daemon <= MAX_EXPOSURE,
        "firma-transportd.service is rated {daemon}, above {MAX_EXPOSURE}"
    );
    assert!(
        web <= MAX_EXPOSURE,
        "firma-web.service is rated {web}, above {MAX_EXPOSURE}"
    );
    Ok(())
}

fn unit(name: &str) -> anyhow::Result<Vec<firma_tests::ops::UnitEntry>> {
    Ok(parse_unit(&read(&systemd_dir().join(name))?))
}

/// `section`/`key` has exactly the one value `want`.
fn assert_one(entries: &[firma_tests::ops::UnitEntry], unit: &str, section: &str, key: &str, want: &str) {
    assert_eq!(
        unit_values(entries, section, key),
        vec![want],
        "{unit}: [{section}] {key}"
    );
}

#[test]
fn daemon_unit_carries_the_service_defaults() -> anyhow::Result<()> {
    let name = "firma-transportd.service";
    let u = unit(name)?;
    for (key, want) in [
        ("Type", "notify"),
        ("User", "firma"),
        ("Group", "firma"),
        ("StateDirectory", "firma"),
        ("RuntimeDirectory", "firma"),
        ("RuntimeDirectoryMode", "0750"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_one(&u, name, "Service", key, want);
    }
    assert_eq!(
        unit_values(&u, "Service", "SystemCallFilter").first(),
        Some(&"@system-service"),
        "{name}"
    );
    let watchdog = unit_values(&u, "Service", "WatchdogSec");
    assert!(
        watchdog.len() == 1 && watchdog[0] != "0",
        "{name}: WatchdogSec must be set, got {watchdog:?}"
    );
    for limit in ["LimitNOFILE", "TasksMax", "MemoryMax"] {
        assert_eq!(
            unit_values(&u, "Service", limit).len(),
            1,
            "{name}: resource limit {limit}"
        );
    }
    let exec = unit_values(&u, "Service", "ExecStart").concat();
    assert!(
        exec.contains("--socket %t/firma/transportd.sock") && exec.contains("--state-dir %S/firma"),
        "{exec}"
    );
    Ok(())
}

#[test]
fn sockets_and_web_unit_carry_permissions_and_reload() -> anyhow::Result<()> {
    let name = "firma-transportd.socket";
    let s = unit(name)?;
    for (key, want) in [
        ("ListenStream", "/run/firma/transportd.sock"),
        ("SocketMode", "0660"),
        ("SocketGroup", "firma"),
        ("DirectoryMode", "0750"),
    ] {
        assert_one(&s, name, "Socket", key, want);
    }

    let name = "firma-web.service";
    let w = unit(name)?;
    for (key, want) in [
        ("User", "firma-web"),
        ("SupplementaryGroups", "firma"),
        ("ExecReload", "/bin/kill -USR2 $MAINPID"),
    ] {
        assert_one(&w, name, "Service", key, want);
    }
    assert_one(&w, name, "Unit", "Requires", "firma-web.socket");

    let name = "firma-web.socket";
    let ws = unit(name)?;
    let listen = unit_values(&ws, "Socket", "ListenStream");
    assert!(
        listen.len() == 1 && listen[0].starts_with("127.0.0.1:"),
        "{name}: loopback ListenStream, got {listen:?}"
    );
    Ok(())
}

/// sysusers.d and tmpfiles.d applied to a scratch root: the accounts, the control group
/// membership, and the directories with their owners and modes.
#[test]
fn sysusers_and_tmpfiles_make_accounts_and_directories() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("etc"))?;
    let sysusers = systemd_dir().join("sysusers.d/firma.conf");
    let out = run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(&sysusers))?;
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = read(&root.path().join("etc/passwd"))?;
    let group = read(&root.path().join("etc/group"))?;
    let id_of = |table: &str, name: &str| -> anyhow::Result<u32> {
        let line = table
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .with_context(|| format!("{name} missing:\n{table}"))?;
        line.split(':')
            .nth(2)
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("bad line {line}"))
    };
    let firma_uid = id_of(&passwd, "firma")?;
    let firma_gid = id_of(&group, "firma")?;
    let web_uid = id_of(&passwd, "firma-web")?;
    let control_group = group.lines().find(|l| l.starts_with("firma:")).unwrap_or_default();
    assert!(
        control_group
            .rsplit(':')
            .next()
            .is_some_and(|m| m.split(',').any(|m| m == "firma-web")),
        "{control_group}"
    );

    let tmpfiles = systemd_dir().join("tmpfiles.d/firma.conf");
    let out = run(Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(&tmpfiles))?;
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (dir, uid, gid, mode) in [
        ("run/firma", firma_uid, Some(firma_gid), 0o750),
        ("var/lib/firma", firma_uid, None, 0o700),
        ("var/lib/firma-web", web_uid, None, 0o700),
    ] {
        let meta = std::fs::metadata(root.path().join(dir)).with_context(|| format!("{dir} was not created"))?;
        assert_eq!(meta.uid(), uid, "owner of /{dir}");
        if let Some(gid) = gid {
            assert_eq!(meta.gid(), gid, "group of /{dir}");
        }
        assert_eq!(meta.mode() & 0o7777, mode, "mode of /{dir}");
    }
    Ok(())
}

fn key<'a>(plist: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(plist, |v, k| &v[*k])
}

#[test]
fn launchd_plists_parse_and_carry_their_keys() -> anyhow::Result<()> {
    let daemon = read_plist(&launchd_dir().join("com.firmachain.firma-transportd.plist"))?;
    let web = read_plist(&launchd_dir().join("com.firmachain.firma-web.plist"))?;
    for (p, label, program, user, group) in [
        (
            &daemon,
            "com.firmachain.firma-transportd",
            "firma-transportd",
            "firma",
            "firma",
        ),
        (&web, "com.firmachain.firma-web", "firma-web", "firma-web", "firma"),
    ] {
        assert_eq!(p["Label"], label);
        let argv0 = key(p, &["ProgramArguments"])[0].as_str().unwrap_or_default();
        assert!(
            argv0.ends_with(&format!("/{program}")),
            "{label}: ProgramArguments[0] = {argv0}"
        );
        assert_eq!(p["UserName"], user, "{label}");
        assert_eq!(p["GroupName"], group, "{label}");
        // Restarted after a failure only; not faster than every ThrottleInterval seconds.
        assert_eq!(key(p, &["KeepAlive", "SuccessfulExit"]), &Value::Bool(false), "{label}");
        assert!(
            p["ThrottleInterval"].as_u64().is_some_and(|s| s >= 5),
            "{label}: ThrottleInterval"
        );
        assert_eq!(p["RunAtLoad"], Value::Bool(true), "{label}");
        assert_eq!(p["Umask"], 0o077, "{label}");
        for log in ["StandardOutPath", "StandardErrorPath"] {
            assert!(
                p[log]
                    .as_str()
                    .is_some_and(|l| l.starts_with('/') && l.ends_with(".log")),
                "{label}: {log}"
            );
        }
    }
    let control = key(&daemon, &["Sockets", "Control"]);
    assert_eq!(control["SockPathMode"], 432, "0660 is decimal 432");
    assert_eq!(control["SockType"], "stream");
    assert_eq!(control["SockFamily"], "Unix");
    let sock = control["SockPathName"].as_str().unwrap_or_default();
    let args: Vec<&str> = key(&daemon, &["ProgramArguments"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--socket", sock]),
        "the daemon is told the socket launchd made: {args:?}"
    );
    let web_args: Vec<&str> = key(&web, &["ProgramArguments"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        web_args.windows(2).any(|w| w == ["--socket", sock]),
        "firma-web uses the same socket: {web_args:?}"
    );
    Ok(())
}
