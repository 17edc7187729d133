//! Command-line flags and the one merge of defaults, file, environment and flags into a
//! [`Config`]. `main` calls [`load`] at start and again on SIGHUP, and logs [`env_warnings`]
//! once. Which `FIRMA_*` variables are config is read off the config's own keys.

use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
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
    firma-transportd --state-dir /tmp/node2 --socket /tmp/node2.sock --listen /ip4/127.0.0.1/tcp/0 --dev\n  \
    firma-transportd --print-config        # what the file, FIRMA_* and flags add up to\n\n\
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
    /// Print the configuration these sources add up to (as TOML, the config file's format) and
    /// exit, without starting anything
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
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

/// The config's keys, read off [`Config::default`] so that a new section or key reaches the
/// environment with no second list to keep: `tops` are the top-level keys (`FIRMA_<TOP>...`
/// variables naming one of them are config), `leaves` every setting as a dotted path.
struct Keys {
    tops: Vec<String>,
    leaves: Vec<String>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let mut keys = Keys {
        tops: Vec::new(),
        leaves: Vec::new(),
    };
    // Serialising plain structs into figment's value model cannot fail.
    if let Ok(Value::Dict(_, dict)) = Value::serialize(Config::default()) {
        keys.tops = dict.keys().cloned().collect();
        collect_leaves("", &dict, &mut keys.leaves);
    }
    keys
});

fn collect_leaves(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Dict(_, inner) => collect_leaves(&path, inner, out),
            _ => out.push(path),
        }
    }
}

/// The top-level config keys, e.g. `network`, `transfer`, `socket`.
pub fn config_sections() -> &'static [String] {
    &KEYS.tops
}

/// The environment variable that sets the config key `path` (`transfer.unknown_peers` ->
/// `FIRMA_TRANSFER__UNKNOWN_PEERS`).
pub fn env_name(path: &str) -> String {
    format!("FIRMA_{}", path.replace('.', "__").to_ascii_uppercase())
}

/// Warnings for `FIRMA_*` variables that look like a setting but set nothing: a nested name
/// (`__`) under no config section, or a name close to a setting's (`FIRMA_LOG_LEVEL` for
/// `FIRMA_LOG__LEVEL`). Each names the variable and, where one is close, the right one. Others
/// sharing the prefix (firma-web's `FIRMA_WEB_*`, the test suites') are left alone.
pub fn env_warnings(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let flag_vars: Vec<String> = Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix("FIRMA_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let top = rest.split("__").next().unwrap_or_default();
        if flag_vars.contains(&name) || KEYS.tops.iter().any(|t| t == top) {
            continue;
        }
        // Compare with `_` for every separator, so `LOG_LEVEL` and `LOG__LEVEL` are one apart.
        let flat = rest.replace("__", "_");
        let closest = KEYS
            .leaves
            .iter()
            .map(|leaf| (strsim::levenshtein(&flat, &leaf.replace('.', "_")), leaf))
            .min();
        let close = closest.filter(|(d, _)| *d <= 2.max(flat.len() / 5));
        if !rest.contains("__") && close.is_none() {
            continue;
        }
        let mut msg = format!("environment variable {name} is not a firma-transportd setting and is ignored");
        match close {
            Some((_, leaf)) => msg.push_str(&format!("; did you mean {} (config key `{leaf}`)?", env_name(leaf))),
            None => msg.push_str(&format!(
                "; `{top}` is not a config section (sections: {}; nested keys take `__`)",
                KEYS.tops.join(", ")
            )),
        }
        out.push(msg);
    }
    out
}

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
            // figment has already turned `__` into `.` when the filter runs. Other FIRMA_*
            // variables belong to flags (FIRMA_CONFIG, FIRMA_NO_MDNS) or to other programs.
            let top = k.as_str().split('.').next().unwrap_or_default().to_ascii_lowercase();
            KEYS.tops.contains(&top)
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
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn every_section_is_reachable_from_the_environment() {
        // Each section's first setting, set through its FIRMA_* name, must leave the defaults.
        let flags = Flags::try_parse_from(["firma-transportd", "--config", "/dev/null"]).unwrap();
        let defaults = Value::serialize(load(&flags).unwrap()).unwrap();
        assert!(
            config_sections().iter().any(|s| s == "transfer"),
            "{:?}",
            config_sections()
        );
        for section in config_sections() {
            figment::Jail::expect_with(|jail| {
                let (var, value, path) = match section.as_str() {
                    "transfer" => ("FIRMA_TRANSFER__UNKNOWN_PEERS", "accept", "transfer.unknown_peers"),
                    "network" => ("FIRMA_NETWORK__MDNS", "false", "network.mdns"),
                    "log" => ("FIRMA_LOG__LEVEL", "debug", "log.level"),
                    "store" => ("FIRMA_STORE__AUDIT_RETENTION", "77", "store.audit_retention"),
                    "control" => ("FIRMA_CONTROL__GROUP", "ops", "control.group"),
                    "events" => ("FIRMA_EVENTS__RETAINED", "99", "events.retained"),
                    "state_dir" => ("FIRMA_STATE_DIR", "/tmp/s", "state_dir"),
                    "socket" => ("FIRMA_SOCKET", "/tmp/s.sock", "socket"),
                    "user" => ("FIRMA_USER", "someone", "user"),
                    "allow_root" => ("FIRMA_ALLOW_ROOT", "true", "allow_root"),
                    "dev" => ("FIRMA_DEV", "true", "dev"),
                    other => panic!("section `{other}` has no probe here: add one"),
                };
                jail.set_env(var, value);
                let c = Value::serialize(load(&flags).map_err(|e| e.to_string())?).unwrap();
                assert_ne!(c.find_ref(path), defaults.find_ref(path), "{var}={value} had no effect");
                Ok(())
            });
        }
    }

    #[test]
    fn settings_like_variables_that_set_nothing_are_named() {
        let w = |names: &[&str]| env_warnings(names.iter().map(|n| n.to_string()));
        for fine in [
            "FIRMA_TRANSFER__UNKNOWN_PEERS",
            "FIRMA_SOCKET",
            "FIRMA_CONFIG",
            "FIRMA_NO_MDNS",
            "FIRMA_WEB_LISTEN",
            "FIRMA_BIN_DIR",
            "PATH",
        ] {
            assert!(w(&[fine]).is_empty(), "{fine}: {:?}", w(&[fine]));
        }
        let single = w(&["FIRMA_TRANSFER_UNKNOWN_PEERS"]);
        assert!(
            single[0].contains("FIRMA_TRANSFER_UNKNOWN_PEERS")
                && single[0].contains("did you mean FIRMA_TRANSFER__UNKNOWN_PEERS"),
            "{single:?}"
        );
        let typo = w(&["FIRMA_TRANSFERS__PARALLEL_STREAM"]);
        assert!(typo[0].contains("FIRMA_TRANSFER__PARALLEL_STREAMS"), "{typo:?}");
        let far = w(&["FIRMA_NOTHING__LIKE_IT"]);
        assert!(
            far[0].contains("`nothing` is not a config section") && far[0].contains("transfer"),
            "{far:?}"
        );
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
