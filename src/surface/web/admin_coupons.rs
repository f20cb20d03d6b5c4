//! `/admin/coupons`: the coupon list with uses, the create form, enable/disable and
//! delete. Writes go through [`crate::domain::coupons`] and are audited like the JSON API's.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::admin_write::{back_or_error_page, FormWrite};
use super::coupon_form::CouponForm;
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::{error_page_for, render, view, FieldErrors};
use crate::domain::coupons::{self, Coupon};
use crate::foundation::clock::from_micros;
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin::coupons as admin_coupons;
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/coupons", get(coupons_page).post(create_coupon))
        .route("/admin/coupons/{id}", get(edit_page).post(save_coupon))
        .route("/admin/coupons/{id}/toggle", post(toggle_coupon))
        .route("/admin/coupons/{id}/delete", post(delete_coupon))
}

/// Most coupons the page lists (newest first).
const LIST_LIMIT: i64 = 200;

/// A coupon as the list shows it.
pub struct CouponRow {
    pub id: i64,
    pub code: String,
    pub discount: String,
    pub applies: String,
    pub window: String,
    pub uses: String,
    pub per_user: String,
    pub enabled: bool,
}

impl CouponRow {
    fn new(c: &Coupon, ctx: &Ctx, state: &AppState, names: &HashMap<i64, String>) -> Self {
        let discount = match (c.percent_off, c.amount_off) {
            (Some(p), _) => {
                let p = Money::from_micros(p).to_string();
                format!("{}%", p.strip_suffix(".00").unwrap_or(&p))
            }
            (None, Some(a)) => format!("{} USD", view::money(a)),
            (None, None) => "—".into(),
        };
        let mut applies: Vec<String> = match c.package_ids() {
            None => vec![ctx.t("coupons.all_packages").to_string()],
            Some(ids) => ids.iter().map(|id| names.get(id).cloned().unwrap_or_else(|| format!("#{id}"))).collect(),
        };
        if c.applies_to_topup != 0 {
            applies.push(ctx.t("coupons.topups").to_string());
        }
        let calendar = state.calendar();
        let day = |m: i64| calendar.business_date(from_micros(m)).to_string();
        // The stored end is the start of the day after the last valid day.
        let last_day = |m: i64| calendar.business_date(from_micros(m - 1)).to_string();
        let window = match (c.valid_from, c.valid_until) {
            (None, None) => ctx.t("coupons.always").to_string(),
            (from, until) => format!(
                "{} → {}",
                from.map(day).unwrap_or_else(|| "…".into()),
                until.map(last_day).unwrap_or_else(|| "…".into())
            ),
        };
        let limit = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "∞".into());
        CouponRow {
            id: c.id,
            code: c.code.clone(),
            discount,
            applies: applies.join(", "),
            window,
            uses: format!("{} / {}", c.used, limit(c.max_uses)),
            per_user: limit(c.max_uses_per_user),
            enabled: c.enabled != 0,
        }
    }
}

#[derive(Template)]
#[template(path = "admin_coupons.html")]
struct CouponsPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<CouponRow>,
    packages: Vec<(i64, String)>,
    form: CouponForm,
    notice: Option<&'static str>,
    errors: FieldErrors,
}

struct Outcome {
    form: CouponForm,
    notice: Option<&'static str>,
    errors: FieldErrors,
}

async fn render_list(state: &AppState, ctx: &Ctx, outcome: Outcome) -> Response {
    let loaded = async {
        let (coupons, _) = coupons::list(&state.db, LIST_LIMIT, 0).await?;
        let catalog = crate::domain::packages::list(&state.db, false).await?;
        Ok::<_, Error>((coupons, catalog))
    }
    .await;
    let (list, catalog) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let names: HashMap<i64, String> = catalog.iter().map(|p| (p.id, p.name.clone())).collect();
    let rows = list.iter().map(|c| CouponRow::new(c, ctx, state, &names)).collect();
    let packages = catalog.iter().map(|p| (p.id, p.name.clone())).collect();
    let Outcome { form, notice, errors } = outcome;
    let status = match errors.general() {
        _ if errors.is_empty() => StatusCode::OK,
        Some(_) => StatusCode::CONFLICT,
        None => StatusCode::UNPROCESSABLE_ENTITY,
    };
    render(ctx, status, &CouponsPage { ctx, rows, packages, form, notice, errors })
}

