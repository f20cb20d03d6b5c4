//! The signed-in user's pages: `/dashboard`, `/keys`, `/account`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::chart::SpendChart;
use super::ctx::{CsrfForm, Ctx, Signed};
use super::view::{self, KeyRow};
use super::{error_page_for, render, FieldErrors};
use crate::app::AppState;
use crate::auth::api_keys::{self, NewKey};
use crate::billing::{self, usage::PackageToday};
use crate::error::Error;
use crate::money::Money;
use crate::users;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/redeem", post(redeem_code))
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage<'a> {
    ctx: &'a Ctx,
    balance: String,
    spent_today: String,
    spent_package: String,
    spent_balance: String,
    active_keys: usize,
    next_reset: String,
    package: Option<PackageStatus>,
    chart: SpendChart,
    /// Current announcements: title and sanitised HTML from their markdown.
    announcements: Vec<(String, String)>,
    /// Every package in force with its windows, and the billing preference switch.
    plans: Vec<super::plan_pages::PlanRow>,
    preferences: Vec<super::plan_pages::PreferenceChoice>,
}

/// The package in force, as the dashboard shows it.
struct PackageStatus {
    name: String,
    limit: String,
    used: String,
    remaining: String,
    percent: i64,
    /// Progress bar colour: "", "warn" (80 %+) or "bad" (used up).
    level: &'static str,
    ends: String,
}

impl PackageStatus {
    fn new(p: &PackageToday, calendar: &crate::clock::BusinessCalendar) -> Self {
        // No daily window: the bar stays empty (the plan card shows the other windows).
        let percent = match p.daily_limit.map(Money::micros) {
            Some(limit) if limit > 0 => (p.used_today.micros().saturating_mul(100) / limit).clamp(0, 100),
            Some(_) => 100,
            None => 0,
        };
        let dash = || "—".to_string();
        let ends = chrono::DateTime::parse_from_rfc3339(&p.ends_at)
            .map(|t| view::time(calendar, t.timestamp_micros()))
            .unwrap_or_else(|_| p.ends_at.clone());
        PackageStatus {
            name: p.name.clone(),
            limit: p.daily_limit.map_or_else(dash, Money::format_2dp),
            used: p.used_today.format_2dp(),
            remaining: p.remaining_today.map_or_else(dash, Money::format_2dp),
            percent,
            level: if percent >= 100 {
                "bad"
            } else if percent >= 80 {
                "warn"
            } else {
                ""
            },
            ends,
        }
    }
}

/// Days of spend the dashboard chart shows.
const CHART_DAYS: u32 = 30;

async fn dashboard(State(state): State<AppState>, signed: Signed) -> Response {
    let ctx = &signed.ctx;
    let loaded = async {
        let keys = api_keys::list_for_user(&state.db, signed.user.id).await?;
        let usage = billing::usage::daily_usage(&state, signed.user.id, Some(CHART_DAYS)).await?;
        let news = crate::announcements::current(&state.db, state.now()).await?;
        Ok::<_, Error>((keys, usage, news))
    }
    .await;
    let (keys, usage, news) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let calendar = state.calendar();
    let page = DashboardPage {
        ctx,
        balance: usage.balance.format_2dp(),
        spent_today: usage.spent_today.total.format_2dp(),
        spent_package: usage.spent_today.package.format_2dp(),
        spent_balance: usage.spent_today.balance.format_2dp(),
        active_keys: keys.iter().filter(|k| k.status == "active").count(),
        next_reset: view::time(calendar, crate::clock::to_micros(calendar.next_reset(state.now()))),
        package: usage.package.as_ref().map(|p| PackageStatus::new(p, calendar)),
        chart: SpendChart::new(usage.history.as_deref().unwrap_or(&[])),
        announcements: news.iter().map(|a| (a.title.clone(), crate::markdown::render_markdown(&a.body))).collect(),
        plans: super::plan_pages::plan_rows(ctx, calendar, &usage.packages_in_force),
        preferences: super::plan_pages::preference_choices(ctx, usage.billing_preference),
    };
    render(ctx, StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage<'a> {
    ctx: &'a Ctx,
    keys: Vec<KeyRow>,
    new_secret: Option<String>,
    key_for_snippet: String,
    base_url: String,
    form_name: &'a str,
    form_limit: &'a str,
    errors: FieldErrors,
}

/// What the key page shows besides the list: a fresh secret, or the form's errors.
struct KeysOutcome<'a> {
    new_secret: Option<String>,
    form_name: &'a str,
    form_limit: &'a str,
    errors: FieldErrors,
}

