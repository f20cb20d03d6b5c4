//! Buying: `/packages` (catalog cards, buy with Credit or balance, the returning order's
//! state polled with htmx while pending), `/orders` and the balance top-up. Purchases go
//! through `packages::purchase` and `orders`, the same functions as the JSON API.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::ctx::{CsrfForm, Ctx, Signed};
use super::view::{self, Pager};
use super::{error_page_for, render, FieldErrors};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::money::Money;
use crate::orders::{self, status, Order, OrderFilter};
use crate::packages::{self, activation, purchase, Package};
use crate::payment::page::pay_url;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/packages", get(packages_page))
        .route("/packages/{id}/buy", post(buy))
        .route("/packages/{id}/quote", get(quote))
        .route("/orders", get(orders_page))
        .route("/orders/{otn}/status", get(order_status))
        .route("/account/topup", post(topup))
}

/// A package card.
pub struct Card {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price: String,
    pub duration_days: i64,
    pub daily_limit: String,
    pub stock: Option<i64>,
    pub sold_out: bool,
}

impl Card {
    fn new(p: &Package) -> Self {
        Card {
            id: p.id,
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price().format_2dp(),
            duration_days: p.duration_days,
            daily_limit: p.daily_limit.map_or_else(|| "—".to_string(), view::money),
            stock: p.stock,
            sold_out: p.stock == Some(0),
        }
    }
}

/// One of the user's packages (current, queued or past).
pub struct HeldRow {
    pub name: String,
    pub status: String,
    pub current: bool,
    pub daily_limit: String,
    pub starts: String,
    pub ends: String,
}

/// An order as the status box and the order list show it.
pub struct OrderRow {
    pub otn: String,
    pub subject: String,
    pub kind: String,
    pub amount: String,
    pub status: String,
    pub pending: bool,
    pub method: String,
    pub created: String,
    pub user_id: i64,
    pub refundable: bool,
    pub checkable: bool,
}

impl OrderRow {
    pub fn new(o: &Order, state: &AppState) -> Self {
        OrderRow {
            otn: o.out_trade_no.clone(),
            subject: o.subject.clone(),
            kind: o.kind.clone(),
            amount: o.amount().format_2dp(),
            status: o.status.clone(),
            pending: o.status == status::PENDING,
            method: o.pay_method.clone(),
            created: view::time(state.calendar(), o.created_at),
            user_id: o.user_id,
            refundable: o.status == status::FULFILLED,
            checkable: o.pay_method == "credit" && (o.status == status::PENDING || o.status == status::EXPIRED),
        }
    }
}

#[derive(Template)]
#[template(path = "packages.html")]
struct PackagesPage<'a> {
    ctx: &'a Ctx,
    cards: Vec<Card>,
    held: Vec<HeldRow>,
    order: Option<OrderRow>,
    credit_usable: bool,
    balance: String,
    errors: FieldErrors,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReturnQuery {
    /// Set by the gateway's return redirect, or by a balance purchase.
    out_trade_no: String,
}

