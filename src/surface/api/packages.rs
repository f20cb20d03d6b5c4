//! Packages: the admin catalog, the user catalog and purchase, users' packages, admin
//! grants and ends. Rules live in [`crate::domain::packages`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ClientAddr};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::domain::packages::activation;
use crate::domain::packages::purchase::{self, AdminAction};
use crate::domain::packages::{self, Package, PackageInput};

use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// The Packages routes of `docs/api.md`, plus admin listing and ending of a user's packages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/packages", get(admin_list).post(create))
        .route("/api/admin/packages/{id}", get(show).put(update).delete(disable))
        .route("/api/packages", get(catalog))
        .route("/api/packages/{id}/purchase", post(buy))
        .route("/api/user/packages", get(mine))
        .route("/api/admin/users/{id}/packages", get(user_packages).post(grant))
        .route("/api/admin/users/{id}/packages/{user_package_id}/end", post(end))
}

/// Create body (`enabled`, `stock`, `per_user_limit` optional) and, all optional, the PUT body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageBody {
    name: Option<String>,
    description: Option<String>,
    price: Option<Money>,
    duration_days: Option<i64>,
    #[serde(default, deserialize_with = "super::nullable")]
    daily_limit: Option<Option<Money>>,
    sort_order: Option<i64>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "super::nullable")]
    stock: Option<Option<i64>>,
    #[serde(default, deserialize_with = "super::nullable")]
    per_user_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "super::nullable")]
    five_hour_limit: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    weekly_limit: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    monthly_limit: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    total_limit: Option<Option<Money>>,
    #[serde(default, deserialize_with = "super::nullable")]
    models: Option<Option<Vec<String>>>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::validation(field, "is required"))
}

impl PackageBody {
    fn into_new(self) -> Result<PackageInput, Error> {
        Ok(PackageInput {
            name: required(self.name, "name")?,
            description: self.description.unwrap_or_default(),
            price: required(self.price, "price")?,
            duration_days: required(self.duration_days, "duration_days")?,
            daily_limit: self.daily_limit.flatten(),
            sort_order: self.sort_order.unwrap_or(0),
            enabled: self.enabled.unwrap_or(true),
            stock: self.stock.flatten(),
            per_user_limit: self.per_user_limit.flatten(),
            five_hour_limit: self.five_hour_limit.flatten(),
            weekly_limit: self.weekly_limit.flatten(),
            monthly_limit: self.monthly_limit.flatten(),
            total_limit: self.total_limit.flatten(),
            models: self.models.flatten(),
        })
    }

    fn merge_into(self, p: &Package) -> PackageInput {
        PackageInput {
            name: self.name.unwrap_or_else(|| p.name.clone()),
            description: self.description.unwrap_or_else(|| p.description.clone()),
            price: self.price.unwrap_or(p.price()),
            duration_days: self.duration_days.unwrap_or(p.duration_days),
            daily_limit: self.daily_limit.unwrap_or(p.daily_limit.map(Money::from_micros)),
            sort_order: self.sort_order.unwrap_or(p.sort_order),
            enabled: self.enabled.unwrap_or(p.is_enabled()),
            stock: self.stock.unwrap_or(p.stock),
            per_user_limit: self.per_user_limit.unwrap_or(p.per_user_limit),
            five_hour_limit: self.five_hour_limit.unwrap_or(p.five_hour_limit.map(Money::from_micros)),
            weekly_limit: self.weekly_limit.unwrap_or(p.weekly_limit.map(Money::from_micros)),
            monthly_limit: self.monthly_limit.unwrap_or(p.monthly_limit.map(Money::from_micros)),
            total_limit: self.total_limit.unwrap_or(p.total_limit.map(Money::from_micros)),
            models: self.models.unwrap_or_else(|| crate::domain::billing::allowance::parse_models(p.models.as_deref())),
        }
    }
}

async fn admin_list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<impl IntoResponse> {
    let rows = packages::list(&state.db, false).await?;
    let items: Vec<_> = rows.iter().map(|p| p.view(state.calendar())).collect();
    Ok(Json(json!({ "items": items })))
}

/// Records an admin change to a package (shared with the web pages).
pub async fn audit_package(
    state: &AppState,
    by: AdminAction,
    action: &str,
    before: Option<&Package>,
    after: &Package,
) -> Result<(), Error> {
    let calendar = state.calendar();
    let change = Change {
        before: before.and_then(|b| audit::snapshot(&b.view(calendar))),
        ..Change::new(action, format!("package:{}", after.id)).after(&after.view(calendar))
    };
    audit::record_change(&state.db, &Actor { id: by.actor_id, ip: by.ip }, change, state.now()).await
}

