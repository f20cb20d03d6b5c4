//! Talking to the OAuth provider: the authorize URL, the code exchange and the user info.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{pkce_challenge, FlowCookie};
use crate::domain::settings::OAuthSettings;
use crate::foundation::error::{Error, Result};
use crate::foundation::redact;

/// Time allowed for each call to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What we keep of the provider's user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The provider's stable user id (`id`), as text.
    pub subject: String,
    pub username: Option<String>,
    pub trust_level: i64,
    pub email: Option<String>,
    /// `active: false` from LINUX DO means a deactivated forum account.
    pub active: bool,
}

impl Profile {
    /// Reads LINUX DO's `/api/user` answer (`id` may be a number or a string).
    pub fn from_json(value: &Value) -> Result<Profile> {
        let subject = match value.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(bad_gateway("the provider's user info has no id")),
        };
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        Ok(Profile {
            subject,
            username: text("username").map(str::to_string),
            trust_level: value.get("trust_level").and_then(Value::as_i64).unwrap_or(0),
            email: text("email").map(str::to_string),
            active: value.get("active").and_then(Value::as_bool).unwrap_or(true),
        })
    }
}

fn bad_gateway(message: impl Into<String>) -> Error {
    Error::BadGateway { code: "oauth_provider_error", message: message.into() }
}

/// The provider URL the browser is sent to.
pub fn authorize_url(settings: &OAuthSettings, redirect_uri: &str, flow: &FlowCookie) -> Result<String> {
    let mut url = url::Url::parse(&settings.authorize_url)
        .map_err(|_| Error::validation("oauth.authorize_url", "must be an http(s) URL"))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", &flow.state)
        .append_pair("code_challenge", &pkce_challenge(&flow.verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// Exchanges the authorization code (with the PKCE verifier) for an access token.
pub async fn exchange_code(
    http: &reqwest::Client,
    settings: &OAuthSettings,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<String> {
    let form = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", settings.client_id.as_str()),
        ("code_verifier", verifier),
    ])
    .map_err(|e| Error::internal(e.to_string()))?;
    let response = http
        .post(&settings.token_url)
        .basic_auth(&settings.client_id, Some(&settings.client_secret))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(form)
        .timeout(PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            bad_gateway(format!("the provider's token endpoint is unreachable: {}", redact::transport_error(e)))
        })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| bad_gateway(format!("cannot read the token answer: {}", redact::transport_error(e))))?;
    if !status.is_success() {
        let body = redact::scrub(&body, &[&settings.client_secret]);
        tracing::warn!(%status, body = %body.chars().take(300).collect::<String>(), "OAuth code exchange refused");
        return Err(bad_gateway(format!("the provider refused the sign-in code (HTTP {status})")));
    }
    let answer: TokenAnswer =
        serde_json::from_str(&body).map_err(|_| bad_gateway("the provider's token answer has no access_token"))?;
    Ok(answer.access_token)
}

/// Fetches the signed-in user's profile with the access token.
pub async fn fetch_profile(http: &reqwest::Client, settings: &OAuthSettings, access_token: &str) -> Result<Profile> {
    let response = http
        .get(&settings.userinfo_url)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            bad_gateway(format!("the provider's user-info endpoint is unreachable: {}", redact::transport_error(e)))
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(bad_gateway(format!("the provider refused the user-info request (HTTP {status})")));
    }
    let body = response
        .text()
        .await
        .map_err(|e| bad_gateway(format!("cannot read the user info: {}", redact::transport_error(e))))?;
    let value: Value = serde_json::from_str(&body).map_err(|_| bad_gateway("the provider's user info is not JSON"))?;
    Profile::from_json(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profiles_accept_numeric_and_text_ids() {
        let p = Profile::from_json(&json!({"id": 42, "username": "neo", "trust_level": 2})).unwrap();
        assert_eq!((p.subject.as_str(), p.username.as_deref(), p.trust_level, p.active), ("42", Some("neo"), 2, true));
        let p = Profile::from_json(&json!({"id": "abc", "email": " a@b.co ", "active": false})).unwrap();
        assert_eq!(
            (p.subject.as_str(), p.email.as_deref(), p.trust_level, p.active),
            ("abc", Some("a@b.co"), 0, false)
        );
        assert!(Profile::from_json(&json!({"username": "x"})).is_err());
    }

    #[test]
    fn the_authorize_url_carries_state_and_challenge() {
        let settings = OAuthSettings { client_id: "cid".into(), ..OAuthSettings::default() };
        let flow = FlowCookie { state: "S".into(), verifier: "V".repeat(43), expires_at_micros: 0 };
        let url = url::Url::parse(&authorize_url(&settings, "https://gw/cb", &flow).unwrap()).unwrap();
        assert!(url.as_str().starts_with("https://connect.linux.do/oauth2/authorize?"));
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "S");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "https://gw/cb");
        assert_eq!(q["code_challenge"], pkce_challenge(&"V".repeat(43)));
        assert_eq!(q["code_challenge_method"], "S256");
    }
}
