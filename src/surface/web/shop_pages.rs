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
use crate::domain::orders::pay_url;
use crate::domain::orders::{self, status, Order, OrderFilter};
use crate::domain::packages::{self, activation, purchase, Package};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

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
    /// The catalog package, for "Renew" (buying it again extends or queues it).
    pub package_id: i64,
    /// Still on sale, so it can be renewed.
    pub renewable: bool,
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
    /// The state to show: a pending order whose time to pay has passed reads `expired`
    /// before the hourly job marks it so (no dead "Pay now").
    pub shown_status: String,
    /// Still payable: pending and before its expiry.
    pub pending: bool,
    /// When the time to pay ends (pending orders).
    pub pay_until: String,
    /// What a fulfilled order did ("queued until …"); filled by the status box only.
    pub outcome: String,
    /// The buyer came back from the cashier's Cancel and the order is still payable: the
    /// status box says the payment was cancelled (nothing charged) instead of "waiting".
    pub cancelled: bool,
    pub method: String,
    pub created: String,
    pub user_id: i64,
    pub refundable: bool,
    pub checkable: bool,
}

impl OrderRow {
    pub fn new(o: &Order, state: &AppState) -> Self {
        let lapsed = o.status == status::PENDING && o.expires_at <= crate::foundation::clock::to_micros(state.now());
        OrderRow {
            otn: o.out_trade_no.clone(),
            subject: o.subject.clone(),
            kind: o.kind.clone(),
            amount: o.amount().format_2dp(),
            status: o.status.clone(),
            shown_status: if lapsed { status::EXPIRED.to_string() } else { o.status.clone() },
            pending: o.status == status::PENDING && !lapsed,
            pay_until: view::time(state.calendar(), o.expires_at),
            outcome: String::new(),
            cancelled: false,
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
    /// How much the balance lacks for the package the user tried to buy.
    shortfall: Option<String>,
    errors: FieldErrors,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReturnQuery {
    /// Set by the gateway's return redirect, or by a balance purchase.
    out_trade_no: String,
    /// `1` when the cashier's Cancel sent the buyer back (the sandbox says so).
    cancelled: String,
}

/// The query keys `/packages` keeps in the address bar; anything else (the gateway's
/// signed return parameters) is dropped by a redirect.
const KEPT_RETURN_KEYS: [&str; 2] = ["out_trade_no", "cancelled"];

/// What the packages page shows besides the catalog: the returning order, or a refusal.
#[derive(Default)]
struct PackagesOutcome<'a> {
    otn: &'a str,
    /// The buyer cancelled at the cashier (shown only while the order is still payable).
    cancelled: bool,
    shortfall: Option<String>,
    errors: FieldErrors,
}

async fn render_packages(state: &AppState, signed: &Signed, outcome: PackagesOutcome<'_>) -> Response {
    let PackagesOutcome { otn, cancelled, shortfall, errors } = outcome;
    let ctx = &signed.ctx;
    let loaded = async {
        let catalog = packages::list(&state.db, true).await?;
        let held = activation::list_for_user(&state.db, signed.user.id).await?;
        let order = match otn {
            "" => None,
            otn => orders::find(&state.db, otn).await?.filter(|o| o.user_id == signed.user.id),
        };
        let settings = state.settings.get().await?;
        let balance =
            crate::domain::users::find_by_id(&state.db, signed.user.id).await?.map(|u| u.balance).unwrap_or(0);
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
            package_id: h.package_id,
            renewable: (h.status == "active" || h.status == "queued")
                && catalog.iter().any(|p| p.id == h.package_id && p.stock != Some(0)),
            name: h.name.clone(),
            status: h.status.clone(),
            current: h.applies_at(now),
            daily_limit: h.daily_limit.map_or_else(|| "—".to_string(), view::money),
            starts: view::time(state.calendar(), h.starts_at),
            ends: view::time(state.calendar(), h.ends_at),
        })
        .collect();
    let order = match order {
        Some(o) => match with_outcome(state, ctx, &o).await {
            Ok(row) => Some(OrderRow { cancelled: cancelled && row.pending, ..row }),
            Err(e) => return error_page_for(ctx, &e),
        },
        None => None,
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = PackagesPage {
        ctx,
        cards: catalog.iter().map(Card::new).collect(),
        held,
        order,
        credit_usable,
        balance: view::money(balance),
        shortfall,
        errors,
    };
    render(ctx, status, &page)
}

/// The status box's row with the sentence saying what the order did.
async fn with_outcome(state: &AppState, ctx: &Ctx, order: &Order) -> Result<OrderRow> {
    let mut row = OrderRow::new(order, state);
    row.outcome = super::order_outcome::outcome(state, ctx, order).await?;
    Ok(row)
}

/// `/packages`, also where the payment gateway sends the buyer back: its signed query
/// (trade number, signature, amount) is dropped by a redirect to the bare order number,
/// so the address bar, history and a shared link carry no signature.
async fn packages_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<ReturnQuery>,
    uri: axum::http::Uri,
) -> Response {
    let only_otn = uri.query().is_none_or(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(|pairs| pairs.iter().all(|(k, _)| KEPT_RETURN_KEYS.contains(&k.as_str())))
            .unwrap_or(false)
    });
    let cancelled = q.cancelled == "1";
    if !only_otn {
        let clean = match q.out_trade_no.as_str() {
            "" => "/packages".to_string(),
            otn => {
                let mut kept = vec![("out_trade_no", otn)];
                if cancelled {
                    kept.push(("cancelled", "1"));
                }
                format!("/packages?{}", serde_urlencoded::to_string(kept).unwrap_or_default())
            }
        };
        return Redirect::to(&clean).into_response();
    }
    let outcome = PackagesOutcome { otn: &q.out_trade_no, cancelled, ..Default::default() };
    render_packages(&state, &signed, outcome).await
}

