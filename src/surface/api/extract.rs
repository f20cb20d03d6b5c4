//! Extractors whose rejections use the API's error shape instead of axum's plain text.
//!
//! [`ApiJson`] does not insist on a `Content-Type` (curl users forget it) and reads an
//! empty body as `{}` so optional bodies (`POST /api/packages/1/purchase`) need nothing.
//! [`CurrentUser`] and [`AdminUser`] are resolved here too (their rules are in
//! [`crate::domain::auth::extract`]), so the auth domain needs no application state.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::auth::extract::{resolve, Resolver};
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

/// Parsed JSON request body.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::bad_request("body_unreadable", format!("cannot read the request body: {e}")))?;
        parse_body(&bytes).map(ApiJson).map_err(ApiError)
    }
}

/// Query string parameters.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError(Error::bad_request("invalid_query", e.body_text())))
    }
}

/// Path parameters (`/api/user/keys/{id}`).
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError(Error::bad_request("invalid_path", e.body_text())))
    }
}

/// The client's address, as [`crate::foundation::client_ip`] resolved it (the peer, or what a
/// trusted proxy forwarded), for the login throttle, rate limits and audits.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    pub fn ip(&self) -> Option<String> {
        self.0.map(|a| a.to_string())
    }

    /// The audit actor: user `id` acting from this address.
    pub fn actor(&self, id: i64) -> crate::domain::audit::Actor {
        crate::domain::audit::Actor { id, ip: self.ip() }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Resolved once by the `client_ip::resolve` middleware; the peer if it did not run.
        let resolved = parts.extensions.get::<crate::foundation::client_ip::ClientIp>().map(|c| c.0);
        let peer = || parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        Ok(ClientAddr(resolved.unwrap_or_else(peer)))
    }
}

/// Parses a JSON body, distinguishing syntax errors from wrong fields.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            Error::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        } else if let Some(field) = unknown_field(&e.to_string()) {
            Error::UnknownField { message: format!("the body has a field this route does not know: {e}"), field }
        } else {
            Error::bad_request("invalid_body", format!("the body does not match what this route expects: {e}"))
        }
    })
}

/// The field named by serde's "unknown field `x`, expected ..." message (structs marked
/// `deny_unknown_fields`), so the 400 can name it.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.find('`').map(|end| rest[..end].to_string())
}

/// What [`crate::domain::auth::extract::resolve`] needs, from the application state.
pub fn resolver(state: &AppState) -> Resolver<'_> {
    Resolver { db: &state.db, now: state.now(), secret: state.config.secret_bytes() }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(cached) = parts.extensions.get::<CurrentUser>() {
            return Ok(cached.clone());
        }
        let user = resolve(parts, resolver(state)).await?;
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        if !current.user.is_admin() {
            return Err(Error::forbidden("admin_only", "this needs an admin account").into());
        }
        Ok(AdminUser(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Login {
        #[allow(dead_code)]
        email: String,
    }

    #[derive(serde::Deserialize, Debug, Default)]
    struct Optional {
        #[allow(dead_code)]
        coupon: Option<String>,
    }

    #[test]
    fn syntax_and_shape_errors_have_distinct_codes() {
        assert_eq!(parse_body::<Login>(b"{").unwrap_err().code(), "invalid_json");
        assert_eq!(parse_body::<Login>(b"{}").unwrap_err().code(), "invalid_body");
        assert!(parse_body::<Optional>(b"").is_ok());
        assert!(parse_body::<Optional>(b"  \n").is_ok());
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        name: Option<String>,
    }

    #[test]
    fn an_unknown_field_is_a_400_naming_it() {
        let err = parse_body::<Strict>(br#"{"name": "a", "five_hour_limit": 2}"#).unwrap_err();
        assert_eq!((err.code(), err.field()), ("unknown_field", Some("five_hour_limit")));
        assert_eq!(err.status_code(), axum::http::StatusCode::BAD_REQUEST);
        assert!(err.public_message().contains("five_hour_limit"), "{}", err.public_message());
        assert_eq!(unknown_field("invalid type: string, expected i64"), None);
    }
}
