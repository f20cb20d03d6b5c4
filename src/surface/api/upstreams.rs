//! Admin CRUD of upstream providers. The credential is write-only: reads show
//! `api_key_set` and a masked `api_key_hint`. Every write refreshes the proxy's
//! catalog at once and leaves an audit row (without the credential).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ClientAddr};
use crate::domain::auth::AdminUser;
use crate::domain::proxy::upstreams::{self, UpstreamInput};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;
use crate::surface::admin::catalog;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/upstreams", get(list).post(create))
        .route("/api/admin/upstreams/{id}", get(show).put(update).delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamBody {
    name: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    #[serde(default, deserialize_with = "super::nullable")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "super::nullable")]
    model_map: Option<Option<std::collections::BTreeMap<String, String>>>,
    priority: Option<i64>,
    weight: Option<i64>,
    enabled: Option<bool>,
}

async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<impl IntoResponse> {
    let items: Vec<_> =
        upstreams::list(&state.db, &state.secrets).await?.iter().map(|u| u.view(state.calendar())).collect();
    Ok(Json(json!({ "items": items })))
}

async fn show(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(upstreams::find(&state.db, &state.secrets, id).await?.view(state.calendar())))
}

async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiJson(body): ApiJson<UpstreamBody>,
) -> ApiResult<impl IntoResponse> {
    let input = UpstreamInput {
        name: body.name.ok_or_else(|| Error::validation("name", "is required"))?,
        base_url: body.base_url.ok_or_else(|| Error::validation("base_url", "is required"))?,
        api_key: SecretString::from(body.api_key.ok_or_else(|| Error::validation("api_key", "is required"))?),
        models: body.models.flatten(),
        model_map: body.model_map.flatten(),
        priority: body.priority.unwrap_or(0),
        weight: body.weight.unwrap_or(1),
        enabled: body.enabled.unwrap_or(true),
    };
    let created = catalog::create_upstream(&state, &addr.actor(admin.0.user.id), input).await?;
    Ok((StatusCode::CREATED, Json(created.view(state.calendar()))))
}

async fn update(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpstreamBody>,
) -> ApiResult<impl IntoResponse> {
    let current = upstreams::find(&state.db, &state.secrets, id).await?;
    let base_url = body.base_url.unwrap_or_else(|| current.base_url.clone());
    let api_key = upstreams::key_for_edit(&current, &base_url, body.api_key.map(SecretString::from))?;
    let input = UpstreamInput {
        name: body.name.unwrap_or_else(|| current.name.clone()),
        base_url,
        api_key,
        models: body.models.unwrap_or_else(|| current.models.clone()),
        model_map: body.model_map.unwrap_or_else(|| current.model_map.clone()),
        priority: body.priority.unwrap_or(current.priority),
        weight: body.weight.unwrap_or(current.weight),
        enabled: body.enabled.unwrap_or(current.enabled),
    };
    let updated = catalog::update_upstream(&state, &addr.actor(admin.0.user.id), &current, input).await?;
    Ok(Json(updated.view(state.calendar())))
}

async fn remove(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    catalog::delete_upstream(&state, &addr.actor(admin.0.user.id), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
