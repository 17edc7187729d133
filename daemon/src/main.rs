//! firma-transportd: flags -> config -> run. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use firma_daemon::flags::{self, Flags};
use firma_daemon::{RunControl, logging, run, signals};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match flags::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("firma-transportd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let env_warnings = flags::env_warnings(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
    if flags.print_config {
        for w in &env_warnings {
            eprintln!("firma-transportd: warning: {w}");
        }
        return match toml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("firma-transportd: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let log = match logging::init(&config.log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("firma-transportd: {e:#}");
            return ExitCode::from(2);
        }
    };
    for w in env_warnings {
        tracing::warn!("{w}");
    }
    // Before the runtime starts: this reads and clears LISTEN_FDS/LISTEN_PID.
    let inherited_socket = match firma_daemon::control::socket::take_inherited() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("firma-transportd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("firma-transportd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (hup_tx, mut hup_rx) = mpsc::channel(1);
        let (reload_tx, reload_rx) = mpsc::channel(1);
        signals::spawn(shutdown.clone(), hup_tx)?;
        // SIGHUP: read the same sources again; a bad file is reported and the old config kept.
        tokio::spawn(async move {
            while hup_rx.recv().await.is_some() {
                match flags::load(&flags) {
                    Ok(c) => {
                        let _ = reload_tx.send(c).await;
                    }
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e:#}"),
                }
            }
        });
        let set_log_level = Box::new(move |level: &str| logging::set_level(&log, level));
        run(
            config,
            RunControl {
                shutdown,
                reloads: reload_rx,
                set_log_level: Some(set_log_level),
                inherited_socket,
            },
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("firma-transportd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
