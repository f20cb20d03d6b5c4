//! The handlers of the OpenAI-compatible gateway under `/v1`: `POST /v1/responses` (what
//! the Codex CLI speaks; also over a WebSocket, [`ws`]), `POST /v1/responses/compact`,
//! `POST /v1/chat/completions` and `GET /v1/models` (also in Codex's catalogue shape,
//! `domain::proxy::codex_models`), authenticated with the user's `sk-...` key. Bodies pass
//! through as bytes both ways; usage is metered as the response streams past and settled
//! through the billing engine exactly once.
//!
//! - [`forward`]: admission, upstream selection and failover before the first byte.
//! - [`body`]: the metered stream and its one settlement.
//! - [`quota`]: the user's windows and balance as Codex reads them (headers, events).
//! - [`ws`]: the WebSocket transport, bridged to the HTTP path.
//!
//! These take the application state; the rules they use (the request's fields, metering,
//! pricing, upstream choice, the journal, limits, the OpenAI error shape) are in
//! `domain::proxy`.

pub mod body;
pub mod forward;
pub mod quota;
pub mod ws;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::domain::proxy::error::ProxyError;
use crate::domain::proxy::metering::Api;
use crate::domain::proxy::{catalog, codex_models};
use crate::runtime::state::AppState;

/// The `/v1` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(responses).get(ws::upgrade))
        .route("/v1/responses/compact", post(compact))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
}

/// A Responses request; a successful answer also carries the catalogue's `x-models-etag`
/// (read after the upstream answered, so a catalogue changed meanwhile is announced at
/// once; Codex reads it from answered streams only, and a refused caller learns nothing).
async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let catalog = state.catalog.clone();
    let mut response =
        forward::proxy(state, Api::Responses, headers, body).await.unwrap_or_else(IntoResponse::into_response);
    if response.status().is_success() {
        add_models_etag(response.headers_mut(), &*catalog.get().await);
    }
    response
}

/// Sets `x-models-etag` from the snapshot's catalogue (a header clone, nothing hashed).
pub(crate) fn add_models_etag(headers: &mut HeaderMap, snapshot: &catalog::Snapshot) {
    if let Some(etag) = &snapshot.codex.etag_header {
        headers.insert(codex_models::MODELS_ETAG_HEADER, etag.clone());
    }
}

async fn compact(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    forward::proxy(state, Api::Compact, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    forward::proxy(state, Api::Chat, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// The priced models: in the OpenAI list shape, or in Codex's catalogue shape when
/// Codex asks for it (`?client_version=`), with its ETag and a 304 for a matching
/// `If-None-Match`.
async fn models(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    forward::authenticate(&state, &headers).await?;
    let snapshot = state.catalog.get().await;
    if !codex_models::wants_catalogue(query.as_deref()) {
        let mut names: Vec<&str> = snapshot.prices.keys().map(String::as_str).collect();
        names.sort_unstable();
        let data: Vec<_> = names.into_iter().map(model_object).collect();
        return Ok(Json(json!({ "object": "list", "data": data })).into_response());
    }
    let catalogue = &snapshot.codex;
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let mut response = if codex_models::not_modified(if_none_match, &catalogue.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], catalogue.body.clone()).into_response()
    };
    if let Some(etag) = &catalogue.etag_header {
        response.headers_mut().insert(header::ETAG, etag.clone());
    }
    Ok(response)
}

/// One priced model (`client.models.retrieve`), 404 `model_not_found` otherwise.
async fn model(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    forward::authenticate(&state, &headers).await?;
    let snapshot = state.catalog.get().await;
    if !snapshot.prices.contains_key(&model) {
        return Err(ProxyError::model_not_found(&model));
    }
    Ok(Json(model_object(&model)).into_response())
}

fn model_object(id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "codex-gateway" })
}
