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

/// The longest plain-text error body kept as a message.
const MAX_PLAIN_ERROR_BYTES: usize = 16 * 1024;

/// Rejections that axum and its layers answer themselves (a body over the limit, a wrong
/// content type, an unreadable query string or JSON body) carry plain text: rewrites every
/// error answer that is not JSON into the API's JSON error body, keeping its status and
/// headers.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let json = ApiError::new(status, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, json.into_body())
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
            RuntimeError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RuntimeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}
