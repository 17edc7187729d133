//! The only place that knows about signals. SIGTERM/SIGINT start a graceful stop; a second
//! SIGINT stops at once; SIGHUP asks for a config reload. SIGUSR2 is firma-web's hot reload:
//! operators who send it here out of habit get a log line saying which signal does what, and the
//! daemon keeps running (its default action would kill the process).

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Listens for signals until the process ends. `reload` receives one message per SIGHUP
/// (a full queue drops the extra: one pending reload is as good as several).
pub fn spawn(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])?;
    Ok(tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload.try_send(());
                }
                SIGUSR2 => {
                    tracing::warn!(
                        "SIGUSR2 ignored: it reloads firma-web, not firma-transportd. To reload this daemon's configuration send SIGHUP (systemctl reload firma-transportd); it keeps running"
                    );
                }
                SIGINT if shutdown.is_cancelled() => {
                    tracing::warn!("second SIGINT: stopping now");
                    std::process::exit(130);
                }
                _ => {
                    let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    tracing::info!("{name}: stopping gracefully (send SIGINT again to stop at once)");
                    shutdown.cancel();
                }
            }
        }
    }))
}
