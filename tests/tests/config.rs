//! Configuration at the edges: every section is reachable from the file and from `FIRMA_*`, a
//! variable that looks like a setting but sets nothing is named, a wrong key stops the daemon
//! with a message naming the key, and SIGHUP reloads the file without touching live connections
//! (a bad reload is refused, not fatal).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use firma_ipc::client::ctx;
use firma_ipc::event::Event;
use firma_tests::harness::{CONNECT_TIMEOUT, clear_firma_env, flatten};
use firma_tests::{Daemon, DaemonOpts, wait_for};

/// What `firma-transportd --print-config` says the sources add up to, parsed, and its stderr.
fn print_config(config: &Path, env: &[(String, String)]) -> anyhow::Result<(toml::Table, String)> {
    let mut cmd = Command::new(firma_tests::bins::daemon()?);
    clear_firma_env(&mut cmd);
    cmd.arg("--config").arg(config).arg("--print-config");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().context("running firma-transportd --print-config")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "--print-config failed ({}): {stderr}", out.status);
    let text = String::from_utf8(out.stdout)?;
    Ok((
        text.parse()
            .with_context(|| format!("--print-config printed no TOML:\n{text}"))?,
        stderr,
    ))
}

fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = table.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// A non-default, valid value for one setting of each section: (key, TOML literal, FIRMA_* value).
fn probe(section: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match section {
        "state_dir" => ("state_dir", "\"/tmp/probe-state\"", "/tmp/probe-state"),
        "socket" => ("socket", "\"/tmp/probe.sock\"", "/tmp/probe.sock"),
        "user" => ("user", "\"probe-user\"", "probe-user"),
        "allow_root" => ("allow_root", "true", "true"),
        "dev" => ("dev", "true", "true"),
        "log" => ("log.level", "\"debug\"", "debug"),
        "network" => ("network.ping_interval", "\"7s\"", "7s"),
        "store" => ("store.audit_retention", "77", "77"),
        "control" => ("control.max_in_flight", "9", "9"),
        "events" => ("events.retained", "99", "99"),
        "transfer" => ("transfer.unknown_peers", "\"accept\"", "accept"),
        _ => return None,
    })
}

#[test]
fn every_config_section_is_reachable_from_a_file_and_from_the_environment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let none = Path::new("/dev/null");
    let (defaults, _) = print_config(none, &[])?;
    // The sections are the binary's own: a section added later fails here until it has a probe.
    let sections: Vec<&String> = defaults.keys().collect();
    ensure!(sections.iter().any(|s| *s == "transfer"), "sections {sections:?}");
    for section in sections {
        let (key, literal, env_value) =
            probe(section).with_context(|| format!("config section `{section}` has no probe in this test: add one"))?;
        let default = lookup(&defaults, key).with_context(|| format!("`{key}` not in the defaults"))?;
        let want: toml::Table = match key.split_once('.') {
            Some((table, leaf)) => format!("[{table}]\n{leaf} = {literal}\n"),
            None => format!("{key} = {literal}\n"),
        }
        .parse()?;
        let want = lookup(&want, key).context("probe")?.clone();
        ensure!(&want != default, "the probe of `{key}` is its default");

        let file = dir.path().join(format!("{section}.toml"));
        match key.split_once('.') {
            Some((table, leaf)) => std::fs::write(&file, format!("[{table}]\n{leaf} = {literal}\n"))?,
            None => std::fs::write(&file, format!("{key} = {literal}\n"))?,
        }
        let (from_file, _) = print_config(&file, &[])?;
        ensure!(
            lookup(&from_file, key) == Some(&want),
            "`{key}` from the file: {:?}",
            lookup(&from_file, key)
        );

        let var = format!("FIRMA_{}", key.replace('.', "__").to_ascii_uppercase());
        let (from_env, _) = print_config(none, &[(var.clone(), env_value.to_owned())])?;
        ensure!(
            lookup(&from_env, key) == Some(&want),
            "{var}={env_value} did not reach `{key}`: {:?}",
            lookup(&from_env, key)
        );
    }
    Ok(())
}

#[test]
fn a_variable_that_looks_like_a_setting_but_is_none_is_named() -> anyhow::Result<()> {
    let env = [
        ("FIRMA_TRANSFER_UNKNOWN_PEERS".to_owned(), "accept".to_owned()),
        ("FIRMA_NETWRK__MDNS".to_owned(), "false".to_owned()),
    ];
    let (config, stderr) = print_config(Path::new("/dev/null"), &env)?;
    ensure!(
        stderr.contains("FIRMA_TRANSFER_UNKNOWN_PEERS")
            && stderr.contains("did you mean FIRMA_TRANSFER__UNKNOWN_PEERS"),
        "no warning naming the single-underscore variable:\n{stderr}"
    );
    ensure!(
        stderr.contains("FIRMA_NETWRK__MDNS") && stderr.contains("FIRMA_NETWORK__MDNS"),
        "no warning naming the misspelt section:\n{stderr}"
    );
    ensure!(lookup(&config, "transfer.unknown_peers").is_some_and(|v| v.as_str() == Some("ask")));
    // The running daemon logs the same warning.
    let opts = DaemonOpts {
        env: env.to_vec(),
        ..DaemonOpts::named("envwarn")
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let d = Daemon::spawn(opts).await?;
        ensure!(
            d.log()
                .contains("FIRMA_TRANSFER_UNKNOWN_PEERS is not a firma-transportd setting"),
            "the daemon did not log the warning:\n{}",
            d.log_tail()
        );
        Ok(())
    })
}

