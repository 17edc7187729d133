//! Who may use the control socket, and what each role may call.
//!
//! The caller is identified by SO_PEERCRED on accept, before any frame is decoded. Root, the
//! daemon's own uid and members of the control group are operators; accounts listed in
//! `control.web_users` get the web tier's narrower role; anyone else is closed at once.

use firma_ipc::ControlRequest;
use firma_ipc::types::Role;
use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

/// What the kernel told us about the process on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The rules, resolved from config: names are looked up per connection so that group changes
/// take effect without a restart.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub daemon_uid: u32,
    pub control_group: String,
    pub web_users: Vec<String>,
}

impl AccessPolicy {
    /// The most a caller may do, or `None` when it may not use the socket at all.
    /// Blocking (NSS lookups): call from `spawn_blocking`.
    pub fn role_of(&self, caller: &Caller) -> Option<Role> {
        if caller.uid == 0 || caller.uid == self.daemon_uid {
            return Some(Role::Operator);
        }
        let user = User::from_uid(Uid::from_raw(caller.uid)).ok().flatten();
        if let Some(user) = &user
            && self.web_users.contains(&user.name)
        {
            return Some(Role::Web);
        }
        let group = Group::from_name(&self.control_group).ok().flatten()?;
        if caller.gid == group.gid.as_raw() {
            return Some(Role::Operator);
        }
        let user = user?;
        if group.mem.contains(&user.name) {
            return Some(Role::Operator);
        }
        let name = std::ffi::CString::new(user.name.as_bytes()).ok()?;
        let groups = getgrouplist(&name, Gid::from_raw(user.gid.as_raw())).ok()?;
        groups.contains(&group.gid).then_some(Role::Operator)
    }
}

/// The role a request needs. An exhaustive match over the generated request enum: a method
/// added to the service does not compile until it is given a role here.
pub fn required_role(req: &ControlRequest) -> Role {
    match req {
        ControlRequest::Hello { .. }
        | ControlRequest::Status { .. }
        | ControlRequest::Peers { .. }
        | ControlRequest::Peer { .. }
        | ControlRequest::Connect { .. }
        | ControlRequest::Disconnect { .. }
        | ControlRequest::Pin { .. }
        | ControlRequest::Discovery { .. }
        | ControlRequest::FindPeer { .. }
        | ControlRequest::History { .. }
        | ControlRequest::Topology { .. }
        | ControlRequest::Metrics { .. }
        | ControlRequest::Events { .. }
        | ControlRequest::UploadBegin { .. }
        | ControlRequest::UploadChunk { .. }
        | ControlRequest::UploadFinish { .. }
        | ControlRequest::SendTransfer { .. }
        | ControlRequest::Transfers { .. }
        | ControlRequest::Transfer { .. }
        | ControlRequest::CancelTransfer { .. }
        | ControlRequest::AcceptTransfer { .. }
        | ControlRequest::RejectTransfer { .. }
        | ControlRequest::Download { .. } => Role::Web,
        ControlRequest::Ban { .. } | ControlRequest::Audit { .. } => Role::Operator,
    }
}

/// The method's name as the audit log records it.
pub fn method_name(req: &ControlRequest) -> &'static str {
    match req {
        ControlRequest::Hello { .. } => "hello",
        ControlRequest::Status { .. } => "status",
        ControlRequest::Peers { .. } => "peers",
        ControlRequest::Peer { .. } => "peer",
        ControlRequest::Connect { .. } => "connect",
        ControlRequest::Disconnect { .. } => "disconnect",
        ControlRequest::Pin { .. } => "pin",
        ControlRequest::Ban { .. } => "ban",
        ControlRequest::Discovery { .. } => "discovery",
        ControlRequest::FindPeer { .. } => "find_peer",
        ControlRequest::History { .. } => "history",
        ControlRequest::Topology { .. } => "topology",
        ControlRequest::Metrics { .. } => "metrics",
        ControlRequest::Audit { .. } => "audit",
        ControlRequest::Events { .. } => "events",
        ControlRequest::UploadBegin { .. } => "upload_begin",
        ControlRequest::UploadChunk { .. } => "upload_chunk",
        ControlRequest::UploadFinish { .. } => "upload_finish",
        ControlRequest::SendTransfer { .. } => "send_transfer",
        ControlRequest::Transfers { .. } => "transfers",
        ControlRequest::Transfer { .. } => "transfer",
        ControlRequest::CancelTransfer { .. } => "cancel_transfer",
        ControlRequest::AcceptTransfer { .. } => "accept_transfer",
        ControlRequest::RejectTransfer { .. } => "reject_transfer",
        ControlRequest::Download { .. } => "download",
    }
}

/// Whether a call changes state and so belongs in the audit log (reads would drown it).
pub fn is_audited(req: &ControlRequest) -> bool {
    matches!(
        req,
        ControlRequest::Connect { .. }
            | ControlRequest::Disconnect { .. }
            | ControlRequest::Pin { .. }
            | ControlRequest::Ban { .. }
            | ControlRequest::Discovery { .. }
            | ControlRequest::SendTransfer { .. }
            | ControlRequest::CancelTransfer { .. }
            | ControlRequest::AcceptTransfer { .. }
            | ControlRequest::RejectTransfer { .. }
    )
}

/// The arguments worth recording for accountability; never secrets.
pub fn audit_detail(req: &ControlRequest) -> String {
    match req {
        ControlRequest::Connect { target } => target.clone(),
        ControlRequest::Disconnect { peer_id } => peer_id.clone(),
        ControlRequest::Pin { peer_id, pinned } => format!("{peer_id} pinned={pinned}"),
        ControlRequest::Ban { peer_id, banned } => format!("{peer_id} banned={banned}"),
        ControlRequest::Discovery { change } => {
            format!("mdns={:?} bootstrap_now={}", change.mdns, change.bootstrap_now)
        }
        ControlRequest::SendTransfer { transfer } => format!(
            "to {} ({} documents)",
            transfer
                .recipients
                .iter()
                .map(|r| r.peer_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            transfer.documents.len()
        ),
        ControlRequest::CancelTransfer { id } | ControlRequest::AcceptTransfer { id } => id.clone(),
        ControlRequest::RejectTransfer { id, .. } => id.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_self_are_operators_strangers_are_not() {
        let policy = AccessPolicy {
            daemon_uid: 4242,
            control_group: "firma-no-such-group".into(),
            web_users: vec![],
        };
        assert_eq!(
            policy.role_of(&Caller {
                uid: 0,
                gid: 0,
                pid: None
            }),
            Some(Role::Operator)
        );
        assert_eq!(
            policy.role_of(&Caller {
                uid: 4242,
                gid: 1,
                pid: None
            }),
            Some(Role::Operator)
        );
        assert_eq!(
            policy.role_of(&Caller {
                uid: 65534,
                gid: 65534,
                pid: None
            }),
            None
        );
    }

    #[test]
    fn web_users_get_the_narrow_role() {
        let policy = AccessPolicy {
            daemon_uid: 4242,
            control_group: "nogroup".into(),
            web_users: vec!["nobody".into()],
        };
        assert_eq!(
            policy.role_of(&Caller {
                uid: 65534,
                gid: 65534,
                pid: None
            }),
            Some(Role::Web)
        );
        assert_eq!(
            required_role(&ControlRequest::Ban {
                peer_id: "x".into(),
                banned: true
            }),
            Role::Operator
        );
        assert_eq!(required_role(&ControlRequest::Status {}), Role::Web);
    }
}
