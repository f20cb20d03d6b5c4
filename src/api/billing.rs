//! Usage and billing reads: daily usage, ledger, usage logs (user and admin).

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::ApiQuery;
use super::pagination::PageQuery;
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::billing::usage::{self, UsageFilter};
use crate::error::Error;
use crate::ledger;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/user/daily-usage", get(daily_usage))
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
    Ok(Json(usage::daily_usage(&state, current.user.id, query.days).await?))
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
            .map(|d| Some(crate::clock::date_key(d)))
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
    };
    let (rows, total) = usage::list(state, &filter, page.limit(), page.offset()).await?;
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
