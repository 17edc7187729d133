//! A client's WebSocket split in two: its session task writes through the sink half, and a small
//! reader task owns the read half and forwards what the client sends over a bounded channel.
//!
//! Why: a session task wakes for every event it forwards. When it also polled the socket's read
//! half each time, every wake made a read attempt (tungstenite zeroes its read buffer before
//! each one), and at a thousand clients those attempts were about a tenth of the web process's
//! CPU. The reader task is woken by its socket only, which for these clients means a rare ping.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::StreamExt as _;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// The half a session writes to.
pub type Sink = SplitSink<WebSocket, Message>;

/// Client messages read ahead of the session; the reader waits when they are not taken.
const INBOUND_QUEUE: usize = 4;

/// What a client sent, as far as a session cares.
pub enum Inbound {
    Text(Utf8Bytes),
    Binary,
    /// A WebSocket ping or pong: the client is alive (tungstenite answers pings itself).
    Control,
    /// Closed, or broken (an oversized message ends up here).
    Gone,
}

pub struct Split {
    pub sink: Sink,
    pub inbound: mpsc::Receiver<Inbound>,
    /// Stops the reader when the session ends.
    _reader: AbortOnDropHandle<()>,
}

pub fn split(socket: WebSocket) -> Split {
    let (sink, mut stream) = socket.split();
    let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let reader = tokio::spawn(async move {
        loop {
            let msg = match stream.next().await {
                Some(Ok(Message::Text(t))) => Inbound::Text(t),
                Some(Ok(Message::Binary(_))) => Inbound::Binary,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = tx.send(Inbound::Gone).await;
                    return;
                }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    Split {
        sink,
        inbound,
        _reader: AbortOnDropHandle::new(reader),
    }
}

impl Split {
    /// The next thing the client sent; `Gone` once the reader has stopped.
    pub async fn recv(&mut self) -> Inbound {
        self.inbound.recv().await.unwrap_or(Inbound::Gone)
    }
}
