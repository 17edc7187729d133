//! The control API's implementation. Thin by design: check input, call the network handle or
//! the store, shape the answer. Authorisation and auditing happen around it, in `guard.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use firma_ipc::event::EventBatch;
use firma_ipc::service::{MAX_EVENTS_BATCH, MAX_EVENTS_WAIT_MS};
use firma_ipc::transfer::{NewTransfer, StagedDocument, TransferFilter, TransferInfo, UploadStart};
use firma_ipc::types::{
    AuditRecord, ConnectOutcome, ConnectionRecord, DiscoveryChange, DiscoveryState, Hello, HistoryQuery, Metric,
    MetricKind, Metrics, PeerFilter, PeerInfo, Role, Status, Topology, TopologyEdge, TopologyNode,
};
use firma_ipc::{API_VERSION, Control, IpcError};
use tarpc::context::Context;

use super::auth::Caller;
use super::limits::Activity;
use crate::core::Core;
use crate::store::StoreOp;

/// Peer tables up to this size are counted on the runtime thread; larger ones off it.
const INLINE_SCAN_MAX: u64 = 256;

/// Most history or audit records one call returns.
const MAX_RECORDS: u32 = 10_000;

/// Per-connection facts: who called, and the role this connection holds now.
pub struct ConnInfo {
    pub caller: Caller,
    /// Most the credentials allow.
    pub allowed: Role,
    /// What `hello` narrowed it to; only ever narrows.
    granted: AtomicU8,
    /// For the connection's deadlines (`hello`, idleness).
    pub activity: Activity,
}

fn role_to_u8(r: Role) -> u8 {
    match r {
        Role::Web => 0,
        Role::Operator => 1,
    }
}

impl ConnInfo {
    pub fn new(caller: Caller, allowed: Role) -> Self {
        Self {
            caller,
            allowed,
            granted: AtomicU8::new(role_to_u8(allowed)),
            activity: Activity::new(),
        }
    }
    pub fn granted(&self) -> Role {
        if self.granted.load(Ordering::Acquire) == 0 {
            Role::Web
        } else {
            Role::Operator
        }
    }
    fn narrow(&self, want: Role) -> Role {
        self.granted.fetch_min(role_to_u8(want), Ordering::AcqRel);
        self.granted()
    }
}

#[derive(Clone)]
pub struct ControlService {
    pub core: Arc<Core>,
    pub conn: Arc<ConnInfo>,
}

fn check_peer_id(peer_id: &str) -> Result<(), IpcError> {
    if peer_id.is_empty() || peer_id.len() > 128 || !peer_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(IpcError::invalid(format!(
            "`{peer_id}` is not a peer id (expected base58, e.g. 12D3KooW...)"
        )));
    }
    Ok(())
}

/// A dial target as (address without `/p2p/<id>`, peer id): `/ip4/…/tcp/1/p2p/ID`,
/// `/ip4/…/tcp/1`, `/p2p/ID` or a bare `ID`. Textual: the network parses it properly later.
fn split_target(target: &str) -> (Option<&str>, Option<&str>) {
    if !target.starts_with('/') {
        return (None, (!target.is_empty()).then_some(target));
    }
    let target = target.trim_end_matches('/');
    match target.rsplit_once("/p2p/") {
        Some((addr, id)) if !id.contains('/') => ((!addr.is_empty()).then_some(addr), Some(id)),
        _ => ((!target.is_empty()).then_some(target), None),
    }
}

/// A stored address without a trailing `/p2p/<id>`, for comparing with a target's address.
fn strip_p2p(addr: &str) -> &str {
    split_target(addr).0.unwrap_or(addr)
}

impl ControlService {
    async fn peer_info(&self, peer_id: String) -> Result<PeerInfo, IpcError> {
        let connected = self.core.live().connected.contains_key(&peer_id);
        let id = peer_id.clone();
        self.core
            .read(move |s| s.get_peer(&id))
            .await?
            .map(|rec| rec.to_info(connected))
            .ok_or_else(|| IpcError::not_found(format!("peer {peer_id} is not known to this daemon")))
    }

