//! Admin CRUD for coupons (`/api/admin/coupons`), audited with before/after. PUT replaces
//! every setting (absent optional fields become "no limit"); DELETE switches a coupon off
//! so the record of its paid uses stays.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr};
use super::pagination::PageQuery;
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::domain::coupons::{self, pricing, CouponInput};
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin::coupons as admin_coupons;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/coupons", get(list).post(create))
        .route("/api/admin/coupons/{id}", put(update).delete(remove))
        .route("/api/packages/{id}/quote", get(quote))
}

#[derive(Deserialize)]
struct QuoteQuery {
    coupon: String,
}

/// `GET /api/packages/{id}/quote?coupon=CODE`: the price a purchase with this coupon would
/// ask for, so the purchase page can show it before paying (nothing is reserved).
async fn quote(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<QuoteQuery>,
) -> ApiResult<impl IntoResponse> {
    let package = crate::domain::packages::find(&state.db, id)
        .await?
        .filter(|p| p.is_enabled())
        .ok_or(Error::NotFound("package"))?;
    let mut conn = state.db.pool().acquire().await?;
    let target = pricing::Target::Package(package.id);
    let q = pricing::quote(&mut conn, &query.coupon, current.user.id, target, package.price(), state.now()).await?;
    Ok(Json(json!({ "code": q.code, "list_price": q.list_price, "discount": q.discount, "price": q.price })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CouponBody {
    code: String,
    percent_off: Option<Money>,
    amount_off: Option<Money>,
    package_ids: Option<Vec<i64>>,
    #[serde(default)]
    applies_to_topup: bool,
    valid_from: Option<String>,
    valid_until: Option<String>,
    max_uses: Option<i64>,
    max_uses_per_user: Option<i64>,
    enabled: Option<bool>,
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Error> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t.trim())
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| Error::validation(field, "must be an RFC 3339 time such as 2026-02-01T00:00:00+08:00"))
    })
    .transpose()
}

impl CouponBody {
    fn into_input(self) -> Result<CouponInput, Error> {
        let mut input = CouponInput {
            code: self.code,
            percent_off: self.percent_off,
            amount_off: self.amount_off,
            package_ids: self.package_ids,
            applies_to_topup: self.applies_to_topup,
            valid_from: parse_time("valid_from", self.valid_from.as_deref())?,
            valid_until: parse_time("valid_until", self.valid_until.as_deref())?,
            max_uses: self.max_uses,
            max_uses_per_user: self.max_uses_per_user,
            enabled: self.enabled.unwrap_or(true),
        };
        input.validate()?;
        Ok(input)
    }
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (rows, total) = coupons::list(&state.db, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|c| c.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiJson(body): ApiJson<CouponBody>,
) -> ApiResult<impl IntoResponse> {
    let input = body.into_input()?;
    let coupon = admin_coupons::create(&state, client.actor(admin.user.id), &input).await?;
    Ok((StatusCode::CREATED, Json(json!({ "coupon": coupon.view(state.calendar()) }))))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<CouponBody>,
) -> ApiResult<impl IntoResponse> {
    let input = body.into_input()?;
    let after = admin_coupons::update(&state, client.actor(admin.user.id), id, &input).await?;
    Ok(Json(json!({ "coupon": after.view(state.calendar()) })))
}

async fn remove(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let after = admin_coupons::switch(&state, client.actor(admin.user.id), id, Some(false)).await?;
    Ok(Json(json!({ "coupon": after.view(state.calendar()) })))
}
