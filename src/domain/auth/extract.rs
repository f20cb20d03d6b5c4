//! Typed access for handlers: `CurrentUser` (any signed-in, active account) and
//! `AdminUser` (an active admin). Both accept `Authorization: Bearer <token>` and
//! the web session cookie; a cookie-authenticated unsafe request must also carry
//! the session's CSRF token in `x-csrf-token`, so other sites cannot ride the cookie.
//! The extractor impls live with the surfaces (`api::extract`), so this module needs
//! no application state: [`resolve`] takes the database, the time and the secret.

use axum::http::request::Parts;
use axum::http::{header, Method};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sessions::{self, SESSION_COOKIE};
use crate::domain::auth::users::User;
use crate::foundation::db::Db;
use crate::foundation::error::Error;

/// A signed-in, active user and the session they used.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    pub session_id: i64,
}

/// A signed-in, active admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub CurrentUser);

/// How the session token reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Cookie,
}

/// The session token of a request, from the bearer header or the cookie.
pub fn session_token(parts: &Parts) -> Option<(String, TokenSource)> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return Some((token.trim().to_string(), TokenSource::Bearer));
        }
    }
    cookie_value(parts, SESSION_COOKIE).map(|t| (t, TokenSource::Cookie))
}

/// Reads one cookie by name.
pub fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    })
}

/// The CSRF token bound to a session token: HMAC-SHA256 under the server secret.
pub fn csrf_token(secret: &[u8], session_token: &str) -> String {
    // HMAC keys are one SHA-256 block; hashing the secret into it keeps this infallible.
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&Sha256::digest(secret));
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
    mac.update(b"csrf:");
    mac.update(session_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a presented CSRF token.
pub fn csrf_matches(secret: &[u8], session_token: &str, presented: &str) -> bool {
    let expected = csrf_token(secret, session_token);
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// What resolving a caller needs: the database, the time, and the server secret the
/// CSRF tokens are bound to.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    pub db: &'a Db,
    pub now: chrono::DateTime<chrono::Utc>,
    pub secret: &'a [u8],
}

/// Resolves the caller of a request, refusing suspended users and forged cookie posts.
pub async fn resolve(parts: &Parts, with: Resolver<'_>) -> Result<CurrentUser, Error> {
    let (token, source) = session_token(parts).ok_or_else(|| Error::Unauthorized("sign in first".into()))?;
    let (session_id, user) = sessions::lookup(with.db, &token, with.now)
        .await?
        .ok_or_else(|| Error::Unauthorized("the session is invalid or has expired; sign in again".into()))?;
    if !user.is_active() {
        return Err(Error::forbidden("account_suspended", "this account is suspended"));
    }
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if source == TokenSource::Cookie && !safe {
        let presented = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !csrf_matches(with.secret, &token, presented) {
            return Err(Error::forbidden("csrf_failed", "missing or wrong CSRF token"));
        }
    }
    Ok(CurrentUser { user, session_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_bind_to_the_session_and_the_secret() {
        let t = csrf_token(b"secret-one-0123456", "session-a");
        assert!(csrf_matches(b"secret-one-0123456", "session-a", &t));
        assert!(!csrf_matches(b"secret-one-0123456", "session-b", &t));
        assert!(!csrf_matches(b"secret-two-0123456", "session-a", &t));
        assert!(!csrf_matches(b"secret-one-0123456", "session-a", ""));
    }

    #[test]
    fn bearer_wins_over_cookie() {
        let req = axum::http::Request::builder()
            .header("authorization", "Bearer abc")
            .header("cookie", "x=1; cg_session=def")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(session_token(&parts), Some(("abc".into(), TokenSource::Bearer)));
        let req = axum::http::Request::builder().header("cookie", "x=1; cg_session=def").body(()).unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(session_token(&parts), Some(("def".into(), TokenSource::Cookie)));
    }
}
