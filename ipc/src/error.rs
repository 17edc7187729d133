//! The error every API call can return: serialisable, coded so that callers branch on
//! [`ErrorCode`] rather than on message text, and always carrying a human-readable message.

use serde::{Deserialize, Serialize};

/// What kind of failure happened; stable across versions so scripts and the web tier can map it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer, transfer or record asked for does not exist.
    NotFound,
    /// The caller's role may not call this method.
    Denied,
    /// The daemon cannot do it right now (store unhealthy, swarm stopping, dial failed).
    Unavailable,
    /// The request itself is wrong (bad peer id, bad multiaddr, out-of-range value).
    Invalid,
    /// A bug or an unexpected I/O failure inside the daemon.
    Internal,
    /// The operation did not finish before its deadline.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Denied, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }
}
