//! "Test connection" of an upstream, asked for by an admin: one real `GET {base}/models`
//! with the stored key, and what came of it in words an admin can act on. Nothing is
//! recorded (the health record belongs to real traffic and the probe), and nothing the
//! answer says can carry the key: texts from outside are scrubbed of it first.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;

use super::upstreams::Upstream;

/// How much of an upstream's error body is shown (its message is usually one line).
const DETAIL_CHARS: usize = 200;

/// At most this many model names are listed; the rest are counted.
pub const LISTED_MODELS: usize = 8;

/// What a connection test found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ConnectionCheck {
    /// 2xx: the key is accepted; the models the upstream lists (ids, in its order).
    Connected { status: u16, models: Vec<String> },
    /// The upstream answered, but not 2xx (a wrong key is 401): its status and message.
    Refused { status: u16, detail: String },
    /// No HTTP answer at all: connection refused, DNS, TLS, timeout.
    Unreachable { detail: String },
}

impl ConnectionCheck {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionCheck::Connected { .. })
    }
}

/// Asks the upstream for its model list with its key, within `timeout`.
pub async fn check_connection(http: &reqwest::Client, upstream: &Upstream, timeout: Duration) -> ConnectionCheck {
    let key = upstream.api_key.expose_secret();
    let sent = http.get(upstream.url("/models")).bearer_auth(key).timeout(timeout).send().await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let detail = crate::foundation::redact::scrub(&crate::foundation::redact::transport_error(e), &[key]);
            return ConnectionCheck::Unreachable { detail: clip(&detail) };
        }
    };
    let status = response.status();
    // A body that cannot be read is judged by its status alone.
    let body = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        ConnectionCheck::Connected { status: status.as_u16(), models: model_ids(&body) }
    } else {
        let detail = crate::foundation::redact::scrub(&error_detail(&body), &[key]);
        ConnectionCheck::Refused { status: status.as_u16(), detail: clip(&detail) }
    }
}

/// The `data[].id` of an OpenAI model list (empty when the body is something else).
fn model_ids(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return Vec::new() };
    let Some(items) = value.get("data").and_then(|d| d.as_array()) else { return Vec::new() };
    items.iter().filter_map(|m| m.get("id").and_then(|id| id.as_str())).map(str::to_string).collect()
}

/// The message of an error body: OpenAI's `error.message`, else the text itself.
fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    let message = parsed.as_ref().and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()));
    message.map(str::to_string).unwrap_or_else(|| text.trim().to_string())
}

fn clip(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= DETAIL_CHARS {
        return one_line;
    }
    one_line.chars().take(DETAIL_CHARS).chain(std::iter::once('…')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_list_gives_its_ids_and_anything_else_none() {
        let body = br#"{"object":"list","data":[{"id":"gpt-5"},{"id":"gpt-5-codex"},{"x":1}]}"#;
        assert_eq!(model_ids(body), vec!["gpt-5".to_string(), "gpt-5-codex".to_string()]);
        assert!(model_ids(b"<html>nope</html>").is_empty());
        assert!(model_ids(br#"{"data":"x"}"#).is_empty());
    }

    #[test]
    fn an_error_body_gives_its_message_on_one_clipped_line() {
        let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#;
        assert_eq!(error_detail(body), "Incorrect API key provided");
        assert_eq!(error_detail(b"  Bad gateway\n"), "Bad gateway");
        let long = "word ".repeat(100);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), DETAIL_CHARS + 1);
        assert!(clipped.ends_with('…') && !clipped.contains("  "));
        assert_eq!(clip("a\n b"), "a b");
    }
}