async fn coupons_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    let outcome = Outcome { form: CouponForm::blank(), notice: None, errors: FieldErrors::none() };
    render_list(&state, &signed.ctx, outcome).await
}

/// A taken code is said on the code field; other refusals where they belong.
fn coupon_errors(ctx: &Ctx, err: &Error) -> FieldErrors {
    match err {
        Error::Conflict { .. } => FieldErrors::one("code", super::i18n::error_text(ctx.lang, err)),
        other => FieldErrors::from_error(ctx, other),
    }
}

async fn create_coupon(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let ctx = &signed.ctx;
    let form = CouponForm::from_pairs(&pairs);
    let result = async {
        let input = form.input(state.calendar())?;
        admin_coupons::create(&state, client.actor(signed.user.id), &input).await.map(|_| ())
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/coupons").errors_by(coupon_errors);
    form_write
        .answer(result, async |errors| render_list(&state, ctx, Outcome { form, notice: None, errors }).await)
        .await
}

#[derive(Template)]
#[template(path = "admin_coupon_edit.html")]
struct EditPage<'a> {
    ctx: &'a Ctx,
    id: i64,
    /// The stored code, for the heading while the form may hold an edited one.
    code: String,
    packages: Vec<(i64, String)>,
    form: CouponForm,
    errors: FieldErrors,
}

async fn render_edit(state: &AppState, ctx: &Ctx, id: i64, form: Option<CouponForm>, errors: FieldErrors) -> Response {
    let loaded = async {
        let mut conn = state.db.pool().acquire().await?;
        let coupon = coupons::find_in(&mut conn, id).await?.ok_or(Error::NotFound("coupon"))?;
        let catalog = crate::domain::packages::list(&state.db, false).await?;
        Ok::<_, Error>((coupon, catalog))
    }
    .await;
    let (coupon, catalog) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = EditPage {
        ctx,
        id,
        code: coupon.code.clone(),
        packages: catalog.iter().map(|p| (p.id, p.name.clone())).collect(),
        form: form.unwrap_or_else(|| CouponForm::from_coupon(&coupon, state.calendar())),
        errors,
    };
    render(ctx, status, &page)
}

async fn edit_page(State(state): State<AppState>, AdminPage(signed): AdminPage, Path(id): Path<i64>) -> Response {
    render_edit(&state, &signed.ctx, id, None, FieldErrors::none()).await
}

/// Replaces a coupon's settings; its use count stays.
async fn save_coupon(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> Response {
    let ctx = &signed.ctx;
    let form = CouponForm::from_pairs(&pairs);
    let result = async {
        let input = form.input(state.calendar())?;
        admin_coupons::update(&state, client.actor(signed.user.id), id, &input).await.map(|_| ())
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/coupons").errors_by(coupon_errors).editing();
    form_write.answer(result, async |errors| render_edit(&state, ctx, id, Some(form), errors).await).await
}

#[derive(Deserialize)]
struct Empty {}

/// Switches a coupon on or off (its uses stay).
async fn toggle_coupon(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let result = admin_coupons::switch(&state, client.actor(signed.user.id), id, None).await.map(|_| ());
    back_or_error_page(ctx, result, "/admin/coupons")
}

/// Deletes a coupon no order used; otherwise says to disable it instead.
async fn delete_coupon(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let result = admin_coupons::delete(&state, client.actor(signed.user.id), id).await;
    match result {
        Ok(()) => {
            let outcome =
                Outcome { form: CouponForm::blank(), notice: Some("coupons.deleted"), errors: FieldErrors::none() };
            render_list(&state, ctx, outcome).await
        }
        Err(e @ Error::Conflict { .. }) => {
            let outcome = Outcome { form: CouponForm::blank(), notice: None, errors: FieldErrors::from_error(ctx, &e) };
            render_list(&state, ctx, outcome).await
        }
        Err(e) => error_page_for(ctx, &e),
    }
}
