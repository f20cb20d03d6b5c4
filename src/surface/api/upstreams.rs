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
use crate::domain::audit::{self, Actor, Change};
use crate::domain::auth::AdminUser;
use crate::domain::proxy::upstreams::{self, UpstreamInput};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

/// After a write to upstreams or prices: the proxy's catalog is reloaded at once and the
/// change audited (from the API and the admin pages alike; views carry no credential).
pub(crate) async fn catalog_changed(state: &AppState, actor: &Actor, change: Change<'_>) -> Result<(), Error> {
    state.catalog.invalidate();
    audit::record_change(&state.db, actor, change, state.now()).await
}

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
    let created = upstreams::create(&state.db, &state.secrets, input, state.now()).await?;
    let view = created.view(state.calendar());
    let change = Change::new("upstream.create", format!("upstream:{}", created.id)).after(&view);
    catalog_changed(&state, &addr.actor(admin.0.user.id), change).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn update(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpstreamBody>,
) -> ApiResult<impl IntoResponse> {
    let current = upstreams::find(&state.db, &state.secrets, id).await?;
    let before = current.view(state.calendar());
    let base_url = body.base_url.unwrap_or_else(|| current.base_url.clone());
    let api_key = upstreams::key_for_edit(&current, &base_url, body.api_key.map(SecretString::from))?;
    let input = UpstreamInput {
        name: body.name.unwrap_or(current.name),
        base_url,
        api_key,
        models: body.models.unwrap_or(current.models),
        model_map: body.model_map.unwrap_or(current.model_map),
        priority: body.priority.unwrap_or(current.priority),
        weight: body.weight.unwrap_or(current.weight),
        enabled: body.enabled.unwrap_or(current.enabled),
    };
    let updated = upstreams::update(&state.db, &state.secrets, id, input, state.now()).await?;
    let view = updated.view(state.calendar());
    let change = Change::new("upstream.update", format!("upstream:{id}")).before(&before).after(&view);
    catalog_changed(&state, &addr.actor(admin.0.user.id), change).await?;
    Ok(Json(view))
}

async fn remove(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let before = upstreams::find(&state.db, &state.secrets, id).await?.view(state.calendar());
    upstreams::delete(&state.db, id).await?;
    let change = Change::new("upstream.delete", format!("upstream:{id}")).before(&before);
    catalog_changed(&state, &addr.actor(admin.0.user.id), change).await?;
    Ok(StatusCode::NO_CONTENT)
}
