//! The domain error: what went wrong, in terms every surface can translate.
//!
//! Domain modules return [`Error`]; the JSON API (`api::error`), the OpenAI-compatible
//! proxy (`proxy::error`) and the web pages each map it to HTTP exactly once.

use axum::http::StatusCode;

/// Result alias used across the domain modules.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input (400): bad JSON, missing field, wrong type.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A body field the route does not know (400), named, so a typo never looks like success.
    #[error("{message}")]
    UnknownField { field: String, message: String },
    /// Well-formed input that breaks a rule (422), naming the field.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The user cannot pay (402).
    #[error("{message}")]
    PaymentRequired { code: &'static str, message: String },
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// A dependency (database, payment gateway) is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// The payment gateway or another remote answered badly (502).
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest { code, message: message.into() }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation { field: field.into(), message: message.into() }
    }

    /// The field `field` is not part of this body (`what` names the body, for the message).
    pub fn unknown_field(field: impl Into<String>, what: &str) -> Self {
        let field = field.into();
        Error::UnknownField { message: format!("unknown field `{field}` in {what}"), field }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Error::Forbidden { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict { code, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(anyhow::anyhow!(message.into()))
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } | Error::UnknownField { .. } => StatusCode::BAD_REQUEST,
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Error::Database(e) if is_connectivity(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(e) if is_unstorable_text(e) => StatusCode::BAD_REQUEST,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable snake_case code that scripts can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. }
            | Error::Forbidden { code, .. }
            | Error::Conflict { code, .. }
            | Error::PaymentRequired { code, .. }
            | Error::BadGateway { code, .. } => code,
            Error::Validation { .. } => "validation_failed",
            Error::UnknownField { .. } => "unknown_field",
            Error::Unauthorized(_) => "unauthorized",
            Error::NotFound(_) => "not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable(_) => "service_unavailable",
            Error::Database(e) if is_connectivity(e) => "database_unavailable",
            Error::Database(e) if is_unstorable_text(e) => "invalid_text",
            Error::Database(_) | Error::Internal(_) => "internal_error",
        }
    }

    /// Text safe to show a client: internal details are logged, not returned.
    pub fn public_message(&self) -> String {
        match self {
            Error::Database(e) if is_connectivity(e) => "the database is unavailable, try again shortly".into(),
            Error::Database(e) if is_unstorable_text(e) => {
                "the text contains a character that cannot be stored (NUL)".into()
            }
            Error::Database(_) | Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// The field a validation error is about, for forms and JSON clients.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Validation { field, .. } | Error::UnknownField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Logs server-side failures in full once, wherever the error is rendered.
    pub fn log_if_internal(&self) {
        if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
    }
}

/// Text PostgreSQL refuses to take: a NUL character (SQLSTATE 22021, "invalid byte
/// sequence for encoding UTF8: 0x00") or one its encoding lacks (22P05). That is the
/// client's input, a 400, not a server fault (hostile input once got a 500 here).
fn is_unstorable_text(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| matches!(c.as_ref(), "22021" | "22P05")))
}

fn is_connectivity(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        // A pooled connection cut by a server shutdown or restart: SQLSTATE class 08
        // (connection exception) and 57P01-57P03 (admin/crash shutdown, cannot connect
        // now) are outages (503, settlement retried), not internal errors.
        //
        // Storage that cannot take a write is an outage too, not a bug: PostgreSQL's
        // 53100 (disk_full) and SQLite's SQLITE_FULL (13, "database or disk is full").
        // The write is refused with a 503 and a settlement retries until there is room.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53100" | "13")
        }),
        _ => false,
    }
}
