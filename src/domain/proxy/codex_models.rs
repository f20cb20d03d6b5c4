//! `GET /v1/models` in the shape the Codex CLI asks for, next to the OpenAI list shape
//! the SDKs read (docs/api.md).
//!
//! Read from openai/codex (`codex-api/src/endpoint/models.rs`, `models-manager/src/manager.rs`,
//! `protocol/src/openai_models.rs`) and checked against the Codex CLI 0.171.0: Codex asks
//! `GET {base_url}/models?client_version=0.171.0` (its bearer token, no other marker) and
//! decodes `{"models": [ModelInfo…]}`, taking the ETag from the header. It asks a custom
//! provider only when the provider authenticates by command (`[model_providers.x.auth]`)
//! or the user is logged in with ChatGPT; with `env_key` it never asks (README).
//! A model missing from the catalogue is what makes Codex print "Model metadata for `m`
//! not found. Defaulting to fallback metadata".
//!
//! Every field Codex requires is given; the values are the ones of Codex's own fallback
//! metadata (`model_info_from_slug`: default shell, no reasoning presets, 10 000-byte
//! tool-output truncation, 272 000-token window), so serving the catalogue changes
//! nothing but the warning, the model picker (`visibility: list`) and the prompt:
//! `base_instructions` becomes Codex's whole system prompt, so it must be the operator's
//! agent prompt ([`crate::foundation::config::Config::codex_instructions`]); without one the
//! catalogue is empty and Codex keeps its built-in prompt (and its warning).

use axum::body::Bytes;
use axum::http::HeaderValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The header Codex reads the catalogue's ETag from on every Responses answer (HTTP and
/// the WebSocket handshake, `codex-api/src/sse/responses.rs` `MODELS_ETAG_HEADER`). Codex
/// compares it with the ETag of the catalogue it holds: the same one renews its cache,
/// another makes it fetch `/models` again; a provider Codex never asks for the
/// catalogue (`env_key`) ignores it (`models-manager` `refresh_if_new_etag`).
pub const MODELS_ETAG_HEADER: &str = "x-models-etag";

/// Whether a `/v1/models` request is Codex's catalogue request (its `client_version`
/// query parameter); everything else gets the OpenAI list shape.
pub fn wants_catalogue(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some("client_version")))
}

/// The catalogue body and its entity tag (a hash of the body, so it changes exactly
/// when a price is added or removed or the instructions change). Built once per catalog
/// snapshot ([`super::catalog::Snapshot::codex`]), so no request hashes anything.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub body: Bytes,
    pub etag: String,
    /// `etag` as a header value, made once: a Responses answer only clones it.
    pub etag_header: Option<HeaderValue>,
}

/// The catalogue of `models` (sorted by the caller; the order is Codex's `priority`).
pub fn catalogue(models: &[&str], instructions: Option<&str>) -> Catalogue {
    let entries: Vec<Value> = match instructions {
        Some(instructions) => {
            models.iter().enumerate().map(|(i, slug)| entry(slug, i as i64 + 1, instructions)).collect()
        }
        None => Vec::new(),
    };
    let body = Bytes::from(json!({ "models": entries }).to_string());
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    let etag_header = HeaderValue::from_str(&etag).ok();
    Catalogue { body, etag, etag_header }
}

/// One `ModelInfo` as Codex decodes it.
fn entry(slug: &str, priority: i64, instructions: &str) -> Value {
    json!({
        "slug": slug,
        "display_name": slug,
        "description": "Served by codex-gateway",
        "supported_reasoning_levels": [],
        "shell_type": "default",
        "visibility": "list",
        "supported_in_api": true,
        "priority": priority,
        "upgrade": null,
        "base_instructions": instructions,
        "supports_reasoning_summaries": false,
        "support_verbosity": false,
        "default_verbosity": null,
        "apply_patch_tool_type": null,
        "truncation_policy": { "mode": "bytes", "limit": 10_000 },
        "supports_parallel_tool_calls": false,
        "context_window": 272_000,
        "experimental_supported_tools": [],
    })
}

/// Whether an `If-None-Match` header names `etag` (a list, weak tags and `*` included).
pub fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|header| {
        header.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_version_query_asks_for_the_catalogue() {
        assert!(wants_catalogue(Some("client_version=0.171.0")));
        assert!(wants_catalogue(Some("a=1&client_version=0.99.0")));
        assert!(!wants_catalogue(None));
        assert!(!wants_catalogue(Some("limit=10")));
        assert!(!wants_catalogue(Some("client_versions=1")));
    }

    #[test]
    fn each_priced_model_is_an_entry_with_the_fields_codex_requires() {
        let c = catalogue(&["gpt-5", "gpt-5-codex"], Some("You are a coding agent."));
        let body: Value = serde_json::from_slice(&c.body).unwrap();
        let models = body["models"].as_array().unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!((models[1]["slug"].as_str(), models[1]["priority"].as_i64()), (Some("gpt-5-codex"), Some(2)));
        for field in [
            "display_name",
            "description",
            "supported_reasoning_levels",
            "shell_type",
            "visibility",
            "supported_in_api",
            "upgrade",
            "base_instructions",
            "supports_reasoning_summaries",
            "support_verbosity",
            "default_verbosity",
            "apply_patch_tool_type",
            "truncation_policy",
            "supports_parallel_tool_calls",
            "experimental_supported_tools",
        ] {
            assert!(models[0].get(field).is_some(), "{field}");
        }
        assert_eq!(models[0]["base_instructions"], "You are a coding agent.");
        assert_eq!(models[0]["visibility"], "list");
    }

    #[test]
    fn without_instructions_the_catalogue_is_empty_so_codex_keeps_its_own_prompt() {
        let body: Value = serde_json::from_slice(&catalogue(&["gpt-5"], None).body).unwrap();
        assert_eq!(body, json!({"models": []}));
    }

    #[test]
    fn the_etag_follows_the_content_and_if_none_match_is_read_like_http() {
        let a = catalogue(&["gpt-5"], Some("p"));
        assert_eq!(a.etag, catalogue(&["gpt-5"], Some("p")).etag);
        assert_ne!(a.etag, catalogue(&["gpt-5", "o3"], Some("p")).etag);
        assert_ne!(a.etag, catalogue(&["gpt-5"], Some("q")).etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert_eq!(a.etag_header.as_ref().and_then(|h| h.to_str().ok()), Some(a.etag.as_str()));
        assert!(not_modified(Some(&a.etag), &a.etag));
        assert!(not_modified(Some(&format!("\"x\", W/{}", a.etag)), &a.etag));
        assert!(not_modified(Some("*"), &a.etag));
        assert!(!not_modified(Some("\"x\""), &a.etag));
        assert!(!not_modified(None, &a.etag));
    }
}
