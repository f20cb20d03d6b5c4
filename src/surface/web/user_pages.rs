//! The signed-in user's pages: `/keys`, `/account` (`/dashboard` is in [`super::dashboard`]).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::ctx::{CsrfForm, Ctx, Signed};
use super::view::{self, KeyRow};
use super::{error_page_for, render, FieldErrors};
use crate::domain::auth::api_keys::{self, NewKey};
use crate::domain::users;
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(super::dashboard::dashboard))
        .route("/keys", get(keys_page).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/redeem", post(redeem_code))
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
    crate::domain::billing::user_changed(state.env(), signed.user.id).await;
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
    let outcome = match crate::domain::redemption::redeem(&state.db, signed.user.id, &form.code, state.now()).await {
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