async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiJson(body): ApiJson<PackageBody>,
) -> ApiResult<impl IntoResponse> {
    let input = body.into_new()?;
    let package = packages::create(&state.db, &input, state.now()).await?;
    audit_package(&state, AdminAction { actor_id: admin.user.id, ip: client.ip() }, "package.create", None, &package)
        .await?;
    // `docs/api.md` answers `201 {package}` (wrapped, like `{user}` on register); the fields are
    // also given flat so clients that read `id` directly work too.
    let view = serde_json::to_value(package.view(state.calendar())).map_err(|e| Error::internal(e.to_string()))?;
    let mut body = view.clone();
    body["package"] = view;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn show(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let package = packages::find(&state.db, id).await?.ok_or(Error::NotFound("package"))?;
    Ok(Json(package.view(state.calendar())))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<PackageBody>,
) -> ApiResult<impl IntoResponse> {
    let before = packages::find(&state.db, id).await?.ok_or(Error::NotFound("package"))?;
    let input = body.merge_into(&before);
    let after = packages::update(&state.db, id, &input, state.now()).await?;
    audit_package(
        &state,
        AdminAction { actor_id: admin.user.id, ip: client.ip() },
        "package.update",
        Some(&before),
        &after,
    )
    .await?;
    Ok(Json(after.view(state.calendar())))
}

async fn disable(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let before = packages::find(&state.db, id).await?.ok_or(Error::NotFound("package"))?;
    let after = packages::disable(&state.db, id, state.now()).await?;
    audit_package(
        &state,
        AdminAction { actor_id: admin.user.id, ip: client.ip() },
        "package.disable",
        Some(&before),
        &after,
    )
    .await?;
    Ok(Json(after.view(state.calendar())))
}

async fn catalog(State(state): State<AppState>, _user: CurrentUser) -> ApiResult<impl IntoResponse> {
    let rows = packages::list(&state.db, true).await?;
    let items: Vec<_> = rows
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "description": p.description, "price": p.price(),
                "duration_days": p.duration_days, "daily_limit": p.daily_limit.map(Money::from_micros),
                "sort_order": p.sort_order, "stock": p.stock, "sold_out": p.stock == Some(0),
                "per_user_limit": p.per_user_limit,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct PurchaseBody {
    pay_with: Option<String>,
    coupon: Option<String>,
}

async fn buy(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<PurchaseBody>,
) -> ApiResult<impl IntoResponse> {
    let coupon = body.coupon.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let user_id = current.user.id;
    match body.pay_with.as_deref().unwrap_or("credit") {
        "balance" => {
            let (order, activation) = purchase::buy_with_balance_coupon(state.env(), user_id, id, coupon).await?;
            let mut conn = state.db.pool().acquire().await?;
            let row = activation::find_on(&mut conn, activation.user_package_id).await?;
            let view = row.map(|r| r.view(state.calendar(), state.now()));
            Ok((
                StatusCode::CREATED,
                Json(
                    json!({ "order": order.view(state.calendar()), "package": view, "effect": activation.effect, "credited": activation.credited }),
                ),
            ))
        }
        "credit" => {
            let order = purchase::create_credit_order_coupon(state.env(), user_id, id, coupon).await?;
            let settings = state.settings.get().await?;
            let (url, params) = crate::domain::orders::gateway_form(&settings.credit, &state.config.public_url, &order);
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "order": order.view(state.calendar()),
                    "pay_url": crate::domain::orders::pay_url(&state.config.public_url, &order.out_trade_no),
                    "gateway": { "url": url, "params": params },
                })),
            ))
        }
        _ => Err(Error::validation("pay_with", "must be credit or balance").into()),
    }
}

async fn mine(State(state): State<AppState>, current: CurrentUser) -> ApiResult<impl IntoResponse> {
    let rows = activation::list_for_user(&state.db, current.user.id).await?;
    let now = state.now();
    let items: Vec<_> = rows.iter().map(|r| r.view(state.calendar(), now)).collect();
    Ok(Json(json!({ "items": items })))
}

async fn user_packages(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let rows = activation::list_for_user(&state.db, id).await?;
    let now = state.now();
    let items: Vec<_> = rows.iter().map(|r| r.view(state.calendar(), now)).collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    package_id: i64,
}

async fn grant(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<GrantBody>,
) -> ApiResult<impl IntoResponse> {
    let by = AdminAction { actor_id: admin.user.id, ip: client.ip() };
    let row = purchase::grant(state.env(), &by, id, body.package_id).await?;
    Ok((StatusCode::CREATED, Json(row.view(state.calendar(), state.now()))))
}

async fn end(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath((id, user_package_id)): ApiPath<(i64, i64)>,
) -> ApiResult<impl IntoResponse> {
    let by = AdminAction { actor_id: admin.user.id, ip: client.ip() };
    let row = purchase::end(state.env(), &by, id, user_package_id).await?;
    Ok(Json(row.view(state.calendar(), state.now())))
}
