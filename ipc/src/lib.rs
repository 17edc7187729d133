//! firma-ipc: the one contract between `firma-transportd` and every process that drives it.
//!
//! Everything that crosses the control socket is defined here: the tarpc service
//! ([`service::Control`]), its wire types ([`types`]), the seq-numbered [`event::Event`] stream,
//! the coded [`error::IpcError`], the wire codec and a [`client`] with readable connection errors.
//! Nothing here knows about libp2p or LMDB: peer ids and multiaddrs travel as strings.

pub mod client;
pub mod codec;
pub mod error;
pub mod event;
pub mod paths;
pub mod service;
pub mod transfer;
pub mod types;

pub use error::{ErrorCode, IpcError};
pub use service::{API_VERSION, Control, ControlClient, ControlRequest, ControlResponse, MAX_FRAME, ServeControl};
