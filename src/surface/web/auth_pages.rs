//! Signing in and out: `/`, `/login`, `/register`, `/logout`, the first-run `/setup`
//! and the language switch.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::ctx::{safe_next, with_cookies, CsrfForm, Ctx, Guest, GuestForm, Signed, LANG_COOKIE};
use super::i18n::Lang;
use super::{error_page_for, render, session_cookie, FieldErrors};
use crate::domain::auth::sessions;
use crate::domain::auth::users::{self, User};
use crate::domain::auth::Role;
use crate::foundation::error::Error;
use crate::runtime::state::AppState;
use crate::surface::api::accounts::{check_credentials, client_info};
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/setup", get(setup_form).post(setup_submit))
        .route("/login", get(login_form).post(login_submit))
        .route("/register", get(register_form).post(register_submit))
        .route("/logout", post(logout))
        .route("/lang/{code}", get(switch_language))
}

async fn home(State(state): State<AppState>, guest: Guest) -> Response {
    match users::admin_exists(&state.db).await {
        Ok(false) => Redirect::to("/setup").into_response(),
        Ok(true) if guest.user.is_some() => Redirect::to("/dashboard").into_response(),
        Ok(true) => Redirect::to("/login").into_response(),
        Err(e) => error_page_for(&guest.ctx, &e),
    }
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    ctx: &'a Ctx,
    email: &'a str,
    errors: FieldErrors,
}

async fn setup_form(State(state): State<AppState>, guest: Guest) -> Response {
    match users::admin_exists(&state.db).await {
        Ok(true) => Redirect::to("/").into_response(),
        Ok(false) => {
            render(&guest.ctx, StatusCode::OK, &SetupPage { ctx: &guest.ctx, email: "", errors: FieldErrors::none() })
        }
        Err(e) => error_page_for(&guest.ctx, &e),
    }
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// One sign-in attempt of a credentials form (setup, login, register): its outcome, and
/// where a signed-in user goes next.
struct Attempt<'a> {
    ctx: &'a Ctx,
    client: sessions::ClientInfo,
    next: &'a str,
    outcome: Result<User, Error>,
}

impl Attempt<'_> {
    /// The one answer of every credentials form: signed in and on to `next`; the form again
    /// (through `again`, with the errors and the refusal's status) when the input was refused;
    /// an error page for the rest.
    async fn answer(self, state: &AppState, again: impl AsyncFnOnce(FieldErrors, StatusCode) -> Response) -> Response {
        let ctx = self.ctx;
        match self.outcome {
            Ok(user) => sign_in(state, ctx, &user, self.client, self.next).await,
            Err(e) if e.status_code().is_client_error() => {
                again(FieldErrors::from_error(ctx, &e), e.status_code()).await
            }
            Err(e) => error_page_for(ctx, &e),
        }
    }
}

/// Creates a session for `user` and redirects to `next` with the cookie set.
async fn sign_in(state: &AppState, ctx: &Ctx, user: &User, client: sessions::ClientInfo, next: &str) -> Response {
    match sessions::create(&state.db, user.id, &client, state.now()).await {
        Ok(session) => {
            let cookie = session_cookie(&session.token, state.config.public_url.starts_with("https://"));
            ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
        }
        Err(e) => error_page_for(ctx, &e),
    }
}

async fn setup_submit(
    State(state): State<AppState>,
    guest: Guest,
    addr: ClientAddr,
    headers: HeaderMap,
    GuestForm(form): GuestForm<Credentials>,
) -> Response {
    let ctx = &guest.ctx;
    match users::admin_exists(&state.db).await {
        Ok(true) => return Redirect::to("/").into_response(),
        Ok(false) => {}
        Err(e) => return error_page_for(ctx, &e),
    }
    let outcome = users::create(&state.db, &form.email, &form.password, Role::Admin, state.now()).await;
    let attempt = Attempt { ctx, client: client_info(&headers, addr.0), next: "/admin/settings", outcome };
    attempt
        .answer(&state, async |errors, _| {
            render(ctx, StatusCode::UNPROCESSABLE_ENTITY, &SetupPage { ctx, email: &form.email, errors })
        })
        .await
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    ctx: &'a Ctx,
    email: &'a str,
    next: &'a str,
    registered: bool,
    registration_open: bool,
    /// "Sign in with LINUX DO" is offered.
    oauth: bool,
    errors: FieldErrors,
}

