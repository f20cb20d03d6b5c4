//! Admin commerce pages: `/admin/packages` (list with stock and holders, create, edit,
//! enable/disable, order) and `/admin/orders` (filters, refund, re-check with the gateway),
//! plus the "check configuration" button of the Credit settings.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::admin_write::FormWrite;
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::order_check::CheckNotice;
use super::shop_pages::OrderRow;
use super::view::{self, Pager};
use super::{error_page_for, render, FieldErrors};
use crate::domain::orders::{self, OrderFilter};
use crate::domain::packages::purchase::AdminAction;
use crate::domain::packages::{self, held, Package, PackageInput};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::api::extract::ClientAddr;
use crate::surface::api::packages::audit_package;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/packages", get(packages_page).post(create_package))
        .route("/admin/packages/{id}", get(edit_page).post(save_package))
        .route("/admin/packages/{id}/toggle", post(toggle_package))
        .route("/admin/orders", get(orders_page))
        .route("/admin/orders/{otn}/refund", post(refund_order))
        .route("/admin/orders/{otn}/check", post(check_order))
}

/// The package form as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackageForm {
    pub name: String,
    pub description: String,
    pub price: String,
    pub duration_days: String,
    pub daily_limit: String,
    pub sort_order: String,
    pub stock: String,
    pub per_user_limit: String,
    pub enabled: String,
    pub five_hour_limit: String,
    pub weekly_limit: String,
    pub monthly_limit: String,
    pub total_limit: String,
    /// Model names separated by commas; empty = all.
    pub models: String,
}

fn amount(field: &str, text: &str) -> Result<Money> {
    Money::parse(text.trim()).map_err(|_| Error::validation(field, "must be an amount such as 1.50"))
}

fn optional_amount(field: &str, text: &str) -> Result<Option<Money>> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        amount(field, text).map(Some)
    }
}

fn whole(field: &str, text: &str) -> Result<i64> {
    text.trim().parse().map_err(|_| Error::validation(field, "must be a whole number"))
}

fn optional_whole(field: &str, text: &str) -> Result<Option<i64>> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        whole(field, text).map(Some)
    }
}

impl PackageForm {
    fn from_package(p: &Package) -> Self {
        PackageForm {
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price().format_2dp(),
            duration_days: p.duration_days.to_string(),
            daily_limit: p.daily_limit.map(|l| Money::from_micros(l).to_string()).unwrap_or_default(),
            sort_order: p.sort_order.to_string(),
            stock: p.stock.map(|s| s.to_string()).unwrap_or_default(),
            per_user_limit: p.per_user_limit.map(|s| s.to_string()).unwrap_or_default(),
            enabled: if p.is_enabled() { "on".into() } else { String::new() },
            five_hour_limit: p.five_hour_limit.map(|l| Money::from_micros(l).to_string()).unwrap_or_default(),
            weekly_limit: p.weekly_limit.map(|l| Money::from_micros(l).to_string()).unwrap_or_default(),
            monthly_limit: p.monthly_limit.map(|l| Money::from_micros(l).to_string()).unwrap_or_default(),
            total_limit: p.total_limit.map(|l| Money::from_micros(l).to_string()).unwrap_or_default(),
            models: p.models.clone().unwrap_or_default(),
        }
    }

    fn is_enabled(&self) -> bool {
        !self.enabled.is_empty()
    }

    fn input(&self) -> Result<PackageInput> {
        Ok(PackageInput {
            name: self.name.trim().to_string(),
            description: self.description.trim().to_string(),
            price: amount("price", &self.price)?,
            duration_days: whole("duration_days", &self.duration_days)?,
            daily_limit: optional_amount("daily_limit", &self.daily_limit)?,
            sort_order: optional_whole("sort_order", &self.sort_order)?.unwrap_or(0),
            enabled: self.is_enabled(),
            stock: optional_whole("stock", &self.stock)?,
            per_user_limit: optional_whole("per_user_limit", &self.per_user_limit)?,
            five_hour_limit: optional_amount("five_hour_limit", &self.five_hour_limit)?,
            weekly_limit: optional_amount("weekly_limit", &self.weekly_limit)?,
            monthly_limit: optional_amount("monthly_limit", &self.monthly_limit)?,
            total_limit: optional_amount("total_limit", &self.total_limit)?,
            models: crate::domain::billing::allowance::parse_models(Some(&self.models)),
        })
    }
}