/// Start with `toml` as the config file; require a non-zero exit whose output names `key`.
async fn refused(name: &str, toml: &str, key: &str) -> anyhow::Result<()> {
    let mut d = Daemon::launch(DaemonOpts {
        config: Some(toml.to_owned()),
        ..DaemonOpts::named(name)
    })?;
    let st = d.wait_exit(Duration::from_secs(20)).await?;
    ensure!(!st.success(), "daemon accepted config {toml:?} (exit {st})");
    ensure!(
        d.log().contains(key),
        "error for {toml:?} does not name `{key}`:\n{}",
        d.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_names_the_key() -> anyhow::Result<()> {
    refused("badtop", "bogus_setting = 1\n", "bogus_setting").await?;
    refused("badnest", "[network.retry]\ninitial_dely = \"1s\"\n", "initial_dely").await?;
    refused("badval", "[network.retry]\njitter = 3.0\n", "network.retry.jitter").await?;
    refused(
        "badaddr",
        "[network]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n",
        "network.bootstrap[0]",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_value_names_the_key() -> anyhow::Result<()> {
    // Nested keys come from FIRMA_* variables with `__` between levels, checked like the file.
    let opts = DaemonOpts {
        env: vec![("FIRMA_NETWORK__RETRY__JITTER".into(), "7".into())],
        ..DaemonOpts::named("badenv")
    };
    let mut d = Daemon::launch(opts)?;
    let st = d.wait_exit(Duration::from_secs(20)).await?;
    ensure!(
        !st.success() && d.log().contains("jitter"),
        "bad env value accepted or not named (exit {st}):\n{}",
        d.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_connections() -> anyhow::Result<()> {
    let cfg = "[network]\nrtt_event_interval = \"5s\"\n";
    let mut a = Daemon::spawn(DaemonOpts {
        config: Some(cfg.into()),
        ..DaemonOpts::named("hup-a")
    })
    .await?;
    let b = Daemon::spawn(DaemonOpts::named("hup-b")).await?;
    a.connect_to(&b).await?;
    let head = a.status().await?.event_head;
    let config_path = a.dir().join("transportd.toml");

    // A valid change: wait for the daemon to say it applied it ("...reloaded"), not merely that
    // it began, so that the next write cannot race with this reload's read of the file.
    std::fs::write(&config_path, "[network]\nrtt_event_interval = \"7s\"\n")?;
    let offset = a.log().len();
    a.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for(Duration::from_secs(10), "the daemon to log that it reloaded", || {
        let hit = a.log().get(offset..).is_some_and(|new| {
            new.lines()
                .any(|l| l.contains("reloaded") && !l.contains("not reloaded"))
        });
        async move { hit }
    })
    .await
    .with_context(|| a.log_tail())?;
    let after_valid = a.log().get(offset..).unwrap_or_default().to_owned();
    ensure!(
        !after_valid.contains("refused"),
        "a valid reload was refused:\n{after_valid}"
    );

    // An invalid change: refused, daemon keeps running with the old config.
    std::fs::write(&config_path, "[network]\nrtt_event_intervall = \"7s\"\n")?;
    a.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_for(
        Duration::from_secs(10),
        "the refused reload to name the bad key",
        || {
            let hit = a.log().contains("rtt_event_intervall");
            async move { hit }
        },
    )
    .await
    .with_context(|| a.log_tail())?;

    ensure!(a.is_running(), "the daemon exited on SIGHUP");
    a.status().await.context("status after the reloads")?;
    ensure!(a.is_connected_to(b.peer_id()).await, "a lost b across SIGHUP");
    b.wait_connected(a.peer_id(), CONNECT_TIMEOUT).await?;
    let conn = a.client().await?;
    let batch = flatten(conn.client.events(ctx(Duration::from_secs(10)), head, 1024, 0).await)?;
    let dropped = batch
        .events
        .iter()
        .any(|e| matches!(&e.event, Event::PeerDisconnected { peer_id, .. } if peer_id == b.peer_id()));
    ensure!(!dropped, "b was disconnected during the reloads: {batch:?}");
    Ok(())
}
