//! The `/v1` error: every refusal leaves in the OpenAI shape
//! `{"error": {"message", "type", "code"}}`, mapped here once.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::auth::api_keys::KeyRefusal;
use crate::foundation::error::Error;

/// A `/v1` failure with its HTTP status and OpenAI error type and code.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: String,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// Set on a refusal Codex must show as "usage limit reached" (see [`ProxyError::usage_limit`]).
    pub usage_limit: Option<Box<UsageLimit>>,
}

/// What a usage-limit refusal carries beyond the OpenAI error shape.
#[derive(Debug, Clone, Default)]
pub struct UsageLimit {
    /// When the window in the way resets (Unix seconds); `None` when only a top-up helps.
    pub resets_at: Option<i64>,
    /// The `x-codex-*` quota headers (and the promo message Codex prints).
    pub headers: Vec<(&'static str, String)>,
}

impl ProxyError {
    pub fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        ProxyError {
            status,
            kind,
            code: code.to_string(),
            message: message.into(),
            retry_after_secs: None,
            usage_limit: None,
        }
    }

    /// A refusal that waiting seconds cannot change (money, allowance, caps): 429 with
    /// `error.type = "usage_limit_reached"` and `error.resets_at`, the shape the Codex
    /// CLI turns into its terminal "You've hit your usage limit … try again at …"
    /// error instead of retrying. `code` keeps the gateway's own stable code.
    pub fn usage_limit(code: &str, message: impl Into<String>, limit: UsageLimit) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "usage_limit_reached", code, message);
        e.usage_limit = Some(Box::new(limit));
        e
    }

    /// The JSON error body (also sent in-band on the WebSocket transport).
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "message": self.message, "type": self.kind, "code": self.code });
        if let Some(limit) = &self.usage_limit {
            error["resets_at"] = json!(limit.resets_at);
        }
        json!({ "error": error })
    }

    /// Headers that go with the error (quota headers, `Retry-After`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = self.usage_limit.as_ref().map(|l| l.headers.clone()).unwrap_or_default();
        if let Some(secs) = self.retry_after_secs {
            out.push(("retry-after", secs.to_string()));
        }
        out
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
            KeyRefusal::SpendLimitReached => {
                return Self::usage_limit(refusal.code(), refusal.message(), UsageLimit::default())
            }
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
        ProxyError {
            status,
            kind,
            code: err.code().to_string(),
            message: err.public_message(),
            retry_after_secs,
            usage_limit: None,
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        for (name, value) in self.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}
