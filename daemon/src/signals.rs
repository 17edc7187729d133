//! The only place that knows about signals. SIGTERM/SIGINT start a graceful stop; a second
//! SIGINT stops at once; SIGHUP asks for a config reload.

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Listens for signals until the process ends. `reload` receives one message per SIGHUP
/// (a full queue drops the extra: one pending reload is as good as several).
pub fn spawn(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    Ok(tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload.try_send(());
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