    /// The web role dials only what this daemon already knows: a known peer by its id, or a
    /// known address (with or without the peer's `/p2p/` id). Dialling anything else, which
    /// would let the web tier probe arbitrary hosts, is an operator's decision.
    async fn check_known_target(&self, target: &str) -> Result<(), IpcError> {
        let target = target.trim();
        let (addr, peer) = split_target(target);
        let refuse = |what: String| {
            IpcError::denied(format!(
                "the web role may connect only to peers and addresses this daemon already knows, and {what}; \
                 an operator can dial it: firmactl connect {target}"
            ))
        };
        let known = |rec: &crate::store::PeerRecord, addr: &str| rec.addrs.iter().any(|a| strip_p2p(&a.addr) == addr);
        match (addr, peer) {
            (addr, Some(peer_id)) => {
                check_peer_id(peer_id)?;
                let id = peer_id.to_owned();
                let rec = self
                    .core
                    .read(move |s| s.get_peer(&id))
                    .await?
                    .ok_or_else(|| refuse(format!("peer {peer_id} is not known")))?;
                match addr {
                    Some(addr) if !known(&rec, addr) => {
                        Err(refuse(format!("{addr} is not a known address of peer {peer_id}")))
                    }
                    _ => Ok(()),
                }
            }
            (Some(addr), None) => {
                let records = self.core.read(|s| s.list_peers()).await?;
                if records.iter().any(|r| known(r, addr)) {
                    Ok(())
                } else {
                    Err(refuse(format!("{addr} is not a known address of any peer")))
                }
            }
            // Empty: the network's own parser says what is wrong with it.
            (None, None) => Ok(()),
        }
    }

    async fn discovery_state(&self) -> DiscoveryState {
        match self.core.live().discovery {
            Some(d) => d,
            None => DiscoveryState {
                mdns_enabled: false,
                dht_enabled: false,
            },
        }
    }
}

impl Control for ControlService {
    async fn hello(
        self,
        _: Context,
        client_api_version: u32,
        client_name: String,
        want_role: Role,
    ) -> Result<Hello, IpcError> {
        let role = self.conn.narrow(want_role);
        self.conn.activity.hello();
        tracing::debug!(client = %client_name.chars().take(64).collect::<String>(), client_api_version, ?role, uid = self.conn.caller.uid, "control client said hello");
        Ok(Hello {
            api_version: API_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            peer_id: self.core.peer_id.clone(),
            role,
        })
    }

    async fn status(self, _: Context) -> Result<Status, IpcError> {
        // Status must answer even with an unhealthy store: counts fall back to zero.
        let store = &self.core.store;
        let counts = if store.peer_total().is_ok_and(|n| n <= INLINE_SCAN_MAX) {
            // A small table is counted in microseconds: no thread hop for the most frequent call.
            store.peer_counts().map_err(crate::core::store_error)
        } else {
            self.core.read(|s| s.peer_counts()).await
        };
        let (known, pinned) = counts.unwrap_or_default();
        let discovery = self.discovery_state().await;
        let (listen_addrs, connected) = {
            let live = self.core.live();
            (live.listen_addrs.clone(), live.connected.len() as u32)
        };
        Ok(Status {
            peer_id: self.core.peer_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: API_VERSION,
            uptime_ms: self.core.started.elapsed().as_millis() as u64,
            listen_addrs,
            connected_peers: connected,
            known_peers: known,
            pinned_peers: pinned,
            discovery,
            store: self.core.store.status(),
            event_head: self.core.events.head(),
        })
    }