/// A catalog row for the admin list.
pub struct PackageRow {
    pub id: i64,
    pub name: String,
    pub price: String,
    pub duration_days: i64,
    pub daily_limit: String,
    pub sort_order: i64,
    pub enabled: bool,
    pub stock: Option<i64>,
    pub sold: i64,
    pub holders: i64,
}

#[derive(Template)]
#[template(path = "admin_packages.html")]
struct PackagesPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<PackageRow>,
    form: PackageForm,
    errors: FieldErrors,
}

async fn render_list(state: &AppState, ctx: &Ctx, form: PackageForm, errors: FieldErrors) -> Response {
    let loaded = async {
        let catalog = packages::list(&state.db, false).await?;
        let holders: HashMap<i64, i64> = held::holders_by_package(&state.db, state.now()).await?.into_iter().collect();
        Ok::<_, Error>((catalog, holders))
    }
    .await;
    let (catalog, holders) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let rows = catalog
        .iter()
        .map(|p| PackageRow {
            id: p.id,
            name: p.name.clone(),
            price: p.price().format_2dp(),
            duration_days: p.duration_days,
            daily_limit: p.daily_limit.map_or_else(|| "—".to_string(), view::money),
            sort_order: p.sort_order,
            enabled: p.is_enabled(),
            stock: p.stock,
            sold: p.sold,
            holders: holders.get(&p.id).copied().unwrap_or(0),
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &PackagesPage { ctx, rows, form, errors })
}

async fn packages_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    let form = PackageForm { enabled: "on".into(), duration_days: "30".into(), ..Default::default() };
    render_list(&state, &signed.ctx, form, FieldErrors::none()).await
}

async fn create_package(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<PackageForm>,
) -> Response {
    let ctx = &signed.ctx;
    let by = AdminAction { actor_id: signed.user.id, ip: client.ip() };
    let result = async {
        let package = packages::create(&state.db, &form.input()?, state.now()).await?;
        audit_package(&state, by, "package.create", None, &package).await
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/packages");
    form_write.answer(result, async |errors| render_list(&state, ctx, form, errors).await).await
}

#[derive(Template)]
#[template(path = "admin_package_edit.html")]
struct EditPage<'a> {
    ctx: &'a Ctx,
    id: i64,
    form: PackageForm,
    errors: FieldErrors,
}

async fn edit_page(State(state): State<AppState>, AdminPage(signed): AdminPage, Path(id): Path<i64>) -> Response {
    let ctx = &signed.ctx;
    match packages::find(&state.db, id).await {
        Ok(Some(p)) => {
            let page = EditPage { ctx, id, form: PackageForm::from_package(&p), errors: FieldErrors::none() };
            render(ctx, StatusCode::OK, &page)
        }
        Ok(None) => error_page_for(ctx, &Error::NotFound("package")),
        Err(e) => error_page_for(ctx, &e),
    }
}

