//! The control plane: the Unix socket, who may use it, and the tarpc server behind it.
//!
//! Tasks: one accept loop (this file) and one task per connection. A connection is checked by
//! SO_PEERCRED before its first frame is decoded; refused ones are closed and audit-logged.
//! Connections are capped in total and per uid; requests in flight are capped per connection.

pub mod auth;
pub mod guard;
pub mod service;
pub mod socket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use firma_ipc::Control;
use firma_ipc::types::AuditRecord;
use futures::StreamExt;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use tarpc::server::{BaseChannel, Channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use self::auth::{AccessPolicy, Caller};
use self::guard::Guarded;
use self::service::{ConnInfo, ControlService};
use crate::config::ControlConfig;
use crate::core::{Core, Counters, now_ms};
use crate::store::StoreOp;

/// Counts open connections per uid so that one account cannot take every slot.
#[derive(Default)]
struct PerUid(Mutex<HashMap<u32, u32>>);

impl PerUid {
    fn try_take(self: &Arc<Self>, uid: u32, max: u32) -> Option<UidSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            owner: self.clone(),
            uid,
        })
    }
}

struct UidSlot {
    owner: Arc<PerUid>,
    uid: u32,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut m = self.owner.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Serves the control socket until `shutdown` fires; connections still open then are dropped.
pub async fn serve(
    socket: socket::ControlSocket,
    core: Arc<Core>,
    policy: AccessPolicy,
    cfg: ControlConfig,
    shutdown: CancellationToken,
) {
    let total = Arc::new(Semaphore::new(cfg.max_connections as usize));
    let per_uid = Arc::new(PerUid::default());
    let policy = Arc::new(policy);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = socket.listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(error = %e, socket = %socket.path.display(), "accept on the control socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            Counters::inc(&core.counters.control_refused);
            tracing::warn!(
                max = cfg.max_connections,
                "control connection refused: too many open connections"
            );
            continue;
        };
        conns.spawn(handle(
            stream,
            core.clone(),
            policy.clone(),
            per_uid.clone(),
            cfg.clone(),
            permit,
        ));
    }
    conns.shutdown().await;
    drop(socket);
}

async fn refuse(core: &Core, caller: Caller, why: &str) {
    Counters::inc(&core.counters.control_refused);
    tracing::warn!(uid = caller.uid, pid = ?caller.pid, why, "control connection refused");
    let record = AuditRecord {
        at_ms: now_ms(),
        uid: caller.uid,
        pid: caller.pid,
        action: "connect-refused".to_owned(),
        detail: why.to_owned(),
        result: "denied".to_owned(),
    };
    let _ = core.writer.send(StoreOp::Audit(record)).await;
}

async fn handle(
    stream: Stream,
    core: Arc<Core>,
    policy: Arc<AccessPolicy>,
    per_uid: Arc<PerUid>,
    cfg: ControlConfig,
    _permit: OwnedSemaphorePermit,
) {
    let creds = match stream.peer_creds() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not read peer credentials; closing the connection");
            return;
        }
    };
    let (Some(uid), Some(gid)) = (creds.euid(), creds.egid()) else {
        tracing::warn!("peer credentials lack a uid/gid; closing the connection");
        return;
    };
    let caller = Caller {
        uid,
        gid,
        pid: creds.pid(),
    };
    let p = policy.clone();
    let role = tokio::task::spawn_blocking(move || p.role_of(&caller))
        .await
        .ok()
        .flatten();
    let Some(role) = role else {
        drop(stream);
        refuse(
            &core,
            caller,
            "uid is not root, the daemon's user, or in the control group",
        )
        .await;
        return;
    };
    let Some(_slot) = per_uid.try_take(uid, cfg.max_connections_per_uid) else {
        drop(stream);
        refuse(&core, caller, "too many control connections from this uid").await;
        return;
    };
    core.counters
        .control_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let conn = Arc::new(ConnInfo::new(caller, role));
    let service = ControlService {
        core: core.clone(),
        conn: conn.clone(),
    };
    let guarded = Guarded {
        inner: service.serve(),
        core: core.clone(),
        conn,
    };
    let transport = firma_ipc::codec::transport(stream);
    BaseChannel::with_defaults(transport)
        .max_concurrent_requests(cfg.max_in_flight as usize)
        .execute(guarded)
        .for_each(|response| async move {
            tokio::spawn(response);
        })
        .await;
    core.counters
        .control_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}
