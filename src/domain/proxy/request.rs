//! What the gateway reads from a client's request: the key, the body (size-limited),
//! and from the JSON only `model`, `stream`, the output-token limits and
//! `prompt_cache_key`. The body is
//! forwarded as received, except two documented rewrites: an upstream's `model_map`
//! ([`with_model`]), and a streaming Chat
//! Completions request that did not ask for usage gets
//! `stream_options.include_usage: true` added (the usage chunk is then hidden from
//! the client again, see [`super::metering`]).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::error::ProxyError;
use super::metering::Api;

/// The parts of the body the gateway needs.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub model: String,
    pub stream: bool,
    /// `max_output_tokens` / `max_completion_tokens` / `max_tokens`, when given.
    pub max_output_tokens: Option<i64>,
    /// The client asked for the Chat usage chunk itself.
    pub wants_usage_chunk: bool,
    /// The Responses `prompt_cache_key` (a session affinity key, see [`super::affinity`]).
    pub prompt_cache_key: Option<String>,
}

#[derive(Deserialize)]
struct Peek {
    model: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    max_output_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    max_tokens: Option<i64>,
    stream_options: Option<StreamOptions>,
    prompt_cache_key: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl ClientRequest {
    /// Reads the fields from the raw body; malformed JSON is a 400 in the OpenAI shape.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProxyError> {
        let peek: Peek = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ProxyError::invalid_request("invalid_json", format!("the request body is not valid JSON: {e}"))
            } else {
                ProxyError::invalid_request("invalid_request", format!("the request body is not a valid request: {e}"))
            }
        })?;
        let model = match peek.model {
            Some(Value::String(m)) if !m.trim().is_empty() => m,
            _ => return Err(ProxyError::invalid_request("missing_model", "you must provide a model parameter")),
        };
        Ok(ClientRequest {
            model,
            stream: peek.stream.unwrap_or(false),
            max_output_tokens: peek
                .max_output_tokens
                .or(peek.max_completion_tokens)
                .or(peek.max_tokens)
                .filter(|n| *n > 0),
            wants_usage_chunk: peek.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            prompt_cache_key: match peek.prompt_cache_key {
                Some(Value::String(key)) => Some(key),
                _ => None,
            },
        })
    }

    /// Whether the gateway must add `include_usage` and hide the chunk again.
    pub fn needs_usage_rewrite(&self, api: Api) -> bool {
        api == Api::Chat && self.stream && !self.wants_usage_chunk
    }

    /// The body to send upstream: the original bytes, or the one documented rewrite.
    pub fn upstream_body(&self, api: Api, original: Bytes) -> Result<Bytes, ProxyError> {
        if !self.needs_usage_rewrite(api) {
            return Ok(original);
        }
        let mut value: Value = serde_json::from_slice(&original).map_err(|e| {
            ProxyError::invalid_request("invalid_json", format!("the request body is not valid JSON: {e}"))
        })?;
        if let Some(object) = value.as_object_mut() {
            match object.get_mut("stream_options").and_then(Value::as_object_mut) {
                Some(options) => {
                    options.insert("include_usage".into(), Value::Bool(true));
                }
                None => {
                    object.insert("stream_options".into(), serde_json::json!({ "include_usage": true }));
                }
            }
        }
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| ProxyError::from(crate::foundation::error::Error::internal(e.to_string())))
    }
}

/// The body with `model` replaced, for an upstream that names the model differently
/// (its `model_map`); the usage log and price keep the client's name.
pub fn with_model(body: &Bytes, model: &str) -> Result<Bytes, ProxyError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ProxyError::invalid_request("invalid_json", format!("the request body is not valid JSON: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), Value::String(model.to_string()));
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ProxyError::from(crate::foundation::error::Error::internal(e.to_string())))
}

/// Reads the body, refusing (413) once it passes `limit` bytes.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::body_too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ProxyError::invalid_request("body_unreadable", format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ProxyError::body_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The presented API key (`Authorization: Bearer sk-...`).
pub fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Request headers never passed upstream: hop-by-hop ones, the client's credentials
/// and account routing (the upstream's own key replaces them), the length (the body
/// may be rewritten) and `accept-encoding` (the gateway must read the stream).
/// Everything else — `session_id`, `OpenAI-Beta`, `x-codex-*`, `originator`,
/// `user-agent`, `accept`, `content-type`, `x-request-id`… — is forwarded.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "cookie",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
    "openai-organization",
    "openai-project",
];

/// The client's headers to send upstream.
pub fn forwarded_headers(headers: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Response headers not copied back to the client (hop-by-hop and length: the body
/// may be filtered, so the client gets it chunked).
pub fn keep_response_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "set-cookie"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_limits_without_touching_the_rest() {
        let r = ClientRequest::parse(br#"{"model":"gpt-5","stream":true,"input":[{"x":1}],"max_output_tokens":77}"#)
            .unwrap();
        assert_eq!((r.model.as_str(), r.stream, r.max_output_tokens), ("gpt-5", true, Some(77)));
        assert_eq!(ClientRequest::parse(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(ClientRequest::parse(b"[1]").unwrap_err().code, "invalid_request");
        assert_eq!(ClientRequest::parse(br#"{"input":"x"}"#).unwrap_err().code, "missing_model");
    }

    #[test]
    fn only_streaming_chat_without_usage_is_rewritten() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"messages":[]}"#);
        let r = ClientRequest::parse(&body).unwrap();
        assert_eq!(r.upstream_body(Api::Responses, body.clone()).unwrap(), body);
        let rewritten: Value = serde_json::from_slice(&r.upstream_body(Api::Chat, body.clone()).unwrap()).unwrap();
        assert_eq!(rewritten["stream_options"]["include_usage"], true);
        assert_eq!(rewritten["messages"], serde_json::json!([]));
        let asked = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        let r = ClientRequest::parse(&asked).unwrap();
        assert!(!r.needs_usage_rewrite(Api::Chat));
        assert_eq!(r.upstream_body(Api::Chat, asked.clone()).unwrap(), asked);
        let mapped: Value = serde_json::from_slice(&with_model(&asked, "other").unwrap()).unwrap();
        assert_eq!((mapped["model"].clone(), mapped["stream"].clone()), (Value::from("other"), Value::from(true)));
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-user".parse().unwrap());
        h.insert("session_id", "abc".parse().unwrap());
        h.insert("openai-beta", "responses=experimental".parse().unwrap());
        h.insert("x-codex-turn", "1".parse().unwrap());
        h.insert("connection", "keep-alive".parse().unwrap());
        let out = forwarded_headers(&h);
        assert!(out.get("authorization").is_none() && out.get("connection").is_none());
        assert_eq!(out.get("session_id").unwrap(), "abc");
        assert_eq!(out.get("x-codex-turn").unwrap(), "1");
        assert_eq!(bearer_key(&h), Some("sk-user"));
    }
}
