//! The HTTP server loop: hyper connections over the draining listener, with the two bounds
//! axum's own `serve` cannot set, and a graceful stop.
//!
//! - Header-read timeout (`header_read_timeout`): a connection that has not sent a whole request
//!   head within it is closed by hyper, so half-sent requests (slowloris) cannot hold
//!   connections for long.
//! - Connection cap (`max_connections`): each accepted connection holds a slot for as long as its
//!   socket lives (a WebSocket's too, since the upgraded stream carries the slot). With every
//!   slot taken nothing more is accepted: new connections wait in the kernel's accept queue and
//!   are served as soon as a slot frees, instead of being reset.
//!
//! On `stop` the loop stops accepting, asks every connection to finish its request in progress
//! and close (hyper-util's `GracefulShutdown`), and returns once they all have.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::listener::DrainingListener;

/// The bounds of client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serve `app` on `listener` until `stop`, then drain (see the module header).
pub async fn serve(mut listener: DrainingListener, app: Router, limits: ConnLimits, stop: CancellationToken) {
    use axum::serve::Listener as _;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // HTTP/2 WebSockets (RFC 8441) need the CONNECT protocol, as axum's own serve enables.
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let mut full_logged = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached; new connections wait until one closes (raise --max-connections)"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        if slots.available_permits() > limits.max_connections / 10 {
            full_logged = false;
        }
        let (mut io, _addr) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        io.hold(slot);
        let service = TowerToHyperService::new(app.clone().map_request(|req: Request<Incoming>| req.map(Body::new)));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
