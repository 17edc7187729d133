//! The control plane: the Unix socket, who may use it, and the tarpc server behind it.
//!
//! Tasks: one accept loop (this file) and one task per connection. A connection is checked by
//! SO_PEERCRED before its first frame is decoded; one of an account that may not use the socket
//! is closed without an answer and audit-logged. The others need a slot (limits.rs: capped in
//! total and per uid, with slots only operators may take); a connection refused for the limits
//! gets the reason as the typed answer to its first request, so the client can say why. A
//! connection must call `hello` within `control.hello_timeout` and is closed after
//! `control.idle_timeout` with nothing in flight; requests in flight are capped per connection.
//! What happens before a slot is bounded too: [`MAX_HANDSHAKES`] credential checks and
//! [`MAX_REFUSALS`] refusal answers at once, refusals logged at most [`REFUSAL_RECORDS`] per
//! [`REFUSAL_WINDOW`].

pub mod auth;
pub mod guard;
pub mod limits;
pub mod service;
pub mod socket;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use firma_ipc::types::AuditRecord;
use firma_ipc::{Control, ControlRequest, ControlResponse, IpcError};
use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use tarpc::server::{BaseChannel, Channel};
use tarpc::{ClientMessage, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use self::auth::{AccessPolicy, Caller};
use self::guard::Guarded;
use self::limits::{Expiry, Slot, Slots, Throttle};
use self::service::{ConnInfo, ControlService};
use crate::config::ControlConfig;
use crate::core::{Core, Counters, now_ms};
use crate::store::StoreOp;

/// Connections between accept and their slot (credentials, NSS lookups). While all are taken the
/// accept loop waits and new connections queue in the kernel's backlog; none is dropped unseen.
pub const MAX_HANDSHAKES: usize = 32;
/// Refused connections being told why at once; past this a refused connection is just closed.
pub const MAX_REFUSALS: usize = 16;
/// How long a refused client gets to send its first request, to which the refusal is the answer.
const REFUSAL_READ: Duration = Duration::from_secs(2);
/// Refusals logged and audited per window; the rest are counted in the next record.
pub const REFUSAL_RECORDS: u32 = 20;
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// What every connection task shares.
struct Shared {
    core: Arc<Core>,
    policy: AccessPolicy,
    cfg: ControlConfig,
    slots: Arc<Slots>,
    refusals: Arc<Semaphore>,
    refusal_log: Throttle,
    /// Connections closed for not saying `hello`: as floodable as refusals.
    silent_log: Throttle,
}

/// Serves the control socket until `shutdown` fires; connections still open then are dropped.
pub async fn serve(
    socket: socket::ControlSocket,
    core: Arc<Core>,
    policy: AccessPolicy,
    cfg: ControlConfig,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        core,
        policy,
        slots: Slots::new(&cfg),
        cfg,
        refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
        refusal_log: Throttle::new(REFUSAL_RECORDS, REFUSAL_WINDOW),
        silent_log: Throttle::new(REFUSAL_RECORDS, REFUSAL_WINDOW),
    });
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, handshake) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = accept(&socket, &handshakes) => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(error = %e, socket = %socket.path.display(), "accept on the control socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        conns.spawn(handle(stream, shared.clone(), handshake));
    }
    conns.shutdown().await;
    drop(socket);
}

/// The next connection, once a handshake slot is free (cancel-safe: a dropped permit is returned).
async fn accept(
    socket: &socket::ControlSocket,
    handshakes: &Arc<Semaphore>,
) -> std::io::Result<(Stream, OwnedSemaphorePermit)> {
    let permit = handshakes
        .clone()
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let stream = socket.listener.accept().await?;
    Ok((stream, permit))
}

impl Shared {
    /// Counts, logs and audits a refused connection (the last two throttled).
    async fn refused(&self, caller: Caller, why: &str) {
        Counters::inc(&self.core.counters.control_refused);
        let Some(held_back) = self.refusal_log.admit() else {
            return;
        };
        let detail = if held_back > 0 {
            format!("{why} (and {held_back} more refusals left out of the log since the last record)")
        } else {
            why.to_owned()
        };
        tracing::warn!(uid = caller.uid, pid = ?caller.pid, why = %detail, "control connection refused");
        let record = AuditRecord {
            at_ms: now_ms(),
            uid: caller.uid,
            pid: caller.pid,
            action: "connect-refused".to_owned(),
            detail,
            result: "denied".to_owned(),
        };
        let _ = self.core.writer.send(StoreOp::Audit(record)).await;
    }
}

