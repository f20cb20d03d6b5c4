//! The admin's page of one user, `/admin/users/{id}`: profile and suspension, balance
//! adjustment, spending caps (daily and per 5-hour block), the packages they hold (grant
//! any package, off-sale ones too; end one) and their recent ledger. Every write goes
//! through the same audited domain calls as the JSON API.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::admin_pages::UserRow;
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::view;
use super::{error_page_for, render, FieldErrors};
use crate::domain::auth::Status;
use crate::domain::ledger;
use crate::domain::users::{self, UserPatch};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::api::admin_actions::{self, Actor, BalanceAdjustment};
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{id}", get(user_page))
        .route("/admin/users/{id}/status", post(set_status))
        .route("/admin/users/{id}/balance", post(adjust_balance))
        .route("/admin/users/{id}/caps", post(set_caps))
        .route("/admin/users/{id}/packages", post(grant_package))
        .route("/admin/users/{id}/packages/{user_package_id}/end", post(end_package))
}

#[derive(Deserialize)]
struct Empty {}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage<'a> {
    ctx: &'a Ctx,
    user: UserRow,
    ledger: Vec<LedgerRow>,
    /// Every package, off-sale ones too (a trial package is granted, not sold): (id, label).
    catalog: Vec<(i64, String)>,
    /// The user's packages, newest first.
    held: Vec<HeldRow>,
    notice: Option<&'static str>,
    form_amount: &'a str,
    form_reason: &'a str,
    /// The spending caps as stored, or as typed when refused: (daily, 5-hour); blank = none.
    caps: (String, String),
    errors: FieldErrors,
}

/// A package the user holds, as the admin sees it.
struct HeldRow {
    id: i64,
    name: String,
    status: &'static str,
    /// Active or queued: it can be ended.
    running: bool,
    starts: String,
    ends: String,
}

/// A ledger entry as the user page lists it.
struct LedgerRow {
    time: String,
    kind: String,
    amount: String,
    balance_after: String,
    note: String,
}

/// What the user page shows besides the user: a notice, or a rejected form.
#[derive(Default)]
struct UserOutcome<'a> {
    notice: Option<&'static str>,
    form_amount: &'a str,
    form_reason: &'a str,
    /// The caps form as typed, when it was refused.
    caps: Option<&'a CapsForm>,
    errors: FieldErrors,
}

async fn render_user(state: &AppState, ctx: &Ctx, id: i64, outcome: UserOutcome<'_>) -> Response {
    let loaded = async {
        let user = users::find_by_id(&state.db, id).await?.ok_or(Error::NotFound("user"))?;
        let entries = ledger::list(&state.db, Some(id), 20, 0).await?.0;
        let catalog = crate::domain::packages::list(&state.db, false).await?;
        let held = crate::domain::packages::activation::list_for_user(&state.db, id).await?;
        Ok::<_, Error>((user, entries, (catalog, held)))
    }
    .await;
    let (user, entries, (catalog, held)) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let ledger = entries
        .iter()
        .map(|e| LedgerRow {
            time: view::time(state.calendar(), e.created_at),
            kind: e.kind.clone(),
            amount: view::money(e.amount),
            balance_after: view::money(e.balance_after),
            note: e.note.clone().unwrap_or_default(),
        })
        .collect();
    let status = if outcome.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = UserPage {
        ctx,
        user: UserRow::new(&user, state),
        ledger,
        catalog: catalog
            .iter()
            .map(|p| {
                let label =
                    if p.is_enabled() { p.name.clone() } else { format!("{} ({})", p.name, ctx.t("apk.off_sale")) };
                (p.id, label)
            })
            .collect(),
        held: held
            .iter()
            .map(|h| {
                let (status, running) = match h.status.as_str() {
                    "active" => (ctx.t("status.active"), true),
                    "queued" => (ctx.t("packages.queued"), true),
                    "ended" => (ctx.t("admin.package_ended"), false),
                    _ => (ctx.t("packages.past"), false),
                };
                HeldRow {
                    id: h.id,
                    name: h.name.clone(),
                    status,
                    running,
                    starts: view::time(state.calendar(), h.starts_at),
                    ends: view::time(state.calendar(), h.ends_at),
                }
            })
            .collect(),
        notice: outcome.notice,
        form_amount: outcome.form_amount,
        form_reason: outcome.form_reason,
        caps: match outcome.caps {
            Some(typed) => (typed.daily_cap.clone(), typed.five_hour_cap.clone()),
            None => (
                user.daily_cap.map(view::money).unwrap_or_default(),
                user.five_hour_cap.map(view::money).unwrap_or_default(),
            ),
        },
        errors: outcome.errors,
    };
    render(ctx, status, &page)
}

async fn user_page(State(state): State<AppState>, AdminPage(signed): AdminPage, Path(id): Path<i64>) -> Response {
    render_user(&state, &signed.ctx, id, UserOutcome::default()).await
}

#[derive(Deserialize)]
struct StatusForm {
    status: String,
}