async fn oauth_usable(state: &AppState) -> bool {
    state.settings.get().await.map(|s| s.oauth.is_usable()).unwrap_or(false)
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    registered: Option<String>,
}

/// Password registration is open: switched on, and the site is not "LINUX DO only"
/// (the same rule as `POST /api/auth/register`).
async fn registration_open(state: &AppState) -> bool {
    state.settings.get().await.map(|s| s.registration_enabled && !s.oauth.linuxdo_only).unwrap_or(false)
}

async fn login_form(State(state): State<AppState>, guest: Guest, Query(query): Query<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if guest.user.is_some() {
        return Redirect::to(&next).into_response();
    }
    let page = LoginPage::new(&state, &guest.ctx, (&next, ""), FieldErrors::none()).await;
    render(&guest.ctx, StatusCode::OK, &LoginPage { registered: query.registered.is_some(), ..page })
}

impl<'a> LoginPage<'a> {
    /// The login form for `(next, email)`, offering what the site's settings allow.
    async fn new(state: &AppState, ctx: &'a Ctx, (next, email): (&'a str, &'a str), errors: FieldErrors) -> Self {
        let registration_open = registration_open(state).await;
        LoginPage { ctx, email, next, registered: false, registration_open, oauth: oauth_usable(state).await, errors }
    }
}

async fn login_submit(
    State(state): State<AppState>,
    guest: Guest,
    addr: ClientAddr,
    headers: HeaderMap,
    GuestForm(form): GuestForm<Credentials>,
) -> Response {
    let ctx = &guest.ctx;
    let next = safe_next(form.next.as_deref());
    let checked = match state.login_throttle.check(addr.ip().as_deref(), &form.email).await {
        Ok(()) => check_credentials(&state, &form.email, &form.password).await,
        Err(e) => Err(e),
    };
    let attempt = Attempt { ctx, client: client_info(&headers, addr.0), next: &next, outcome: checked };
    attempt
        .answer(&state, async |errors, status| {
            render(ctx, status, &LoginPage::new(&state, ctx, (&next, &form.email), errors).await)
        })
        .await
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage<'a> {
    ctx: &'a Ctx,
    open: bool,
    /// "Sign in with LINUX DO" is offered (it creates the account on first sign-in).
    oauth: bool,
    email: &'a str,
    errors: FieldErrors,
}

async fn register_form(State(state): State<AppState>, guest: Guest) -> Response {
    if guest.user.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    let open = registration_open(&state).await;
    let oauth = oauth_usable(&state).await;
    let page = RegisterPage { ctx: &guest.ctx, open, oauth, email: "", errors: FieldErrors::none() };
    render(&guest.ctx, if open { StatusCode::OK } else { StatusCode::FORBIDDEN }, &page)
}

async fn register_submit(
    State(state): State<AppState>,
    guest: Guest,
    addr: ClientAddr,
    headers: HeaderMap,
    GuestForm(form): GuestForm<Credentials>,
) -> Response {
    let ctx = &guest.ctx;
    if !registration_open(&state).await {
        let oauth = oauth_usable(&state).await;
        let page = RegisterPage { ctx, open: false, oauth, email: "", errors: FieldErrors::none() };
        return render(ctx, StatusCode::FORBIDDEN, &page);
    }
    let outcome = users::create(&state.db, &form.email, &form.password, Role::User, state.now()).await;
    let attempt = Attempt { ctx, client: client_info(&headers, addr.0), next: "/dashboard", outcome };
    attempt
        .answer(&state, async |errors, status| {
            let oauth = oauth_usable(&state).await;
            render(ctx, status, &RegisterPage { ctx, open: true, oauth, email: &form.email, errors })
        })
        .await
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(State(state): State<AppState>, signed: Signed, CsrfForm(_): CsrfForm<Empty>) -> Response {
    if let Err(e) = sessions::revoke(&state.db, signed.session_id, state.now()).await {
        return error_page_for(&signed.ctx, &e);
    }
    ([(header::SET_COOKIE, super::clear_session_cookie())], Redirect::to("/login")).into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /lang/{en|zh}?next=/path`: remembers the language for a year and goes back.
async fn switch_language(Path(code): Path<String>, Query(query): Query<NextQuery>) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::En);
    let next = safe_next(query.next.as_deref());
    let cookie = format!("{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000", lang.code());
    let mut ctx = Ctx::bare(lang);
    ctx.set_cookies.push(cookie);
    with_cookies(&ctx, Redirect::to(&next).into_response())
}
