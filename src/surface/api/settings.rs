//! `GET/PUT /api/admin/settings`: run-time settings, the Credit merchant key write-only.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::error::ApiResult;
use super::extract::{ApiJson, ClientAddr};
use crate::domain::auth::AdminUser;
use crate::runtime::state::AppState;
use crate::surface::admin::settings::{self, public_view};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/settings", get(show).put(update))
}

async fn show(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<impl IntoResponse> {
    let settings = state.settings.get().await?;
    Ok(Json(public_view(&settings, &state.config.public_url)))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let saved = settings::update(&state, &client.actor(admin.user.id), patch).await?;
    Ok(Json(public_view(&saved, &state.config.public_url)))
}
