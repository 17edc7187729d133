//! Authorisation and audit around every call: a tarpc `Serve` wrapper that checks the
//! connection's role against the method's required role before the call runs, and records
//! state-changing calls (and refusals) in the audit log.

use std::sync::Arc;

use firma_ipc::types::AuditRecord;
use firma_ipc::{ControlRequest, ControlResponse, IpcError, ServeControl};
use tarpc::ServerError;
use tarpc::context::Context;
use tarpc::server::Serve;

use super::auth::{audit_detail, is_audited, method_name, required_role};
use super::service::{ConnInfo, ControlService};
use crate::core::{Core, Counters, now_ms};
use crate::store::StoreOp;

#[derive(Clone)]
pub struct Guarded {
    pub inner: ServeControl<ControlService>,
    pub core: Arc<Core>,
    pub conn: Arc<ConnInfo>,
}

/// The typed error answer to a request (a denial, or a refused connection's reason), so that
/// clients see an `IpcError` with its code instead of a broken call.
pub fn error_response(req: &ControlRequest, e: IpcError) -> ControlResponse {
    use ControlRequest as Q;
    use ControlResponse as R;
    match req {
        Q::Hello { .. } => R::Hello(Err(e)),
        Q::Status { .. } => R::Status(Err(e)),
        Q::Peers { .. } => R::Peers(Err(e)),
        Q::Peer { .. } => R::Peer(Err(e)),
        Q::Connect { .. } => R::Connect(Err(e)),
        Q::Disconnect { .. } => R::Disconnect(Err(e)),
        Q::Pin { .. } => R::Pin(Err(e)),
        Q::Ban { .. } => R::Ban(Err(e)),
        Q::Discovery { .. } => R::Discovery(Err(e)),
        Q::FindPeer { .. } => R::FindPeer(Err(e)),
        Q::History { .. } => R::History(Err(e)),
        Q::Topology { .. } => R::Topology(Err(e)),
        Q::Metrics { .. } => R::Metrics(Err(e)),
        Q::Audit { .. } => R::Audit(Err(e)),
        Q::Events { .. } => R::Events(Err(e)),
        Q::UploadBegin { .. } => R::UploadBegin(Err(e)),
        Q::UploadChunk { .. } => R::UploadChunk(Err(e)),
        Q::UploadFinish { .. } => R::UploadFinish(Err(e)),
        Q::SendTransfer { .. } => R::SendTransfer(Err(e)),
        Q::Transfers { .. } => R::Transfers(Err(e)),
        Q::Transfer { .. } => R::Transfer(Err(e)),
        Q::CancelTransfer { .. } => R::CancelTransfer(Err(e)),
        Q::AcceptTransfer { .. } => R::AcceptTransfer(Err(e)),
        Q::RejectTransfer { .. } => R::RejectTransfer(Err(e)),
        Q::Download { .. } => R::Download(Err(e)),
    }
}

/// `ok` or the error code, for the audit log.
fn outcome(resp: &ControlResponse) -> String {
    fn code<T>(r: &Result<T, IpcError>) -> String {
        match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("{:?}: {}", e.code, e.message).chars().take(256).collect(),
        }
    }
    use ControlResponse as R;
    match resp {
        R::Hello(r) => code(r),
        R::Status(r) => code(r),
        R::Peers(r) => code(r),
        R::Peer(r) => code(r),
        R::Connect(r) => code(r),
        R::Disconnect(r) => code(r),
        R::Pin(r) => code(r),
        R::Ban(r) => code(r),
        R::Discovery(r) => code(r),
        R::FindPeer(r) => code(r),
        R::History(r) => code(r),
        R::Topology(r) => code(r),
        R::Metrics(r) => code(r),
        R::Audit(r) => code(r),
        R::Events(r) => code(r),
        R::UploadBegin(r) => code(r),
        R::UploadChunk(r) => code(r),
        R::UploadFinish(r) => code(r),
        R::SendTransfer(r) => code(r),
        R::Transfers(r) => code(r),
        R::Transfer(r) => code(r),
        R::CancelTransfer(r) => code(r),
        R::AcceptTransfer(r) => code(r),
        R::RejectTransfer(r) => code(r),
        R::Download(r) => code(r),
    }
}

impl Guarded {
    async fn audit(&self, action: &str, detail: String, result: String) {
        let record = AuditRecord {
            at_ms: now_ms(),
            uid: self.conn.caller.uid,
            pid: self.conn.caller.pid,
            action: action.to_owned(),
            detail,
            result,
        };
        if let Err(e) = self.core.writer.send(StoreOp::Audit(record)).await {
            tracing::warn!(error = %e, "could not write an audit record");
        }
    }
}

impl Serve for Guarded {
    type Req = ControlRequest;
    type Resp = ControlResponse;

    async fn serve(self, ctx: Context, req: ControlRequest) -> Result<ControlResponse, ServerError> {
        Counters::inc(&self.core.counters.rpc_calls);
        let _busy = self.conn.activity.begin();
        let need = required_role(&req);
        let have = self.conn.granted();
        let method = method_name(&req);
        if need > have {
            Counters::inc(&self.core.counters.rpc_denied);
            tracing::warn!(uid = self.conn.caller.uid, pid = ?self.conn.caller.pid, method, "control call denied for this connection's role");
            self.audit(method, audit_detail(&req), "denied".to_owned()).await;
            let e = IpcError::denied(format!(
                "`{method}` needs the operator role; this connection has the {have:?} role"
            ));
            return Ok(error_response(&req, e));
        }
        let audited = is_audited(&req).then(|| audit_detail(&req));
        let resp = self.inner.clone().serve(ctx, req).await?;
        if let Some(detail) = audited {
            self.audit(method, detail, outcome(&resp)).await;
        }
        Ok(resp)
    }
}
