//! The user's API keys: list, create (secret shown once), rename/limit, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath};
use crate::domain::auth::api_keys::{self, KeyPatch, NewKey};
use crate::domain::auth::CurrentUser;
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/user/keys", get(list).post(create))
        .route("/api/user/keys/{id}", patch(update).delete(revoke))
}

async fn list(State(state): State<AppState>, current: CurrentUser) -> ApiResult<impl IntoResponse> {
    let keys = api_keys::list_for_user(&state.db, current.user.id).await?;
    let items: Vec<_> = keys.iter().map(|k| k.view(state.calendar())).collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct CreateKey {
    name: Option<String>,
    spend_limit: Option<Money>,
    expires_at: Option<String>,
}

/// Parses an RFC 3339 instant from the API, naming the field when it is wrong.
pub fn parse_instant(field: &str, text: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::validation(field, "must be an RFC 3339 time such as 2026-12-31T00:00:00+08:00"))
}

async fn create(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    let settings = state.settings.get().await?;
    let new = NewKey {
        name: body.name.unwrap_or_else(|| "default".into()),
        spend_limit: body.spend_limit,
        expires_at: body.expires_at.as_deref().map(|t| parse_instant("expires_at", t)).transpose()?,
    };
    let (key, secret) =
        api_keys::create(&state.db, current.user.id, &new, settings.max_keys_per_user, state.now()).await?;
    let mut view = serde_json::to_value(key.view(state.calendar())).map_err(|e| Error::internal(e.to_string()))?;
    view["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize)]
struct UpdateKey {
    name: Option<String>,
    #[serde(default, deserialize_with = "super::nullable")]
    spend_limit: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    daily_cap: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    max_concurrency: Option<Option<i64>>,
}

async fn update(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpdateKey>,
) -> ApiResult<impl IntoResponse> {
    let patch = KeyPatch {
        name: body.name,
        spend_limit: body.spend_limit,
        daily_cap: body.daily_cap,
        max_concurrency: body.max_concurrency,
    };
    // A cap set mid-day counts what the key spent since the day began (same transaction).
    let change = crate::domain::billing::caps::KeyChange { user_id: current.user.id, key_id: id, patch: &patch };
    let key = crate::domain::billing::caps::update_key(&state.db, state.calendar(), change, state.now()).await?;
    crate::domain::billing::user_changed(state.env(), current.user.id).await;
    Ok(Json(key.view(state.calendar())))
}

async fn revoke(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&state.db, current.user.id, id, state.now()).await?;
    crate::domain::billing::user_changed(state.env(), current.user.id).await;
    Ok(StatusCode::NO_CONTENT)
}