    async fn peers(self, _: Context, filter: PeerFilter) -> Result<Vec<PeerInfo>, IpcError> {
        let records = self.core.read(|s| s.list_peers()).await?;
        let live = self
            .core
            .live()
            .connected
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>();
        Ok(records
            .into_iter()
            .map(|r| {
                let connected = live.contains(&r.peer_id);
                r.to_info(connected)
            })
            .filter(|p| match filter {
                PeerFilter::Connected => p.connected,
                PeerFilter::Known => true,
                PeerFilter::Pinned => p.pinned,
            })
            .collect())
    }

    async fn peer(self, _: Context, peer_id: String) -> Result<PeerInfo, IpcError> {
        check_peer_id(&peer_id)?;
        self.peer_info(peer_id).await
    }

    async fn connect(self, _: Context, target: String) -> Result<ConnectOutcome, IpcError> {
        if target.len() > 1024 {
            return Err(IpcError::invalid("target is longer than 1024 bytes"));
        }
        if self.conn.granted() == Role::Web {
            self.check_known_target(&target).await?;
        }
        self.core.net.dial(target).await
    }

    async fn disconnect(self, _: Context, peer_id: String) -> Result<(), IpcError> {
        check_peer_id(&peer_id)?;
        self.core.net.disconnect(peer_id).await
    }

    async fn pin(self, _: Context, peer_id: String, pinned: bool) -> Result<PeerInfo, IpcError> {
        check_peer_id(&peer_id)?;
        self.core.net.set_redial(peer_id.clone(), pinned).await?;
        self.core
            .writer
            .send(StoreOp::SetPinned {
                peer_id: peer_id.clone(),
                pinned,
            })
            .await
            .map_err(crate::core::store_error)?;
        self.core.writer.flush().await.map_err(crate::core::store_error)?;
        let info = self.peer_info(peer_id.clone()).await?;
        self.core.events.append(
            firma_ipc::event::Event::PeerUpdated {
                peer_id,
                pinned: info.pinned,
                banned: info.banned,
            },
            crate::core::now_ms(),
        );
        Ok(info)
    }

    async fn ban(self, _: Context, peer_id: String, banned: bool) -> Result<PeerInfo, IpcError> {
        check_peer_id(&peer_id)?;
        self.core.net.set_banned(peer_id.clone(), banned).await?;
        self.core
            .writer
            .send(StoreOp::SetBanned {
                peer_id: peer_id.clone(),
                banned,
            })
            .await
            .map_err(crate::core::store_error)?;
        self.core.writer.flush().await.map_err(crate::core::store_error)?;
        let info = self.peer_info(peer_id.clone()).await?;
        self.core.events.append(
            firma_ipc::event::Event::PeerUpdated {
                peer_id,
                pinned: info.pinned,
                banned: info.banned,
            },
            crate::core::now_ms(),
        );
        Ok(info)
    }

    async fn discovery(self, _: Context, change: DiscoveryChange) -> Result<DiscoveryState, IpcError> {
        let mut state = self.core.net.discovery().await?;
        if let Some(mdns) = change.mdns {
            state = self.core.net.set_mdns(mdns).await?;
        }
        if change.bootstrap_now {
            self.core.net.bootstrap().await?;
        }
        Ok(state)
    }

    async fn find_peer(self, _: Context, peer_id: String) -> Result<Vec<String>, IpcError> {
        check_peer_id(&peer_id)?;
        self.core.net.find_peer(peer_id).await
    }

    async fn history(self, _: Context, query: HistoryQuery) -> Result<Vec<ConnectionRecord>, IpcError> {
        if let Some(p) = &query.peer_id {
            check_peer_id(p)?;
        }
        let limit = query.limit.clamp(1, MAX_RECORDS) as usize;
        self.core
            .read(move |s| s.history(query.peer_id.as_deref(), limit))
            .await
    }