async fn render_keys(state: &AppState, signed: &Signed, outcome: KeysOutcome<'_>) -> Response {
    let ctx = &signed.ctx;
    let keys = match api_keys::list_for_user(&state.db, signed.user.id).await {
        Ok(keys) => keys,
        Err(e) => return error_page_for(ctx, &e),
    };
    let status = if outcome.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = KeysPage {
        ctx,
        keys: keys.iter().map(|k| KeyRow::new(k, state.calendar())).collect(),
        key_for_snippet: outcome.new_secret.clone().unwrap_or_else(|| "sk-...".into()),
        new_secret: outcome.new_secret,
        base_url: format!("{}/v1", state.config.public_url.trim_end_matches('/')),
        form_name: outcome.form_name,
        form_limit: outcome.form_limit,
        errors: outcome.errors,
    };
    render(ctx, status, &page)
}

async fn keys_page(State(state): State<AppState>, signed: Signed) -> Response {
    let outcome = KeysOutcome { new_secret: None, form_name: "", form_limit: "", errors: FieldErrors::none() };
    render_keys(&state, &signed, outcome).await
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    spend_limit: String,
}

/// An optional amount typed into a form: blank = none.
pub fn optional_money(field: &str, text: &str) -> Result<Option<Money>, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Money::parse(text).map(Some).map_err(|_| Error::validation(field, "must be an amount such as 10.00"))
}

async fn create_key(State(state): State<AppState>, signed: Signed, CsrfForm(form): CsrfForm<KeyForm>) -> Response {
    let name = if form.name.trim().is_empty() { "default" } else { form.name.as_str() };
    let created = async {
        let settings = state.settings.get().await?;
        let new = NewKey {
            name: name.to_string(),
            spend_limit: optional_money("spend_limit", &form.spend_limit)?,
            expires_at: None,
        };
        api_keys::create(&state.db, signed.user.id, &new, settings.max_keys_per_user, state.now()).await
    }
    .await;
    let outcome = match created {
        Ok((_, secret)) => {
            KeysOutcome { new_secret: Some(secret), form_name: "", form_limit: "", errors: FieldErrors::none() }
        }
        Err(e) if e.status_code().is_client_error() => KeysOutcome {
            new_secret: None,
            form_name: &form.name,
            form_limit: &form.spend_limit,
            errors: FieldErrors::from_error(&signed.ctx, &e),
        },
        Err(e) => return error_page_for(&signed.ctx, &e),
    };
    render_keys(&state, &signed, outcome).await
}

#[derive(Template)]
#[template(path = "key_row.html")]
struct KeyRowPartial<'a> {
    ctx: &'a Ctx,
    key: KeyRow,
}

#[derive(Deserialize)]
struct Empty {}

/// Revokes a key; htmx gets the updated row, a plain form post a redirect.
async fn revoke_key(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<i64>,
    headers: HeaderMap,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    if let Err(e) = api_keys::revoke(&state.db, signed.user.id, id, state.now()).await {
        return error_page_for(ctx, &e);
    }
    crate::billing::user_changed(&state, signed.user.id).await;
    if headers.contains_key("hx-request") {
        let keys = match api_keys::list_for_user(&state.db, signed.user.id).await {
            Ok(keys) => keys,
            Err(e) => return error_page_for(ctx, &e),
        };
        if let Some(key) = keys.iter().find(|k| k.id == id) {
            return render(ctx, StatusCode::OK, &KeyRowPartial { ctx, key: KeyRow::new(key, state.calendar()) });
        }
    }
    Redirect::to("/keys").into_response()
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    ctx: &'a Ctx,
    email: &'a str,
    role: &'a str,
    balance: String,
    created: String,
    changed: bool,
    redeemed: bool,
    topup: Option<TopupInfo>,
    topup_amount: &'a str,
    errors: FieldErrors,
}

