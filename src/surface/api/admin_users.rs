//! Admin user management: search, suspend, role, daily and 5-hour caps, balance adjustments.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr};
use super::pagination::PageQuery;
use crate::domain::auth::users::{self, UserFilter, UserPatch};
use crate::domain::auth::{AdminUser, Role, Status};
use crate::domain::ledger;
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin::users::{self as admin_users, BalanceAdjustment};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users", get(list))
        .route("/api/admin/users/{id}", patch(update).get(show))
        .route("/api/admin/users/{id}/balance", post(adjust_balance))
        .route("/api/admin/ledger", get(all_ledger))
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    role: Option<String>,
    status: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let filter = UserFilter {
        query: query.q.filter(|q| !q.trim().is_empty()),
        role: query
            .role
            .as_deref()
            .map(|r| Role::parse(r).ok_or_else(|| Error::validation("role", "must be user or admin")))
            .transpose()?,
        status: query
            .status
            .as_deref()
            .map(|s| Status::parse(s).ok_or_else(|| Error::validation("status", "must be active or suspended")))
            .transpose()?,
    };
    let (rows, total) = users::list(&state.db, &filter, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|u| u.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn show(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let user = users::find_by_id(&state.db, id).await?.ok_or(Error::NotFound("user"))?;
    Ok(Json(user.view(state.calendar())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    status: Option<String>,
    role: Option<String>,
    #[serde(default, deserialize_with = "super::nullable")]
    daily_cap: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    five_hour_cap: Option<Option<Money>>,
}

async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<impl IntoResponse> {
    let patch = UserPatch {
        status: body
            .status
            .as_deref()
            .map(|s| Status::parse(s).ok_or_else(|| Error::validation("status", "must be active or suspended")))
            .transpose()?,
        role: body
            .role
            .as_deref()
            .map(|r| Role::parse(r).ok_or_else(|| Error::validation("role", "must be user or admin")))
            .transpose()?,
        daily_cap: body.daily_cap,
        five_hour_cap: body.five_hour_cap,
    };
    let after = admin_users::update_user(&state, &client.actor(admin.user.id), id, &patch).await?;
    Ok(Json(after.view(state.calendar())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceBody {
    amount: Money,
    reason: String,
}

async fn adjust_balance(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<BalanceBody>,
) -> ApiResult<impl IntoResponse> {
    let adjustment = BalanceAdjustment { user_id: id, amount: body.amount, reason: &body.reason };
    let balance = admin_users::adjust_balance(&state, &client.actor(admin.user.id), &adjustment).await?;
    Ok(Json(json!({ "user_id": id, "balance": balance, "amount": body.amount })))
}

#[derive(Deserialize)]
struct LedgerQuery {
    user_id: Option<i64>,
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn all_ledger(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let (rows, total) = ledger::list(&state.db, query.user_id, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|e| e.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}
