//! The control service. tarpc generates `ControlClient`, `ControlRequest` and `ControlResponse`
//! from this trait; the daemon derives each method's required role from `ControlRequest` with an
//! exhaustive match, so a method added here cannot be forgotten by the authorisation check.

use crate::error::IpcError;
use crate::event::EventBatch;
use crate::transfer::{NewTransfer, StagedDocument, TransferFilter, TransferInfo, UploadStart};
use crate::types::{
    AuditRecord, ConnectOutcome, ConnectionRecord, DiscoveryChange, DiscoveryState, Hello, HistoryQuery, Metrics,
    PeerFilter, PeerInfo, Role, Status, Topology,
};

/// Bumped on every incompatible change of the service or its types. Clients compare it in `hello`.
pub const API_VERSION: u32 = 1;

/// Largest frame either side accepts on the control socket. Document bytes travel in chunks
/// well below it, so nothing legitimate comes close.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Longest time the daemon holds an `events` long poll open.
pub const MAX_EVENTS_WAIT_MS: u32 = 60_000;

/// Most events returned by one `events` call.
pub const MAX_EVENTS_BATCH: u32 = 1024;

#[tarpc::service]
pub trait Control {
    /// Version handshake; the first call of every client. The daemon answers with its own API
    /// version and the role it gave this connection: the lesser of `want_role` and what the
    /// caller's credentials allow (the web tier asks for `Web` even where it runs as an operator).
    /// The client refuses to go on if the versions differ.
    async fn hello(client_api_version: u32, client_name: String, want_role: Role) -> Result<Hello, IpcError>;
    async fn status() -> Result<Status, IpcError>;
    async fn peers(filter: PeerFilter) -> Result<Vec<PeerInfo>, IpcError>;
    async fn peer(peer_id: String) -> Result<PeerInfo, IpcError>;
    /// Dial a multiaddr (with or without `/p2p/<id>`) or a known peer id.
    async fn connect(target: String) -> Result<ConnectOutcome, IpcError>;
    async fn disconnect(peer_id: String) -> Result<(), IpcError>;
    async fn pin(peer_id: String, pinned: bool) -> Result<PeerInfo, IpcError>;
    async fn ban(peer_id: String, banned: bool) -> Result<PeerInfo, IpcError>;
    async fn discovery(change: DiscoveryChange) -> Result<DiscoveryState, IpcError>;
    /// Ask the DHT for a peer's addresses.
    async fn find_peer(peer_id: String) -> Result<Vec<String>, IpcError>;
    async fn history(query: HistoryQuery) -> Result<Vec<ConnectionRecord>, IpcError>;
    async fn topology() -> Result<Topology, IpcError>;
    async fn metrics() -> Result<Metrics, IpcError>;
    /// Newest audit-log records first.
    async fn audit(limit: u32) -> Result<Vec<AuditRecord>, IpcError>;
    /// Long poll: events with `seq > after`, waiting up to `wait_ms` for the first one.
    /// Callers must give the request a deadline longer than `wait_ms`.
    async fn events(after: u64, max: u32, wait_ms: u32) -> Result<EventBatch, IpcError>;

    /// Begins streaming one document into the daemon (which may run as another user and must
    /// not need to read the caller's files). Returns the upload id.
    async fn upload_begin(start: UploadStart) -> Result<String, IpcError>;
    /// Appends bytes at `offset` (at most `MAX_IPC_CHUNK`); returns the bytes held so far, so a
    /// client that lost its connection continues from there.
    async fn upload_chunk(upload_id: String, offset: u64, data: serde_bytes::ByteBuf) -> Result<u64, IpcError>;
    /// Hashes the upload and stages it for `send_transfer`.
    async fn upload_finish(upload_id: String) -> Result<StagedDocument, IpcError>;
    /// Creates an outgoing transfer in the durable outbox; delivery proceeds in the background.
    async fn send_transfer(transfer: NewTransfer) -> Result<TransferInfo, IpcError>;
    async fn transfers(filter: TransferFilter) -> Result<Vec<TransferInfo>, IpcError>;
    async fn transfer(id: String) -> Result<TransferInfo, IpcError>;
    /// Stops a transfer that has not finished: an outgoing one ends `cancelled`, an incoming one
    /// `rejected` (the receiving side has no cancelled state; the sender is told it was refused).
    async fn cancel_transfer(id: String) -> Result<TransferInfo, IpcError>;
    async fn accept_transfer(id: String) -> Result<TransferInfo, IpcError>;
    async fn reject_transfer(id: String, reason: String) -> Result<TransferInfo, IpcError>;
    /// Reads up to `max_len` (at most `MAX_IPC_CHUNK`) bytes of a received document at `offset`.
    async fn download(
        transfer_id: String,
        document_id: String,
        offset: u64,
        max_len: u32,
    ) -> Result<serde_bytes::ByteBuf, IpcError>;
}