    async fn topology(self, _: Context) -> Result<Topology, IpcError> {
        let records = self.core.read(|s| s.list_peers()).await?;
        let live = self.core.live().connected.clone();
        let local = self.core.peer_id.clone();
        let mut nodes = vec![TopologyNode {
            peer_id: local.clone(),
            local: true,
            connected: true,
            agent: Some(format!("firma-transportd/{}", env!("CARGO_PKG_VERSION"))),
        }];
        let mut edges = Vec::new();
        for r in records {
            let conn = live.get(&r.peer_id);
            if let Some(c) = conn {
                edges.push(TopologyEdge {
                    from: local.clone(),
                    to: r.peer_id.clone(),
                    rtt_us: c.rtt_us.or(r.last_rtt_us),
                });
            }
            nodes.push(TopologyNode {
                peer_id: r.peer_id,
                local: false,
                connected: conn.is_some(),
                agent: r.agent,
            });
        }
        Ok(Topology { nodes, edges })
    }

    async fn metrics(self, _: Context) -> Result<Metrics, IpcError> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.core.counters;
        let known = self.core.read(|s| s.peer_total()).await.unwrap_or(0);
        let store = self.core.store.status();
        let m = |name: &str, help: &str, kind: MetricKind, value: f64| Metric {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            value,
        };
        use MetricKind::{Counter, Gauge};
        Ok(Metrics {
            metrics: [
                m(
                    "firma_connections_opened_total",
                    "P2P connections opened",
                    Counter,
                    c.connections_opened.load(Relaxed) as f64,
                ),
                m(
                    "firma_connections_closed_total",
                    "P2P peers that lost their last connection",
                    Counter,
                    c.connections_closed.load(Relaxed) as f64,
                ),
                m(
                    "firma_dial_failures_total",
                    "Outgoing dials that failed",
                    Counter,
                    c.dial_failures.load(Relaxed) as f64,
                ),
                m(
                    "firma_control_calls_total",
                    "Control API calls served",
                    Counter,
                    c.rpc_calls.load(Relaxed) as f64,
                ),
                m(
                    "firma_control_denied_total",
                    "Control API calls refused for the caller's role",
                    Counter,
                    c.rpc_denied.load(Relaxed) as f64,
                ),
                m(
                    "firma_control_refused_connections_total",
                    "Control connections closed for their credentials or limits",
                    Counter,
                    c.control_refused.load(Relaxed) as f64,
                ),
                m(
                    "firma_store_errors_total",
                    "Store reads or writes that failed",
                    Counter,
                    c.store_errors.load(Relaxed) as f64,
                ),
                m(
                    "firma_connected_peers",
                    "Peers with an open connection",
                    Gauge,
                    self.core.live().connected.len() as f64,
                ),
                m("firma_known_peers", "Peers in the store", Gauge, known as f64),
                m(
                    "firma_control_connections",
                    "Open control connections",
                    Gauge,
                    c.control_open.load(Relaxed) as f64,
                ),
                m(
                    "firma_event_head",
                    "Sequence number of the newest event",
                    Gauge,
                    self.core.events.head() as f64,
                ),
                m(
                    "firma_uptime_seconds",
                    "Seconds since the daemon started",
                    Gauge,
                    self.core.started.elapsed().as_secs_f64(),
                ),
                m(
                    "firma_store_used_bytes",
                    "Bytes used in the LMDB map",
                    Gauge,
                    store.used_bytes as f64,
                ),
                m(
                    "firma_store_map_bytes",
                    "Size of the LMDB map",
                    Gauge,
                    store.map_size_bytes as f64,
                ),
            ]
            .into_iter()
            // Absent, not 0, when the file system cannot be read: 0 would read as a full disk.
            .chain(store.disk_free_bytes.map(|free| {
                m(
                    "firma_disk_free_bytes",
                    "Bytes free on the file system holding the store",
                    Gauge,
                    free as f64,
                )
            }))
            .collect(),
        })
    }

    async fn audit(self, _: Context, limit: u32) -> Result<Vec<AuditRecord>, IpcError> {
        let limit = limit.clamp(1, MAX_RECORDS) as usize;
        self.core.read(move |s| s.audit(limit)).await
    }

    async fn events(self, _: Context, after: u64, max: u32, wait_ms: u32) -> Result<EventBatch, IpcError> {
        let max = max.clamp(1, MAX_EVENTS_BATCH) as usize;
        let wait = Duration::from_millis(u64::from(wait_ms.min(MAX_EVENTS_WAIT_MS)));
        Ok(self.core.events.poll(after, max, wait).await)
    }

    // Transfers: thin delegations into the engine (transfer/), which checks its own input.
    async fn upload_begin(self, _: Context, start: UploadStart) -> Result<String, IpcError> {
        self.core.transfers()?.upload_begin(start).await
    }
    async fn upload_chunk(
        self,
        _: Context,
        upload_id: String,
        offset: u64,
        data: serde_bytes::ByteBuf,
    ) -> Result<u64, IpcError> {
        self.core
            .transfers()?
            .upload_chunk(upload_id, offset, data.into_vec())
            .await
    }
    async fn upload_finish(self, _: Context, upload_id: String) -> Result<StagedDocument, IpcError> {
        self.core.transfers()?.upload_finish(upload_id).await
    }
    async fn send_transfer(self, _: Context, transfer: NewTransfer) -> Result<TransferInfo, IpcError> {
        self.core.transfers()?.send_transfer(transfer).await
    }
    async fn transfers(self, _: Context, filter: TransferFilter) -> Result<Vec<TransferInfo>, IpcError> {
        self.core.transfers()?.transfers(filter).await
    }
    async fn transfer(self, _: Context, id: String) -> Result<TransferInfo, IpcError> {
        self.core.transfers()?.transfer(id).await
    }
    async fn cancel_transfer(self, _: Context, id: String) -> Result<TransferInfo, IpcError> {
        self.core.transfers()?.cancel_transfer(id).await
    }
    async fn accept_transfer(self, _: Context, id: String) -> Result<TransferInfo, IpcError> {
        self.core.transfers()?.accept_transfer(id).await
    }
    async fn reject_transfer(self, _: Context, id: String, reason: String) -> Result<TransferInfo, IpcError> {
        self.core.transfers()?.reject_transfer(id, reason).await
    }
    async fn download(
        self,
        _: Context,
        transfer_id: String,
        document_id: String,
        offset: u64,
        max_len: u32,
    ) -> Result<serde_bytes::ByteBuf, IpcError> {
        let bytes = self
            .core
            .transfers()?
            .download(transfer_id, document_id, offset, max_len)
            .await?;
        Ok(serde_bytes::ByteBuf::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_targets_split_into_address_and_peer() {
        let id = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
        let full = format!("/ip4/127.0.0.1/tcp/9092/p2p/{id}");
        assert_eq!(split_target(&full), (Some("/ip4/127.0.0.1/tcp/9092"), Some(id)));
        assert_eq!(
            split_target(&format!("{full}/")),
            (Some("/ip4/127.0.0.1/tcp/9092"), Some(id))
        );
        assert_eq!(
            split_target("/ip4/127.0.0.1/tcp/9092"),
            (Some("/ip4/127.0.0.1/tcp/9092"), None)
        );
        assert_eq!(split_target(&format!("/p2p/{id}")), (None, Some(id)));
        assert_eq!(split_target(id), (None, Some(id)));
        assert_eq!(split_target(""), (None, None));
        // A relayed address keeps its inner /p2p/ in the address part.
        let relayed = format!("/ip4/1.2.3.4/tcp/1/p2p/{id}/p2p-circuit");
        assert_eq!(split_target(&relayed), (Some(relayed.as_str()), None));
        assert_eq!(strip_p2p(&full), "/ip4/127.0.0.1/tcp/9092");
    }
}
