//! `ApiError`: every failure of a REST handler, rendered as a status and `{"error": "...", "code": "..."}`
//! (upstream's error shape plus a stable code to branch on).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use firma_ipc::{ErrorCode, IpcError};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// The daemon cannot be reached right now; the message names the socket and the cause.
    pub fn daemon_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "daemon_unavailable", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required: send `Authorization: Bearer <token from web.token>` or sign in through a login link",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl From<IpcError> for ApiError {
    fn from(e: IpcError) -> Self {
        let (status, code) = match e.code {
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::Denied => (StatusCode::FORBIDDEN, "denied"),
            ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorCode::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        };
        Self::new(status, code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message, "code": self.code }))).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ipc_codes_map_to_statuses() {
        assert_eq!(ApiError::from(IpcError::not_found("x")).status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(IpcError::denied("x")).status, StatusCode::FORBIDDEN);
        assert_eq!(ApiError::from(IpcError::invalid("x")).status, StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::from(IpcError::unavailable("x")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::daemon_unavailable("gone").status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
