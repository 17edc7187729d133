//! Command-line flags and the one merge of defaults, file, environment and flags into a
//! [`Config`]. `main` calls [`load`] at start and again on SIGHUP.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

use crate::config::{Config, LogFormat};

/// firma-transportd: the Firma transport daemon.
///
/// Owns a libp2p node (TCP, QUIC, Noise, Yamux, mDNS, Kademlia, identify, ping) with a
/// persistent identity, keeps peers and history in LMDB, and serves the control API on a Unix
/// socket for firmactl and firma-web. Runs with no config file at all.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Settings come from, in increasing priority: built-in defaults, the TOML file (--config, default \
    $XDG_CONFIG_HOME/firma/transportd.toml or /etc/firma/transportd.toml as root), FIRMA_* environment variables \
    (nested keys with __, e.g. FIRMA_NETWORK__RETRY__MAX_ATTEMPTS=5), and these flags.\n\n\
    Examples:\n  firma-transportd --no-mdns --listen /ip4/127.0.0.1/tcp/9092\n  \
    firma-transportd --state-dir /tmp/node2 --socket /tmp/node2.sock --listen /ip4/127.0.0.1/tcp/0 --dev\n\n\
    Signals: SIGTERM/SIGINT stop gracefully (a second SIGINT stops at once); SIGHUP reloads the log level, \
    bootstrap list, limits and retry strategy without dropping connections."
)]
pub struct Flags {
    /// Directory for the identity key and the LMDB store [env: FIRMA_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Control socket path [env: FIRMA_SOCKET]
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// TOML config file; a missing default file is fine, a missing named file is an error
    #[arg(long, value_name = "FILE", env = "FIRMA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen on this multiaddr (repeatable); replaces the default listeners
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(skip)]
    pub listen: Vec<String>,
    /// Turn mDNS discovery off [env: FIRMA_NO_MDNS=1]
    #[arg(long, env = "FIRMA_NO_MDNS", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    #[serde(skip)]
    pub no_mdns: bool,
    /// Turn the Kademlia DHT off [env: FIRMA_NO_DHT=1]
    #[arg(long, env = "FIRMA_NO_DHT", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    #[serde(skip)]
    pub no_dht: bool,
    /// Kademlia bootstrap peer, /ip4/.../tcp/.../p2p/<id> (repeatable); replaces the configured list
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(skip)]
    pub bootstrap: Vec<String>,
    /// Account to drop to when started as root [default: firma]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keep running as root instead of dropping privileges (not recommended)
    #[arg(long, env = "FIRMA_ALLOW_ROOT", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    #[serde(skip)]
    pub allow_root: bool,
    /// Development mode: take a free P2P port when the configured one is in use [env: FIRMA_DEV=1]
    #[arg(long, env = "FIRMA_DEV", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    #[serde(skip)]
    pub dev: bool,
    /// Log format: auto (journald under systemd, text otherwise), text, json, journald
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info, debug, firma_daemon=debug,info [env: FIRMA_LOG__LEVEL]
    #[arg(long, value_name = "FILTER")]
    #[serde(skip)]
    pub log_level: Option<String>,
}

impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Auto, LogFormat::Text, LogFormat::Json, LogFormat::Journald]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        }))
    }
}

/// Top-level config keys: only `FIRMA_<KEY>...` variables naming one of these are config.
/// Others (`FIRMA_CONFIG`, `FIRMA_NO_MDNS`, firma-web's own `FIRMA_WEB_*`) belong to flags or
/// to other programs sharing the prefix.
const CONFIG_KEYS: &[&str] = &[
    "state_dir",
    "socket",
    "user",
    "allow_root",
    "dev",
    "log",
    "network",
    "store",
    "control",
    "events",
];