async fn save_package(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<PackageForm>,
) -> Response {
    let ctx = &signed.ctx;
    let by = AdminAction { actor_id: signed.user.id, ip: client.ip() };
    let result = async {
        let before = packages::find(&state.db, id).await?.ok_or(Error::NotFound("package"))?;
        let after = packages::update(&state.db, id, &form.input()?, state.now()).await?;
        audit_package(&state, by, "package.update", Some(&before), &after).await
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/packages").editing();
    form_write
        .answer(result, async |errors| {
            render(ctx, StatusCode::UNPROCESSABLE_ENTITY, &EditPage { ctx, id, form, errors })
        })
        .await
}

#[derive(Deserialize)]
struct Empty {}

/// Puts a package on sale or takes it off (holders keep what they bought).
async fn toggle_package(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let by = AdminAction { actor_id: signed.user.id, ip: client.ip() };
    let result = async {
        let before = packages::find(&state.db, id).await?.ok_or(Error::NotFound("package"))?;
        let (after, action) = if before.is_enabled() {
            (packages::disable(&state.db, id, state.now()).await?, "package.disable")
        } else {
            let mut input = PackageForm::from_package(&before).input()?;
            input.enabled = true;
            (packages::update(&state.db, id, &input, state.now()).await?, "package.update")
        };
        audit_package(&state, by, action, Some(&before), &after).await
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/packages").editing();
    form_write.answer(result, async |errors| render_list(&state, ctx, PackageForm::default(), errors).await).await
}

#[derive(Template)]
#[template(path = "admin_orders.html")]
struct OrdersPage<'a> {
    ctx: &'a Ctx,
    query: &'a OrdersQuery,
    orders: Vec<(OrderRow, String)>,
    pager: Pager,
    notice: Option<CheckNotice>,
    errors: FieldErrors,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OrdersQuery {
    status: String,
    kind: String,
    user: String,
    page: Option<i64>,
}

const ORDERS_PER_PAGE: i64 = 25;

async fn render_orders(
    state: &AppState,
    ctx: &Ctx,
    query: &OrdersQuery,
    outcome: (Option<CheckNotice>, FieldErrors),
) -> Response {
    let page = view::page_number(query.page);
    let loaded = async {
        let mut filter = OrderFilter {
            status: Some(query.status.clone()).filter(|s| !s.is_empty()),
            kind: Some(query.kind.clone()).filter(|s| !s.is_empty()),
            ..Default::default()
        };
        if !query.user.trim().is_empty() {
            filter.user_id =
                Some(crate::domain::users::find_by_email(&state.db, &query.user).await?.map(|u| u.id).unwrap_or(-1));
        }
        let (rows, total) =
            orders::list(&state.db, &filter, ORDERS_PER_PAGE, view::page_offset(page, ORDERS_PER_PAGE)).await?;
        let mut emails: HashMap<i64, String> = HashMap::new();
        for row in &rows {
            if let std::collections::hash_map::Entry::Vacant(slot) = emails.entry(row.user_id) {
                slot.insert(
                    crate::domain::users::find_by_id(&state.db, row.user_id)
                        .await?
                        .map(|u| u.email)
                        .unwrap_or_default(),
                );
            }
        }
        let orders = rows
            .iter()
            .map(|o| (OrderRow::new(o, state), emails.get(&o.user_id).cloned().unwrap_or_default()))
            .collect::<Vec<_>>();
        Ok::<_, Error>((orders, total))
    }
    .await;
    let (orders, total) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let base = serde_urlencoded::to_string([
        ("status", query.status.as_str()),
        ("kind", query.kind.as_str()),
        ("user", query.user.as_str()),
    ])
    .unwrap_or_default();
    let pager = Pager::new(ctx, &format!("/admin/orders?{base}"), page, ORDERS_PER_PAGE, total);
    let (notice, errors) = outcome;
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::CONFLICT };
    render(ctx, status, &OrdersPage { ctx, query, orders, pager, notice, errors })
}

async fn orders_page(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<OrdersQuery>,
) -> Response {
    render_orders(&state, &signed.ctx, &query, (None, FieldErrors::none())).await
}

async fn refund_order(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(otn): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        crate::surface::api::payments::refund_audited(&state, &client.actor(signed.user.id), &otn).await.map(|_| ())
    }
    .await;
    let outcome = match result {
        Ok(()) => {
            let refunded = CheckNotice { tone: "ok", text: format!("{} {otn}", ctx.t("orders.refunded")) };
            (Some(refunded), FieldErrors::none())
        }
        Err(e) if e.status_code().is_client_error() || e.status_code() == StatusCode::BAD_GATEWAY => {
            (None, FieldErrors::from_error(ctx, &e))
        }
        Err(e) => return error_page_for(ctx, &e),
    };
    render_orders(&state, ctx, &OrdersQuery::default(), outcome).await
}

async fn check_order(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Path(otn): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let outcome = match orders::jobs::check_order(state.env(), &otn).await {
        Ok((check, order)) => {
            // The state the badge in the table shows (a lapsed pending order reads Expired).
            let shown = OrderRow::new(&order, &state).shown_status;
            (Some(super::order_check::notice(ctx, &otn, &check, &shown)), FieldErrors::none())
        }
        Err(e) if e.status_code().is_client_error() || e.status_code() == StatusCode::BAD_GATEWAY => {
            (None, FieldErrors::from_error(ctx, &e))
        }
        Err(e) => return error_page_for(ctx, &e),
    };
    render_orders(&state, ctx, &OrdersQuery::default(), outcome).await
}