async fn render_packages(state: &AppState, signed: &Signed, otn: &str, errors: FieldErrors) -> Response {
    let ctx = &signed.ctx;
    let loaded = async {
        let catalog = packages::list(&state.db, true).await?;
        let held = activation::list_for_user(&state.db, signed.user.id).await?;
        let order = match otn {
            "" => None,
            otn => orders::find(&state.db, otn).await?.filter(|o| o.user_id == signed.user.id),
        };
        let settings = state.settings.get().await?;
        let balance = crate::users::find_by_id(&state.db, signed.user.id).await?.map(|u| u.balance).unwrap_or(0);
        Ok::<_, Error>((catalog, held, order, settings.credit.is_usable(), balance))
    }
    .await;
    let (catalog, held, order, credit_usable, balance) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let now = state.now();
    let held = held
        .iter()
        .map(|h| HeldRow {
            name: h.name.clone(),
            status: h.status.clone(),
            current: h.applies_at(now),
            daily_limit: h.daily_limit.map_or_else(|| "—".to_string(), view::money),
            starts: view::time(state.calendar(), h.starts_at),
            ends: view::time(state.calendar(), h.ends_at),
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = PackagesPage {
        ctx,
        cards: catalog.iter().map(Card::new).collect(),
        held,
        order: order.as_ref().map(|o| OrderRow::new(o, state)),
        credit_usable,
        balance: view::money(balance),
        errors,
    };
    render(ctx, status, &page)
}

async fn packages_page(State(state): State<AppState>, signed: Signed, Query(q): Query<ReturnQuery>) -> Response {
    render_packages(&state, &signed, &q.out_trade_no, FieldErrors::none()).await
}

#[derive(Deserialize)]
struct BuyForm {
    pay_with: String,
    /// Optional coupon code; blank = none.
    #[serde(default)]
    coupon: String,
}

async fn buy(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<BuyForm>,
) -> Response {
    let user_id = signed.user.id;
    let coupon = Some(form.coupon.trim()).filter(|c| !c.is_empty());
    let result: Result<String> = match form.pay_with.as_str() {
        "balance" => purchase::buy_with_balance_coupon(&state, user_id, id, coupon).await.map(|(order, _)| {
            let query =
                serde_urlencoded::to_string([("out_trade_no", order.out_trade_no.as_str())]).unwrap_or_default();
            format!("/packages?{query}")
        }),
        _ => purchase::create_credit_order_coupon(&state, user_id, id, coupon)
            .await
            .map(|order| pay_url("", &order.out_trade_no)),
    };
    match result {
        Ok(next) => Redirect::to(&next).into_response(),
        Err(e) if e.status_code().is_client_error() => {
            render_packages(&state, &signed, "", FieldErrors::from_error(&signed.ctx, &e)).await
        }
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}

#[derive(Template)]
#[template(path = "_coupon_quote.html")]
struct QuotePartial<'a> {
    ctx: &'a Ctx,
    id: i64,
    /// Discounted price, list price and the saving, when the coupon applies.
    quote: Option<(String, String, String)>,
    /// Why it does not, in the page's language.
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct QuoteQuery {
    coupon: String,
}

/// The price with a coupon, for htmx while the user types it (the same
/// `coupons::pricing::quote` as `GET /api/packages/{id}/quote`; nothing is reserved).
/// Always 200 so htmx swaps the refusal in next to the field.
async fn quote(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<i64>,
    Query(q): Query<QuoteQuery>,
) -> Response {
    let ctx = &signed.ctx;
    let code = q.coupon.trim();
    let mut partial = QuotePartial { ctx, id, quote: None, error: None };
    if !code.is_empty() {
        let priced = async {
            let package =
                packages::find(&state.db, id).await?.filter(|p| p.is_enabled()).ok_or(Error::NotFound("package"))?;
            let mut conn = state.db.pool().acquire().await?;
            let target = crate::coupons::pricing::Target::Package(package.id);
            crate::coupons::pricing::quote(&mut conn, code, signed.user.id, target, package.price(), state.now()).await
        }
        .await;
        match priced {
            Ok(q) => partial.quote = Some((q.price.format_2dp(), q.list_price.format_2dp(), q.discount.format_2dp())),
            Err(e) if e.status_code().is_client_error() => {
                partial.error = Some(match &e {
                    Error::Validation { message, .. } => ctx.msg(message),
                    other => super::i18n::error_text(ctx.lang, other),
                })
            }
            Err(e) => return error_page_for(ctx, &e),
        }
    }
    render(ctx, StatusCode::OK, &partial)
}

#[derive(Template)]
#[template(path = "order_status.html")]
struct OrderStatusPartial<'a> {
    ctx: &'a Ctx,
    order: OrderRow,
}

/// The order state box alone, for htmx polling while the payment is pending.
async fn order_status(State(state): State<AppState>, signed: Signed, Path(otn): Path<String>) -> Response {
    let ctx = &signed.ctx;
    match orders::find(&state.db, &otn).await {
        Ok(Some(o)) if o.user_id == signed.user.id => {
            render(ctx, StatusCode::OK, &OrderStatusPartial { ctx, order: OrderRow::new(&o, &state) })
        }
        Ok(_) => error_page_for(ctx, &Error::NotFound("order")),
        Err(e) => error_page_for(ctx, &e),
    }
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage<'a> {
    ctx: &'a Ctx,
    orders: Vec<OrderRow>,
    pager: Pager,
}

#[derive(Deserialize)]
struct PageOnly {
    page: Option<i64>,
}

const ORDERS_PER_PAGE: i64 = 25;

async fn orders_page(State(state): State<AppState>, signed: Signed, Query(q): Query<PageOnly>) -> Response {
    let ctx = &signed.ctx;
    let page = q.page.unwrap_or(1).max(1);
    let filter = OrderFilter { user_id: Some(signed.user.id), ..Default::default() };
    let (rows, total) = match orders::list(&state.db, &filter, ORDERS_PER_PAGE, (page - 1) * ORDERS_PER_PAGE).await {
        Ok(found) => found,
        Err(e) => return error_page_for(ctx, &e),
    };
    let pager = Pager::new(ctx, "/orders?", page, ORDERS_PER_PAGE, total);
    let orders = rows.iter().map(|o| OrderRow::new(o, &state)).collect();
    render(ctx, StatusCode::OK, &OrdersPage { ctx, orders, pager })
}

#[derive(Deserialize)]
struct TopupForm {
    #[serde(default)]
    amount: String,
    /// Optional coupon (one that applies to top-ups); blank = none.
    #[serde(default)]
    coupon: String,
}

/// Starts a balance top-up through the gateway; errors go back to the account page.
async fn topup(State(state): State<AppState>, signed: Signed, CsrfForm(form): CsrfForm<TopupForm>) -> Response {
    let result = async {
        let amount = Money::parse_cents(form.amount.trim())
            .map_err(|_| Error::validation("amount", "must be an amount such as 10.00"))?;
        let coupon = Some(form.coupon.trim()).filter(|c| !c.is_empty());
        orders::create_topup_coupon(&state, signed.user.id, amount, coupon).await
    }
    .await;
    match result {
        Ok(order) => Redirect::to(&pay_url("", &order.out_trade_no)).into_response(),
        Err(e) if e.status_code().is_client_error() => {
            super::user_pages::account_with_errors(
                &state,
                &signed,
                &form.amount,
                FieldErrors::from_error(&signed.ctx, &e),
            )
            .await
        }
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}