/// Merges defaults, the config file, `FIRMA_*` and the flags into one validated config.
pub fn load(flags: &Flags) -> anyhow::Result<Config> {
    let file = flags
        .config
        .clone()
        .unwrap_or_else(firma_ipc::paths::default_config_file);
    if flags.config.is_some() && !file.exists() {
        anyhow::bail!(
            "config file {} does not exist (given with --config or FIRMA_CONFIG)",
            file.display()
        );
    }
    let mut fig = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::file(&file))
        .merge(Env::prefixed("FIRMA_").split("__").filter(|k| {
            // figment has already turned `__` into `.` when the filter runs.
            let top = k.as_str().split('.').next().unwrap_or_default().to_ascii_lowercase();
            CONFIG_KEYS.contains(&top.as_str())
        }))
        .merge(Serialized::defaults(flags));
    if !flags.listen.is_empty() {
        fig = fig.merge(("network.listen", flags.listen.clone()));
    }
    if !flags.bootstrap.is_empty() {
        fig = fig.merge(("network.bootstrap", flags.bootstrap.clone()));
    }
    if flags.no_mdns {
        fig = fig.merge(("network.mdns", false));
    }
    if flags.no_dht {
        fig = fig.merge(("network.dht", false));
    }
    if flags.allow_root {
        fig = fig.merge(("allow_root", true));
    }
    if flags.dev {
        fig = fig.merge(("dev", true));
    }
    if let Some(f) = flags.log_format {
        fig = fig.merge(("log.format", f));
    }
    if let Some(l) = &flags.log_level {
        fig = fig.merge(("log.level", l.clone()));
    }
    let config: Config = fig.extract().map_err(|e| {
        let mut msg = String::new();
        for err in e {
            let key = if err.path.is_empty() {
                "(top level)".to_owned()
            } else {
                err.path.join(".")
            };
            let from = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            msg.push_str(&format!("config key `{key}`: {} (from {from})\n", err.kind));
        }
        anyhow::anyhow!("{}see `firma-transportd --help` for where settings come from", msg)
    })?;
    config
        .validate()
        .with_context(|| format!("invalid configuration (file {})", file.display()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_valid_defaults_and_flags_win() {
        let flags = Flags::try_parse_from([
            "firma-transportd",
            "--config",
            "/dev/null",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--state-dir",
            "/tmp/x",
        ])
        .unwrap();
        let c = load(&flags).unwrap();
        assert!(!c.network.mdns);
        assert_eq!(c.network.listen, vec!["/ip4/127.0.0.1/tcp/0".to_owned()]);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn nested_environment_keys_reach_the_config() {
        // figment's Jail serialises tests that touch the process environment and restores it.
        let flags = Flags::try_parse_from(["firma-transportd", "--config", "/dev/null"]).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FIRMA_NETWORK__RETRY__MAX_ATTEMPTS", "7");
            jail.set_env("FIRMA_STATE_DIR", "/tmp/from-env");
            jail.set_env("FIRMA_WEB_LISTEN", "127.0.0.1:1");
            let c = load(&flags).map_err(|e| e.to_string())?;
            assert_eq!(c.network.retry.max_attempts, 7);
            assert_eq!(c.state_dir, PathBuf::from("/tmp/from-env"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn boolean_environment_flags_take_1_and_0() {
        for (value, want) in [
            ("1", true),
            ("true", true),
            ("yes", true),
            ("0", false),
            ("false", false),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.set_env("FIRMA_NO_MDNS", value);
                let f = Flags::try_parse_from(["firma-transportd"]).map_err(|e| e.to_string())?;
                assert_eq!(f.no_mdns, want, "FIRMA_NO_MDNS={value}");
                Ok(())
            });
        }
    }

    #[test]
    fn unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[network]\nmdsn = false\n").unwrap();
        let flags = Flags::try_parse_from(["firma-transportd", "--config", f.to_str().unwrap()]).unwrap();
        let e = load(&flags).unwrap_err().to_string();
        assert!(e.contains("mdsn"), "{e}");
    }
}
