//! Admin pages: `/admin` overview (with the period's top spenders and models),
//! `/admin/users` (search; one user's page is [`super::admin_user`]) and
//! `/admin/settings` (general and the Credit merchant section).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::settings_form::SettingsForm;
use super::view::{self, Pager};
use super::{error_page_for, render, FieldErrors};
use crate::domain::auth::{Role, Status};
use crate::domain::users::{self, User, UserFilter};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;
use crate::surface::api::admin_actions::{self, Actor};
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/users", get(users_page))
        .route("/admin/settings", get(settings_page).post(save_settings))
        .route("/admin/settings/check", post(check_credit))
}

/// A user as the admin tables show them.
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
    pub active: bool,
    pub balance: String,
    pub created: String,
}

impl UserRow {
    pub(super) fn new(user: &User, state: &AppState) -> Self {
        UserRow {
            id: user.id,
            email: user.email.clone(),
            is_admin: user.is_admin(),
            active: user.is_active(),
            balance: view::money(user.balance),
            created: view::time(state.calendar(), user.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage<'a> {
    ctx: &'a Ctx,
    users_total: i64,
    users_suspended: i64,
    admins: i64,
    registration_enabled: bool,
    credit_usable: bool,
    markup: String,
    newest: Vec<UserRow>,
    revenue_today: String,
    spend_today: String,
    requests_today: i64,
    chart: super::chart::SpendChart,
    /// The period of the top tables, in business days (1, 7 or 30).
    period_days: u32,
    top_spenders: Vec<TopLine>,
    top_models: Vec<TopLine>,
}

/// A line of a top table as shown: exact amounts (micro-dollars), not rounded.
struct TopLine {
    id: i64,
    name: String,
    spent: String,
    requests: i64,
}

impl TopLine {
    fn new(row: &super::stats::TopRow) -> Self {
        TopLine { id: row.id, name: row.name.clone(), spent: view::money(row.spent.micros()), requests: row.requests }
    }
}

/// `?days=` of the overview: the period of its top tables.
#[derive(Deserialize)]
struct OverviewQuery {
    /// Text, so a hand-typed `?days=abc` falls back to the default instead of a 400.
    days: Option<String>,
}

/// How many lines each top table shows.
const TOP_LINES: i64 = 10;

async fn count_users(state: &AppState, filter: UserFilter) -> Result<i64> {
    Ok(users::list(&state.db, &filter, 1, 0).await?.1)
}

async fn overview(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let ctx = &signed.ctx;
    let period_days =
        query.days.and_then(|d| d.trim().parse::<u32>().ok()).filter(|d| [1, 7, 30].contains(d)).unwrap_or(7);
    let loaded = async {
        let total = count_users(&state, UserFilter::default()).await?;
        let suspended =
            count_users(&state, UserFilter { status: Some(Status::Suspended), ..Default::default() }).await?;
        let admins = count_users(&state, UserFilter { role: Some(Role::Admin), ..Default::default() }).await?;
        let newest = users::list(&state.db, &UserFilter::default(), 5, 0).await?.0;
        let settings = state.settings.get().await?;
        let today = state.calendar().business_date(state.now());
        let history = super::stats::spend_history(&state.db, today, 30).await?;
        let revenue = super::stats::revenue_on(&state.db, state.calendar(), today).await?;
        let range = super::stats::period(state.calendar(), today, period_days);
        let spenders = super::stats::top_spenders(&state.db, range, TOP_LINES).await?;
        let models = super::stats::top_models(&state.db, range, TOP_LINES).await?;
        Ok::<_, Error>((total, suspended, admins, newest, (settings, history, revenue, (spenders, models))))
    }
    .await;
    let (users_total, users_suspended, admins, newest, (settings, history, revenue, (spenders, models))) = match loaded
    {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let page = OverviewPage {
        ctx,
        users_total,
        users_suspended,
        admins,
        registration_enabled: settings.registration_enabled,
        credit_usable: settings.credit.is_usable(),
        markup: settings.markup.to_string(),
        newest: newest.iter().map(|u| UserRow::new(u, &state)).collect(),
        revenue_today: revenue.format_2dp(),
        spend_today: history.last().map(|d| d.total).unwrap_or_default().format_2dp(),
        requests_today: history.last().map(|d| d.requests).unwrap_or(0),
        chart: super::chart::SpendChart::new(&history),
        period_days,
        top_spenders: spenders.iter().map(TopLine::new).collect(),
        top_models: models.iter().map(TopLine::new).collect(),
    };
    render(ctx, StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage<'a> {
    ctx: &'a Ctx,
    q: &'a str,
    status: &'a str,
    users: Vec<UserRow>,
    pager: Pager,
}

#[derive(Deserialize)]
struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    page: Option<i64>,
}

const USERS_PER_PAGE: i64 = 25;

async fn users_page(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<UsersQuery>,
) -> Response {
    let ctx = &signed.ctx;
    let page = view::page_number(query.page);
    let filter = UserFilter {
        query: Some(query.q.clone()).filter(|q| !q.trim().is_empty()),
        role: None,
        status: Status::parse(&query.status),
    };
    let (rows, total) =
        match users::list(&state.db, &filter, USERS_PER_PAGE, view::page_offset(page, USERS_PER_PAGE)).await {
            Ok(found) => found,
            Err(e) => return error_page_for(ctx, &e),
        };
    let base =
        serde_urlencoded::to_string([("q", query.q.as_str()), ("status", query.status.as_str())]).unwrap_or_default();
    let pager = Pager::new(ctx, &format!("/admin/users?{base}"), page, USERS_PER_PAGE, total);
    let users = rows.iter().map(|u| UserRow::new(u, &state)).collect();
    render(ctx, StatusCode::OK, &UsersPage { ctx, q: &query.q, status: &query.status, users, pager })
}

#[derive(Template)]
#[template(path = "admin_settings.html")]
struct SettingsPage<'a> {
    ctx: &'a Ctx,
    form: SettingsForm,
    saved: bool,
    key_set: bool,
    credit_usable: bool,
    default_notify_url: String,
    default_return_url: String,
    /// With the payment sandbox on: its gateway address, offered for the gateway URL field.
    sandbox_gateway_url: Option<String>,
    /// The result of "check configuration": reached the gateway?, and what it said.
    check: Option<(bool, String)>,
    errors: FieldErrors,
    /// LINUX DO sign-in: secret stored?, usable?, and the callback URL to register.
    oauth: (bool, bool, String),
}

/// What the settings page shows besides the stored settings.
#[derive(Default)]
struct SettingsOutcome {
    form: Option<SettingsForm>,
    saved: bool,
    check: Option<(bool, String)>,
    errors: FieldErrors,
}

async fn render_settings(state: &AppState, ctx: &Ctx, outcome: SettingsOutcome) -> Response {
    let SettingsOutcome { form, saved, check, errors } = outcome;
    let settings = match state.settings.get().await {
        Ok(s) => s,
        Err(e) => return error_page_for(ctx, &e),
    };
    let public_url = state.config.public_url.trim_end_matches('/');
    let blank = crate::domain::settings::CreditSettings {
        notify_url: String::new(),
        return_url: String::new(),
        ..Default::default()
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = SettingsPage {
        ctx,
        saved,
        form: form.unwrap_or_else(|| SettingsForm::from_settings(&settings)),
        key_set: !settings.credit.key.is_empty(),
        credit_usable: settings.credit.is_usable(),
        default_notify_url: blank.notify_url_or_default(public_url),
        default_return_url: blank.return_url_or_default(public_url),
        sandbox_gateway_url: state
            .config
            .pay_sandbox
            .then(|| format!("{public_url}{}", crate::surface::web::pay_sandbox::BASE)),
        check,
        errors,
        oauth: (
            !settings.oauth.client_secret.is_empty(),
            settings.oauth.is_usable(),
            crate::domain::oauth::redirect_uri(public_url),
        ),
    };
    render(ctx, status, &page)
}

async fn settings_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    render_settings(&state, &signed.ctx, SettingsOutcome::default()).await
}

async fn save_settings(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<SettingsForm>,
) -> Response {
    let ctx = &signed.ctx;
    let actor = Actor { id: signed.user.id, ip: client.ip() };
    // Every problem of the form at once: the fields that are not numbers, else every rule
    // the merged settings break; the write below checks again (the first problem).
    let problems = match (form.to_patch_checked(), state.settings.get().await) {
        (Err(wrong), _) => wrong,
        (Ok(patch), Ok(current)) => match crate::surface::api::settings::merged(&current, patch) {
            Ok(next) => crate::surface::api::settings::problems(&next),
            Err(e) => vec![e],
        },
        (Ok(_), Err(e)) => return error_page_for(ctx, &e),
    };
    if !problems.is_empty() {
        let errors = FieldErrors::from_errors(ctx, &problems);
        return render_settings(&state, ctx, SettingsOutcome { form: Some(form), errors, ..Default::default() }).await;
    }
    let result = async { admin_actions::update_settings(&state, &actor, form.to_patch()?).await }.await;
    match result {
        Ok(_) => render_settings(&state, &signed.ctx, SettingsOutcome { saved: true, ..Default::default() }).await,
        Err(e) if e.status_code().is_client_error() => {
            let errors = FieldErrors::from_error(&signed.ctx, &e);
            render_settings(&state, &signed.ctx, SettingsOutcome { form: Some(form), errors, ..Default::default() })
                .await
        }
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}

#[derive(Deserialize)]
struct Empty {}

/// "Check configuration": a signed order query for a made-up order number; any JSON
/// answer proves the URL is right, and the gateway's message tells whether pid/key are.
async fn check_credit(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let settings = match state.settings.get().await {
        Ok(s) => s,
        Err(e) => return error_page_for(ctx, &e),
    };
    let check =
        match crate::domain::payment::client::query_order(&state.http, &settings.credit, "cg-config-check").await {
            Ok(answer) => (true, answer.message),
            Err(e) => (false, e.public_message()),
        };
    render_settings(&state, ctx, SettingsOutcome { check: Some(check), ..Default::default() }).await
}
