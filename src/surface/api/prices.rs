//! Admin CRUD of model prices (USD per 1M tokens: `input`, `cached_input`, `output`,
//! optional `cache_write`). Writes refresh the proxy's catalog at once; a model
//! without a price is refused by the proxy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ClientAddr};
use crate::domain::auth::AdminUser;
use crate::domain::proxy::pricing::{self, ModelPrice};
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin::catalog;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/prices", get(list).post(create))
        .route("/api/admin/prices/{model}", put(update).delete(remove).get(show))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    model: Option<String>,
    input: Option<Money>,
    cached_input: Option<Money>,
    output: Option<Money>,
    #[serde(default, deserialize_with = "super::nullable")]
    cache_write: Option<Option<Money>>,
    enabled: Option<bool>,
}

async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({ "items": pricing::list(&state.db).await? })))
}

async fn show(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(pricing::find(&state.db, &model).await?.ok_or(Error::NotFound("price"))?))
}

async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiJson(body): ApiJson<PriceBody>,
) -> ApiResult<impl IntoResponse> {
    let input = body.input.ok_or_else(|| Error::validation("input", "is required"))?;
    let price = ModelPrice {
        model: body.model.ok_or_else(|| Error::validation("model", "is required"))?.trim().to_string(),
        input,
        cached_input: body.cached_input.unwrap_or(input),
        output: body.output.ok_or_else(|| Error::validation("output", "is required"))?,
        cache_write: body.cache_write.flatten(),
        enabled: body.enabled.unwrap_or(true),
    };
    catalog::save_price(&state, &addr.actor(admin.0.user.id), None, &price).await?;
    Ok((StatusCode::CREATED, Json(price)))
}

async fn update(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(model): ApiPath<String>,
    ApiJson(body): ApiJson<PriceBody>,
) -> ApiResult<impl IntoResponse> {
    let current = pricing::find(&state.db, &model).await?.ok_or(Error::NotFound("price"))?;
    let price = ModelPrice {
        model: current.model.clone(),
        input: body.input.unwrap_or(current.input),
        cached_input: body.cached_input.unwrap_or(current.cached_input),
        output: body.output.unwrap_or(current.output),
        cache_write: body.cache_write.unwrap_or(current.cache_write),
        enabled: body.enabled.unwrap_or(current.enabled),
    };
    catalog::save_price(&state, &addr.actor(admin.0.user.id), Some(&current), &price).await?;
    Ok(Json(price))
}

async fn remove(
    State(state): State<AppState>,
    admin: AdminUser,
    addr: ClientAddr,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    catalog::delete_price(&state, &addr.actor(admin.0.user.id), &model).await?;
    Ok(StatusCode::NO_CONTENT)
}
