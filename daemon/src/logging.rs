//! Logs: journald when running under systemd, readable text on stderr otherwise, JSON on
//! request. The filter can be changed at runtime (SIGHUP) through the returned handle.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

pub type FilterHandle = reload::Handle<EnvFilter, Registry>;

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level).map_err(|e| {
        anyhow::anyhow!(
            "config key `log.level`: `{level}` is not a valid filter ({e}); try `info` or `firma_daemon=debug,info`"
        )
    })
}

pub fn init(cfg: &LogConfig) -> anyhow::Result<FilterHandle> {
    let (filter_layer, handle) = reload::Layer::new(filter(&cfg.level)?);
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let wants_journald =
        matches!(cfg.format, LogFormat::Journald) || (matches!(cfg.format, LogFormat::Auto) && under_systemd);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match (wants_journald, cfg.format) {
        (true, _) => match tracing_journald::layer() {
            Ok(l) => l.with_syslog_identifier("firma-transportd".to_owned()).boxed(),
            // No journal socket: fall back to stderr rather than losing logs.
            Err(_) => tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .boxed(),
        },
        (false, LogFormat::Json) => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        // Colour only for a person at a terminal; files and pipes get plain text.
        (false, _) => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(output.with_filter(filter_layer))
        .try_init()?;
    Ok(handle)
}

pub fn set_level(handle: &FilterHandle, level: &str) -> anyhow::Result<()> {
    let f = filter(level)?;
    handle
        .reload(f)
        .map_err(|e| anyhow::anyhow!("could not change the log filter: {e}"))
}