/// How much more balance the package (at its coupon price, if one applies) needs.
async fn shortfall(state: &AppState, user_id: i64, package_id: i64, coupon: Option<&str>) -> Result<Option<String>> {
    let Some(package) = packages::find(&state.db, package_id).await? else { return Ok(None) };
    let mut price = package.price();
    if let Some(code) = coupon {
        let mut conn = state.db.pool().acquire().await?;
        let target = crate::domain::coupons::pricing::Target::Package(package.id);
        if let Ok(q) =
            crate::domain::coupons::pricing::quote(&mut conn, code, user_id, target, price, state.now()).await
        {
            price = q.price;
        }
    }
    let balance = crate::domain::users::find_by_id(&state.db, user_id).await?.map(|u| u.balance).unwrap_or(0);
    let missing = price.saturating_sub(Money::from_micros(balance));
    Ok(missing.is_positive().then(|| missing.to_string()))
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
        "balance" => purchase::buy_with_balance_coupon(state.env(), user_id, id, coupon).await.map(|(order, _)| {
            let query =
                serde_urlencoded::to_string([("out_trade_no", order.out_trade_no.as_str())]).unwrap_or_default();
            format!("/packages?{query}")
        }),
        _ => purchase::create_credit_order_coupon(state.env(), user_id, id, coupon)
            .await
            .map(|order| pay_url("", &order.out_trade_no)),
    };
    match result {
        Ok(next) => Redirect::to(&next).into_response(),
        Err(e) if e.code() == "insufficient_balance" => match shortfall(&state, user_id, id, coupon).await {
            Ok(missing) => {
                let outcome = PackagesOutcome {
                    shortfall: missing,
                    errors: FieldErrors::from_error(&signed.ctx, &e),
                    ..Default::default()
                };
                render_packages(&state, &signed, outcome).await
            }
            Err(e) => error_page_for(&signed.ctx, &e),
        },
        Err(e) if e.status_code().is_client_error() => {
            let outcome = PackagesOutcome { errors: FieldErrors::from_error(&signed.ctx, &e), ..Default::default() };
            render_packages(&state, &signed, outcome).await
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
            let target = crate::domain::coupons::pricing::Target::Package(package.id);
            crate::domain::coupons::pricing::quote(
                &mut conn,
                code,
                signed.user.id,
                target,
                package.price(),
                state.now(),
            )
            .await
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
        Ok(Some(o)) if o.user_id == signed.user.id => match with_outcome(&state, ctx, &o).await {
            Ok(order) => render(ctx, StatusCode::OK, &OrderStatusPartial { ctx, order }),
            Err(e) => error_page_for(ctx, &e),
        },
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
    let page = view::page_number(q.page);
    let filter = OrderFilter { user_id: Some(signed.user.id), ..Default::default() };
    let (rows, total) =
        match orders::list(&state.db, &filter, ORDERS_PER_PAGE, view::page_offset(page, ORDERS_PER_PAGE)).await {
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
        orders::create_topup_coupon(state.env(), signed.user.id, amount, coupon).await
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
