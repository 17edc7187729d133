//! The accept side of the server, built so that a reload refuses nothing and resets nothing.
//!
//! The listening socket is never closed (the next build inherits it), so new connections wait in
//! the kernel's queue. The remaining hazard is a connection this process already accepted whose
//! request bytes it has not read yet: hyper's graceful shutdown closes such "idle" connections at
//! once, and the client sees a reset. So every accepted stream is counted as *fresh* until its
//! first bytes are read, and `lib::run` waits (briefly) for the fresh count to reach zero before
//! it tells the server to shut down gracefully. Requests in progress then finish normally.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepted connections that have not delivered a byte yet.
#[derive(Debug, Default)]
pub struct FreshConnections {
    count: AtomicUsize,
    changed: Notify,
}

impl FreshConnections {
    fn done(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Wait until no accepted connection is still silent, at most `grace` (a client that connects
    /// and says nothing, like a browser's speculative preconnect, must not hold up a reload).
    pub async fn settle(&self, grace: Duration) {
        let _ = tokio::time::timeout(grace, async {
            loop {
                let changed = self.changed.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

/// A listener that stops accepting when `stop` is cancelled and counts fresh connections.
pub struct DrainingListener {
    inner: TcpListener,
    stop: CancellationToken,
    fresh: Arc<FreshConnections>,
    /// SO_SNDBUF for accepted connections (0: the kernel's autotuning, up to several MiB each).
    send_buffer: usize,
}

impl DrainingListener {
    pub fn new(inner: TcpListener, stop: CancellationToken, send_buffer: usize) -> (Self, Arc<FreshConnections>) {
        let fresh = Arc::new(FreshConnections::default());
        (
            Self {
                inner,
                stop,
                fresh: fresh.clone(),
                send_buffer,
            },
            fresh,
        )
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let accepted = tokio::select! {
                biased;
                // From here on new connections wait in the kernel queue for the next process.
                _ = self.stop.cancelled() => std::future::pending().await,
                r = self.inner.accept() => r,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    if self.send_buffer > 0 {
                        // Bounds the kernel memory a client that stops reading can pin: past it, the
                        // client's task blocks and its queue overflows into a resync instead.
                        let _ = setsockopt(&stream, sockopt::SndBuf, &self.send_buffer);
                    }
                    self.fresh.count.fetch_add(1, Ordering::AcqRel);
                    return (
                        TrackedStream {
                            inner: stream,
                            fresh: Some(self.fresh.clone()),
                            slot: None,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that leaves the fresh count on its first byte read, or when dropped.
pub struct TrackedStream {
    inner: TcpStream,
    fresh: Option<Arc<FreshConnections>>,
    /// This connection's place under the connection cap (serve.rs), given back on drop.
    slot: Option<OwnedSemaphorePermit>,
}

impl TrackedStream {
    /// Hold `slot` for as long as this stream lives (through a WebSocket upgrade too).
    pub fn hold(&mut self, slot: OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }

    fn heard(&mut self) {
        if let Some(f) = self.fresh.take() {
            f.done();
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.heard();
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(_)) && (buf.filled().len() > before || matches!(r, Poll::Ready(Err(_)))) {
            self.heard();
        }
        r
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn counts_connections_until_their_first_byte() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (mut l, fresh) = DrainingListener::new(tcp, stop.clone(), 64 * 1024);
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = l.accept().await;
        assert_eq!(fresh.count.load(Ordering::Acquire), 1);
        // Nothing said yet: settling gives up after the grace.
        fresh.settle(Duration::from_millis(20)).await;
        assert_eq!(fresh.count.load(Ordering::Acquire), 1);
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
        fresh.settle(Duration::from_secs(5)).await;
        assert_eq!(fresh.count.load(Ordering::Acquire), 0);
        // After stop, nothing more is accepted (the connection waits in the kernel queue).
        stop.cancel();
        let _queued = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.accept())
                .await
                .is_err()
        );
    }
}