/// The top-up form's bounds, when top-ups are on.
struct TopupInfo {
    min: String,
    max: String,
    rate: String,
}

/// What the account page shows besides the profile.
#[derive(Default)]
struct AccountOutcome<'a> {
    changed: bool,
    redeemed: bool,
    topup_amount: &'a str,
    errors: FieldErrors,
}

async fn render_account(state: &AppState, signed: &Signed, outcome: AccountOutcome<'_>) -> Response {
    let ctx = &signed.ctx;
    let settings = match state.settings.get().await {
        Ok(s) => s,
        Err(e) => return error_page_for(ctx, &e),
    };
    let credit = &settings.credit;
    let topup = (credit.is_usable() && credit.topup_enabled).then(|| TopupInfo {
        min: credit.topup_min.format_2dp(),
        max: credit.topup_max.format_2dp(),
        rate: credit.topup_rate.to_string(),
    });
    let status = if outcome.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let role = if signed.user.is_admin() { ctx.t("role.admin") } else { ctx.t("role.user") };
    let page = AccountPage {
        ctx,
        email: &signed.user.email,
        role,
        balance: view::money(signed.user.balance),
        created: view::time(state.calendar(), signed.user.created_at),
        changed: outcome.changed,
        redeemed: outcome.redeemed,
        topup,
        topup_amount: outcome.topup_amount,
        errors: outcome.errors,
    };
    render(ctx, status, &page)
}

/// The account page with a rejected top-up form.
pub async fn account_with_errors(state: &AppState, signed: &Signed, amount: &str, errors: FieldErrors) -> Response {
    render_account(state, signed, AccountOutcome { topup_amount: amount, errors, ..Default::default() }).await
}

async fn account(State(state): State<AppState>, signed: Signed) -> Response {
    render_account(&state, &signed, AccountOutcome::default()).await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    signed: Signed,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Response {
    let result = async {
        if form.new_password != form.confirm_password {
            return Err(Error::validation("confirm_password", "does not match the new password"));
        }
        let change = users::PasswordChange {
            old_password: &form.old_password,
            new_password: &form.new_password,
            keep_session_id: signed.session_id,
        };
        users::change_own_password(&state.db, &signed.user, &change, state.now()).await
    }
    .await;
    match result {
        Ok(()) => render_account(&state, &signed, AccountOutcome { changed: true, ..Default::default() }).await,
        Err(e) if e.status_code().is_client_error() => {
            let outcome = AccountOutcome { errors: FieldErrors::from_error(&signed.ctx, &e), ..Default::default() };
            render_account(&state, &signed, outcome).await
        }
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}

#[derive(Deserialize)]
struct RedeemForm {
    #[serde(default)]
    code: String,
}

/// Redeems a code for balance or a package (`redemption::redeem`, as the API does).
async fn redeem_code(State(state): State<AppState>, signed: Signed, CsrfForm(form): CsrfForm<RedeemForm>) -> Response {
    let outcome = match crate::redemption::redeem(&state.db, signed.user.id, &form.code, state.now()).await {
        Ok(_) => AccountOutcome { redeemed: true, ..Default::default() },
        Err(Error::NotFound(_)) => AccountOutcome {
            errors: FieldErrors::one("code", signed.ctx.t("account.code_unknown")),
            ..Default::default()
        },
        Err(e) if e.status_code().is_client_error() => {
            let message = super::i18n::error_text(signed.ctx.lang, &e);
            AccountOutcome { errors: FieldErrors::one("code", message), ..Default::default() }
        }
        Err(e) => return error_page_for(&signed.ctx, &e),
    };
    // Re-read the user so the new balance shows at once.
    match users::find_by_id(&state.db, signed.user.id).await {
        Ok(Some(user)) => render_account(&state, &Signed { user, ctx: signed.ctx.clone(), ..signed }, outcome).await,
        Ok(None) => error_page_for(&signed.ctx, &Error::NotFound("user")),
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}
