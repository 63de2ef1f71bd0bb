//! HTTP errors, mapped in one place to `{"error":{"code","message"}}` with the right status.
//!
//! Policy: a client error says what was wrong. An unexpected one (the database, a provider) is
//! logged with its detail and a fresh request id, and the client gets a generic message with the
//! same id (`{"error":{"code","message","request_id"}}`), never the driver's text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Set for unexpected errors: the id under which the detail was logged.
    pub request_id: Option<String>,
    /// Set for 429: the limit per minute and the seconds until a request is allowed again.
    pub rate_limit: Option<(u32, u64)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: None,
            rate_limit: None,
        }
    }

    /// An unexpected failure of `what`: the detail is logged under a new request id, the client
    /// sees `message` and the id.
    pub fn unexpected(status: StatusCode, code: &'static str, message: &str, detail: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        tracing::error!(request_id = %id, code, error = %detail, "request failed");
        Self {
            status,
            code,
            message: format!("{message} (request id {id})"),
            request_id: Some(id),
            rate_limit: None,
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(id) = self.request_id {
            error["request_id"] = json!(id);
        }
        let body = Json(json!({ "error": error }));
        let mut response = (self.status, body).into_response();
        if let Some((limit, retry_s)) = self.rate_limit {
            let h = response.headers_mut();
            h.insert(axum::http::header::RETRY_AFTER, retry_s.into());
            h.insert("ratelimit-limit", limit.into());
            h.insert("ratelimit-remaining", 0.into());
            h.insert("ratelimit-reset", retry_s.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::unexpected(
            StatusCode::SERVICE_UNAVAILABLE,
            "database",
            "the database could not answer; try again",
            &e,
        )
    }
}