async fn set_status(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<StatusForm>,
) -> Response {
    let ctx = &signed.ctx;
    let actor = Actor { id: signed.user.id, ip: client.ip() };
    let patch = UserPatch { status: Status::parse(&form.status), ..Default::default() };
    match admin_actions::update_user(&state, &actor, id, &patch).await {
        Ok(_) => Redirect::to(&format!("/admin/users/{id}")).into_response(),
        Err(e) if e.status_code().is_client_error() && !matches!(e, Error::NotFound(_)) => {
            let outcome = UserOutcome { errors: FieldErrors::from_error(ctx, &e), ..Default::default() };
            render_user(&state, ctx, id, outcome).await
        }
        Err(e) => error_page_for(ctx, &e),
    }
}

#[derive(Deserialize)]
struct BalanceForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

async fn adjust_balance(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<BalanceForm>,
) -> Response {
    let ctx = &signed.ctx;
    let actor = Actor { id: signed.user.id, ip: client.ip() };
    let result = async {
        let amount = Money::parse(form.amount.trim())
            .map_err(|_| Error::validation("amount", "must be an amount such as 10.00 or -5.00"))?;
        admin_actions::adjust_balance(&state, &actor, &BalanceAdjustment { user_id: id, amount, reason: &form.reason })
            .await
    }
    .await;
    let outcome = match result {
        Ok(_) => UserOutcome { notice: Some(ctx.t("admin.adjusted")), ..Default::default() },
        Err(e) if e.status_code().is_client_error() && !matches!(e, Error::NotFound(_)) => UserOutcome {
            form_amount: &form.amount,
            form_reason: &form.reason,
            errors: FieldErrors::from_error(ctx, &e),
            ..Default::default()
        },
        Err(e) => return error_page_for(ctx, &e),
    };
    render_user(&state, ctx, id, outcome).await
}

#[derive(Deserialize)]
struct GrantForm {
    package_id: i64,
}

/// Gives a user a package without payment (recorded by `packages::purchase::grant`).
async fn grant_package(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<GrantForm>,
) -> Response {
    let ctx = &signed.ctx;
    let by = crate::domain::packages::purchase::AdminAction { actor_id: signed.user.id, ip: client.ip() };
    let outcome = match crate::domain::packages::purchase::grant(state.env(), &by, id, form.package_id).await {
        Ok(_) => UserOutcome { notice: Some(ctx.t("admin.granted")), ..Default::default() },
        Err(e) if e.status_code().is_client_error() => {
            UserOutcome { errors: FieldErrors::from_error(ctx, &e), ..Default::default() }
        }
        Err(e) => return error_page_for(ctx, &e),
    };
    render_user(&state, ctx, id, outcome).await
}

/// Ends a user's active or queued package now (`packages::purchase::end`: audited; a
/// package already over is refused with a readable page).
async fn end_package(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path((id, user_package_id)): Path<(i64, i64)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let by = crate::domain::packages::purchase::AdminAction { actor_id: signed.user.id, ip: client.ip() };
    let outcome = match crate::domain::packages::purchase::end(state.env(), &by, id, user_package_id).await {
        Ok(_) => UserOutcome { notice: Some(ctx.t("admin.package_ended_notice")), ..Default::default() },
        Err(e @ Error::Conflict { .. }) => {
            UserOutcome { errors: FieldErrors::from_error(ctx, &e), ..Default::default() }
        }
        Err(e) => return error_page_for(ctx, &e),
    };
    render_user(&state, ctx, id, outcome).await
}

/// The caps form as typed (blank = no cap).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapsForm {
    daily_cap: String,
    five_hour_cap: String,
}

fn cap(field: &str, text: &str) -> Result<Option<Money>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Money::parse(text.trim()).map(Some).map_err(|_| Error::validation(field, "must be an amount such as 1.50"))
}

/// Sets (or clears) the user's daily and 5-hour spending caps, both fields at once.
async fn set_caps(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<CapsForm>,
) -> Response {
    let ctx = &signed.ctx;
    let mut errors = FieldErrors::none();
    let daily = errors.take(ctx, cap("daily_cap", &form.daily_cap));
    let five_hour = errors.take(ctx, cap("five_hour_cap", &form.five_hour_cap));
    let result = match (daily, five_hour) {
        (Some(daily), Some(five_hour)) if errors.is_empty() => {
            let actor = Actor { id: signed.user.id, ip: client.ip() };
            let patch = UserPatch { daily_cap: Some(daily), five_hour_cap: Some(five_hour), ..Default::default() };
            admin_actions::update_user(&state, &actor, id, &patch).await.map(|_| ())
        }
        _ => Ok(()),
    };
    let outcome = match result {
        Err(e @ Error::NotFound(_)) => return error_page_for(ctx, &e),
        Err(e) if e.status_code().is_client_error() => {
            UserOutcome { caps: Some(&form), errors: FieldErrors::from_error(ctx, &e), ..Default::default() }
        }
        Err(e) => return error_page_for(ctx, &e),
        Ok(()) if !errors.is_empty() => UserOutcome { caps: Some(&form), errors, ..Default::default() },
        Ok(()) => UserOutcome { notice: Some(ctx.t("admin.caps_saved")), ..Default::default() },
    };
    render_user(&state, ctx, id, outcome).await
}
