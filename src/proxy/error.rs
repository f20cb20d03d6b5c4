//! The `/v1` error: every refusal leaves in the OpenAI shape
//! `{"error": {"message", "type", "code"}}`, mapped here once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::api_keys::KeyRefusal;
use crate::error::Error;

/// A `/v1` failure with its HTTP status and OpenAI error type and code.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: String,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ProxyError {
    pub fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        ProxyError { status, kind, code: code.to_string(), message: message.into(), retry_after_secs: None }
    }

    pub fn invalid_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", code, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model `{model}` does not exist or is not offered by this gateway"),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than the {limit}-byte limit"),
        )
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error", message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", "upstream_timeout", message)
    }

    /// Why an API key was refused.
    pub fn from_refusal(refusal: KeyRefusal) -> Self {
        let (status, kind) = match refusal {
            KeyRefusal::Unknown | KeyRefusal::Revoked | KeyRefusal::Expired => {
                (StatusCode::UNAUTHORIZED, "authentication_error")
            }
            KeyRefusal::UserSuspended => (StatusCode::FORBIDDEN, "permission_error"),
            KeyRefusal::SpendLimitReached => (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota"),
        };
        Self::new(status, kind, refusal.code(), refusal.message())
    }
}

impl From<Error> for ProxyError {
    fn from(err: Error) -> Self {
        err.log_if_internal();
        let status = err.status_code();
        let kind = match &err {
            Error::PaymentRequired { .. } => "insufficient_quota",
            Error::RateLimited { .. } => "rate_limit_error",
            Error::Unauthorized(_) => "authentication_error",
            Error::Forbidden { .. } => "permission_error",
            Error::BadGateway { .. } => "upstream_error",
            _ if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let retry_after_secs = match &err {
            Error::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        ProxyError { status, kind, code: err.code().to_string(), message: err.public_message(), retry_after_secs }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "message": self.message, "type": self.kind, "code": self.code } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
