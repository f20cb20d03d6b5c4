//! Usage and billing reads: daily usage, ledger, usage logs (user and admin).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiQuery};
use super::pagination::PageQuery;
use crate::domain::auth::api_keys;
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::domain::billing::quota;
use crate::domain::billing::rules::Preference;
use crate::domain::billing::usage::{self, UsageFilter};
use crate::domain::ledger;
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/user/daily-usage", get(daily_usage))
        .route("/api/user/billing-preference", get(get_preference).put(put_preference))
        .route("/api/user/quota", get(key_quota))
        .route("/api/user/ledger", get(user_ledger))
        .route("/api/user/usage", get(user_usage))
        .route("/api/admin/usage", get(admin_usage))
}

#[derive(Deserialize)]
struct DailyUsageQuery {
    days: Option<u32>,
}

async fn daily_usage(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(query): ApiQuery<DailyUsageQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(usage::daily_usage(state.env(), current.user.id, query.days).await?))
}

async fn get_preference(State(state): State<AppState>, current: CurrentUser) -> ApiResult<impl IntoResponse> {
    Ok(Json(quota::preference(state.env(), current.user.id).await?))
}

#[derive(Deserialize)]
struct PreferenceBody {
    preference: String,
}

async fn put_preference(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<PreferenceBody>,
) -> ApiResult<impl IntoResponse> {
    let preference = Preference::parse(body.preference.trim()).ok_or_else(|| {
        Error::validation("preference", "must be package_first, balance_first, package_only or balance_only")
    })?;
    Ok(Json(quota::set_preference(state.env(), current.user.id, preference).await?))
}

/// `GET /api/user/quota` with an `sk-` key: the daily-usage figures for scripts and
/// status lines (a key that may not be used is refused as the proxy refuses it).
async fn key_quota(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    let presented = crate::domain::proxy::request::bearer_key(&headers)
        .ok_or_else(|| Error::Unauthorized("send Authorization: Bearer sk-...".into()))?;
    let owner = api_keys::authenticate(&state.db, presented, state.now())
        .await?
        .map_err(|refusal| Error::Unauthorized(refusal.message().into()))?;
    Ok(Json(usage::daily_usage(state.env(), owner.user_id, None).await?))
}

async fn user_ledger(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (rows, total) = ledger::list(&state.db, Some(current.user.id), page.limit(), page.offset()).await?;
    let items = rows.iter().map(|e| e.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

#[derive(Deserialize)]
struct UsageQuery {
    user_id: Option<i64>,
    key_id: Option<i64>,
    model: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

fn business_date(field: &str, text: Option<String>) -> Result<Option<String>, Error> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => NaiveDate::parse_from_str(&t, "%Y-%m-%d")
            .map(|d| Some(crate::foundation::clock::date_key(d)))
            .map_err(|_| Error::validation(field, "must be a date like 2026-01-31")),
    }
}

async fn list_usage(state: &AppState, query: UsageQuery, user_id: Option<i64>) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let filter = UsageFilter {
        user_id,
        api_key_id: query.key_id,
        model: query.model.filter(|m| !m.is_empty()),
        date_from: business_date("from", query.from)?,
        date_to: business_date("to", query.to)?,
        request_id: None,
    };
    let (rows, total) = usage::list(state.env(), &filter, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|r| r.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn user_usage(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    list_usage(&state, query, Some(current.user.id)).await
}

async fn admin_usage(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    let user_id = query.user_id;
    list_usage(&state, query, user_id).await
}