/// Who is on the other end, from SO_PEERCRED; `None` (and the connection is closed) without it.
fn caller_of(stream: &Stream) -> Option<Caller> {
    let creds = match stream.peer_creds() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not read peer credentials; closing the connection");
            return None;
        }
    };
    let (Some(uid), Some(gid)) = (creds.euid(), creds.egid()) else {
        tracing::warn!("peer credentials lack a uid/gid; closing the connection");
        return None;
    };
    Some(Caller {
        uid,
        gid,
        pid: creds.pid(),
    })
}

async fn handle(stream: Stream, shared: Arc<Shared>, handshake: OwnedSemaphorePermit) {
    let Some(caller) = caller_of(&stream) else {
        return;
    };
    let s = shared.clone();
    let role = tokio::task::spawn_blocking(move || s.policy.role_of(&caller))
        .await
        .ok()
        .flatten();
    let Some(role) = role else {
        // Not a word to an account that may not use the socket.
        drop((stream, handshake));
        shared
            .refused(
                caller,
                "uid is not root, the daemon's user, in the control group or in control.web_users",
            )
            .await;
        return;
    };
    let slot = shared.slots.try_take(caller.uid, role);
    drop(handshake);
    match slot {
        Ok(slot) => serve_connection(stream, &shared, caller, role, slot).await,
        Err(why) => {
            tell_refused(
                stream,
                &shared,
                IpcError::unavailable(format!("connection refused: {why}")),
            )
            .await;
            shared.refused(caller, &why).await;
        }
    }
}

/// Answers the first request of a refused connection with `error`, then closes it. A client
/// that sends nothing within [`REFUSAL_READ`], or arrives while [`MAX_REFUSALS`] others are
/// being answered, is closed without an answer.
async fn tell_refused(stream: Stream, shared: &Shared, error: IpcError) {
    let Ok(_permit) = shared.refusals.clone().try_acquire_owned() else {
        return;
    };
    let mut transport =
        firma_ipc::codec::transport::<_, ClientMessage<ControlRequest>, Response<ControlResponse>>(stream);
    let first = tokio::time::timeout(REFUSAL_READ, transport.next()).await;
    let Ok(Some(Ok(ClientMessage::Request(req)))) = first else {
        return;
    };
    let answer = Response {
        request_id: req.id,
        message: Ok(guard::error_response(&req.message, error)),
    };
    let _ = tokio::time::timeout(REFUSAL_READ, transport.send(answer)).await;
}

async fn serve_connection(stream: Stream, shared: &Shared, caller: Caller, role: firma_ipc::types::Role, _slot: Slot) {
    let core = &shared.core;
    let cfg = &shared.cfg;
    core.counters.control_open.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(ConnInfo::new(caller, role));
    let service = ControlService {
        core: core.clone(),
        conn: conn.clone(),
    };
    let guarded = Guarded {
        inner: service.serve(),
        core: core.clone(),
        conn: conn.clone(),
    };
    let transport = firma_ipc::codec::transport(stream);
    let requests = BaseChannel::with_defaults(transport)
        .max_concurrent_requests(cfg.max_in_flight as usize)
        .execute(guarded)
        .for_each(|response| async move {
            tokio::spawn(response);
        });
    tokio::select! {
        () = requests => {}
        why = conn.activity.expired(cfg.hello_timeout, cfg.idle_timeout) => {
            // Dropping the channel closes the socket; the client reconnects when it needs to.
            match why {
                Expiry::NoHello => {
                    if let Some(held_back) = shared.silent_log.admit() {
                        tracing::warn!(uid = caller.uid, pid = ?caller.pid, held_back, "closed a control connection: {why}");
                    }
                }
                Expiry::Idle => tracing::debug!(uid = caller.uid, pid = ?caller.pid, "closed a control connection: {why}"),
            }
        }
    }
    core.counters.control_open.fetch_sub(1, Ordering::Relaxed);
}
