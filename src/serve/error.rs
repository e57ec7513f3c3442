//! Errors as the HTTP API answers them: a status and `{"error": .., "documentation": ..}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::runtime::RuntimeError;

/// Where the HTTP API is documented; every error body links it.
pub const DOCUMENTATION: &str = "https://github.com/petrel-dev/petrel/blob/main/docs/http-api.md";

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message for the `error` field.
    pub message: String,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 Forbidden: a missing, unknown or insufficient token.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "documentation": DOCUMENTATION});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        let status = match &e {
            RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RuntimeError::Custom { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            RuntimeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            RuntimeError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError::new(status, e.to_string())
    }
}
