//! Payments: top-up orders, order history, the gateway notify, admin re-check and refund.
//! Rules live in [`crate::domain::orders`] and [`crate::domain::payment`].

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr};
use super::pagination::PageQuery;
use crate::domain::audit::{self, Actor, Change};
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::domain::orders::notify;
use crate::domain::orders::refund::RefundBy;
use crate::domain::orders::{self, jobs, Order, OrderFilter};
use crate::domain::payment;
use crate::foundation::clock::to_micros;
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// The Payments routes of `docs/api.md`, plus `GET /api/user/orders/{out_trade_no}` for polling.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/payment/credit/notify",
            get(credit_notify)
                .post(credit_notify)
                .layer(axum::extract::DefaultBodyLimit::max(notify::MAX_NOTIFY_BYTES)),
        )
        .route("/api/user/topup", post(topup))
        .route("/api/user/orders", get(my_orders))
        .route("/api/user/orders/{out_trade_no}", get(my_order))
        .route("/api/admin/orders", get(all_orders))
        .route("/api/admin/orders/{out_trade_no}/check", post(check))
        .route("/api/admin/orders/{out_trade_no}/refund", post(refund))
}

/// Answers the gateway in plain text: `success` or a refusal it will retry.
/// A body over the cap is refused with the protocol's `fail` too, never axum's own text.
async fn credit_notify(
    State(state): State<AppState>,
    client: ClientAddr,
    query: RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "fail").into_response();
    };
    if query.0.as_ref().map_or(0, String::len) + body.len() > notify::MAX_NOTIFY_BYTES {
        return (StatusCode::PAYLOAD_TOO_LARGE, "fail").into_response();
    }
    let params = payment::collect_params(&query, &body);
    let reply = notify::handle(state.env(), &state.notify_throttle, &params, client.ip()).await;
    if reply.ok {
        (StatusCode::OK, "success").into_response()
    } else if reply.outcome == notify::RATE_LIMITED {
        (StatusCode::TOO_MANY_REQUESTS, "fail").into_response()
    } else if reply.internal {
        (StatusCode::INTERNAL_SERVER_ERROR, "fail").into_response()
    } else {
        (StatusCode::BAD_REQUEST, "fail").into_response()
    }
}

#[derive(Deserialize)]
struct TopupBody {
    amount: Money,
    coupon: Option<String>,
}

async fn topup(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<TopupBody>,
) -> ApiResult<impl IntoResponse> {
    let coupon = body.coupon.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let order = orders::create_topup_coupon(state.env(), current.user.id, body.amount, coupon).await?;
    let settings = state.settings.get().await?;
    let (url, params) = orders::gateway_form(&settings.credit, &state.config.public_url, &order);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "order": order.view(state.calendar()),
            "pay_url": orders::pay_url(&state.config.public_url, &order.out_trade_no),
            "gateway": { "url": url, "params": params },
        })),
    ))
}

#[derive(Deserialize)]
struct OrderQuery {
    status: Option<String>,
    kind: Option<String>,
    user_id: Option<i64>,
    /// RFC 3339 bounds on the creation time.
    from: Option<String>,
    until: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

impl OrderQuery {
    fn filter(&self, user_id: Option<i64>) -> Result<OrderFilter, Error> {
        let instant = |field: &str, v: &Option<String>| {
            v.as_deref().map(|t| super::keys::parse_instant(field, t).map(to_micros)).transpose()
        };
        Ok(OrderFilter {
            user_id,
            status: self.status.clone().filter(|s| !s.is_empty()),
            kind: self.kind.clone().filter(|s| !s.is_empty()),
            from: instant("from", &self.from)?,
            until: instant("until", &self.until)?,
        })
    }
}

async fn my_orders(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let filter = query.filter(Some(current.user.id))?;
    let (rows, total) = orders::list(&state.db, &filter, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|o| o.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn my_order(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiPath(otn): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let order = orders::find(&state.db, &otn)
        .await?
        .filter(|o| o.user_id == current.user.id)
        .ok_or(Error::NotFound("order"))?;
    Ok(Json(order.view(state.calendar())))
}

async fn all_orders(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let filter = query.filter(query.user_id)?;
    let (rows, total) = orders::list(&state.db, &filter, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|o| o.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn check(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(otn): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let (outcome, order) = jobs::check_order(state.env(), &otn).await?;
    Ok(Json(json!({ "order": order.view(state.calendar()), "check": outcome })))
}

async fn refund(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(otn): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let order = refund_audited(&state, &client.actor(admin.user.id), &otn).await?;
    Ok(Json(json!({ "order": order.view(state.calendar()) })))
}

/// An admin's refund of order `otn` (from the API and the orders page alike), audited.
pub(crate) async fn refund_audited(state: &AppState, actor: &Actor, otn: &str) -> Result<Order, Error> {
    let order = orders::refund::refund(state.env(), otn, RefundBy { actor_id: actor.id }).await?;
    let change = Change::new("order.refund", format!("order:{otn}")).after(&order.view(state.calendar()));
    audit::record_change(&state.db, actor, change, state.now()).await?;
    Ok(order)
}
