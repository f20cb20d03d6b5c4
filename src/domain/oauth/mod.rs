//! LINUX DO Connect sign-in: a generic OAuth2 authorization-code flow with PKCE (S256).
//!
//! Start: a random `state` and PKCE verifier go into a short-lived, HMAC-signed HttpOnly
//! cookie ([`FlowCookie`]) and the browser is sent to the provider with the state and the
//! verifier's challenge. Callback: the state must match the cookie's; the code is
//! exchanged (client credentials as HTTP Basic, plus the verifier), the user info is
//! fetched, and [`accounts::sign_in`] finds, links or creates the account.

pub mod accounts;
pub mod provider;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::auth::random_token;
use crate::foundation::clock::to_micros;

/// The provider name stored in `oauth_identities.provider`.
pub const PROVIDER: &str = "linuxdo";
/// Name and path of the flow cookie.
pub const FLOW_COOKIE: &str = "cg_oauth";
const FLOW_COOKIE_PATH: &str = "/api/auth/oauth";
/// How long a user may take at the provider before the flow must start over.
pub const FLOW_LIFETIME_MINUTES: i64 = 10;

/// Where the provider sends the browser back to (register this URL with the provider).
pub fn redirect_uri(public_url: &str) -> String {
    format!("{}/api/auth/oauth/{PROVIDER}/callback", public_url.trim_end_matches('/'))
}

/// The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)) without padding.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// HMAC-SHA256 of `message` under the server secret, hex.
fn sign(secret: &[u8], message: &str) -> String {
    // HMAC keys are one SHA-256 block; hashing the secret into it keeps this infallible.
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&Sha256::digest(secret));
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
    mac.update(b"oauth-flow:");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The state and PKCE verifier of one sign-in attempt, carried in a signed cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCookie {
    pub state: String,
    pub verifier: String,
    pub expires_at_micros: i64,
}

impl FlowCookie {
    /// A fresh attempt: 32-character state, 64-character verifier (RFC 7636 allows 43-128).
    pub fn new(now: DateTime<Utc>) -> Self {
        FlowCookie {
            state: random_token(32),
            verifier: random_token(64),
            expires_at_micros: to_micros(now + Duration::minutes(FLOW_LIFETIME_MINUTES)),
        }
    }

    /// `state.verifier.expiry.mac` (the random parts are alphanumeric, so `.` separates safely).
    pub fn encode(&self, secret: &[u8]) -> String {
        let body = format!("{}.{}.{}", self.state, self.verifier, self.expires_at_micros);
        let mac = sign(secret, &body);
        format!("{body}.{mac}")
    }

    /// The cookie's content if the signature holds and it has not expired.
    pub fn decode(secret: &[u8], value: &str, now: DateTime<Utc>) -> Option<FlowCookie> {
        let (body, mac) = value.rsplit_once('.')?;
        let expected = sign(secret, body);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let mut parts = body.split('.');
        let (state, verifier, expiry) = (parts.next()?, parts.next()?, parts.next()?);
        let expires_at_micros: i64 = expiry.parse().ok()?;
        (parts.next().is_none() && expires_at_micros > to_micros(now)).then(|| FlowCookie {
            state: state.to_string(),
            verifier: verifier.to_string(),
            expires_at_micros,
        })
    }

    /// Constant-time comparison with the `state` the provider echoed back.
    pub fn state_matches(&self, presented: &str) -> bool {
        self.state.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The `Set-Cookie` value carrying this attempt.
    pub fn set_cookie(&self, secret: &[u8], secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        let max_age = FLOW_LIFETIME_MINUTES * 60;
        // SameSite=Lax: the provider's redirect back is a top-level GET, which Lax allows.
        format!(
            "{FLOW_COOKIE}={}; Path={FLOW_COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.encode(secret)
        )
    }
}

/// The `Set-Cookie` value that removes the flow cookie once used.
pub fn clear_flow_cookie() -> String {
    format!("{FLOW_COOKIE}=; Path={FLOW_COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-15T04:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_pkce_challenge_matches_the_rfc_7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn flow_cookies_round_trip_and_refuse_tampering_and_age() {
        let flow = FlowCookie::new(now());
        let value = flow.encode(b"secret");
        assert_eq!(FlowCookie::decode(b"secret", &value, now()), Some(flow.clone()));
        assert_eq!(FlowCookie::decode(b"other", &value, now()), None, "another server's secret");
        let tampered = value.replacen(&flow.state, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1);
        assert_eq!(FlowCookie::decode(b"secret", &tampered, now()), None);
        let later = now() + Duration::minutes(FLOW_LIFETIME_MINUTES + 1);
        assert_eq!(FlowCookie::decode(b"secret", &value, later), None, "expired");
        assert!(flow.state_matches(&flow.state));
        assert!(!flow.state_matches("nope"));
    }

    #[test]
    fn the_redirect_uri_hangs_off_the_public_url() {
        assert_eq!(redirect_uri("https://gw.example/"), "https://gw.example/api/auth/oauth/linuxdo/callback");
    }
}
