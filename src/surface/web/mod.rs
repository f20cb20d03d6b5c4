//! Server-rendered pages: askama templates compiled into the binary (auto-escaping,
//! never `format!`-built HTML), vendored htmx for partial updates, two languages.
//!
//! Handlers stay thin: they call the same domain functions as the JSON API and only
//! translate between forms, templates and [`crate::foundation::error::Error`].

pub mod admin_metrics;
pub mod admin_pages;
pub mod admin_proxy;
pub mod admin_shop;
pub mod admin_upstreams;
pub mod admin_user;
pub mod admin_write;
pub mod assets;
pub mod auth_pages;
pub mod chart;
pub mod ctx;
pub mod dashboard;
pub mod i18n;
pub mod ledger_page;
pub mod ops_figures;
pub mod order_check;
pub mod order_outcome;
pub mod pay_page;
pub mod pay_sandbox;
pub mod plan_pages;
pub mod settings_form;
pub mod shop_pages;
pub mod stats;
pub mod usage_export;
pub mod usage_pages;
pub mod user_pages;
pub mod view;

pub mod admin_announcements;
pub mod admin_audit;
pub mod admin_codes;
pub mod admin_coupons;
pub mod coupon_form;

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::domain::auth::sessions::{SESSION_COOKIE, SESSION_LIFETIME_DAYS};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;
pub use ctx::Ctx;
use i18n::Lang;

/// Every page route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .merge(auth_pages::router())
        .merge(user_pages::router())
        .merge(plan_pages::router())
        .merge(admin_pages::router())
        .merge(usage_pages::router())
        .merge(ledger_page::router())
        .merge(shop_pages::router())
        .merge(admin_shop::router())
        .merge(admin_proxy::router())
        .merge(admin_upstreams::router())
        .merge(admin_user::router())
        .merge(admin_coupons::router())
        .merge(admin_codes::router())
        .merge(admin_announcements::router())
        .merge(admin_audit::router())
        .merge(admin_metrics::router())
        .layer(axum::middleware::from_fn(readable_rejections))
}

/// Turns axum's plain-text extractor rejections (a path segment that is not a number, a
/// query string that does not parse: 400 "unreadable link"; a body of the wrong type: the
/// unreadable-form page) into a readable page in the visitor's language. The rejection text
/// is not shown: a page never answers raw text.
async fn readable_rejections(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let lang = ctx::lang_from_headers(req.headers());
    let answer = next.run(req).await;
    let status = answer.status();
    let plain_text = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    if !status.is_client_error() || !plain_text {
        return answer;
    }
    match status {
        StatusCode::NOT_FOUND => message_page(lang, status, "error.not_found_title", "error.not_found"),
        StatusCode::BAD_REQUEST => message_page(lang, status, "error.bad_query_title", "error.bad_query"),
        _ => message_page(lang, status, "error.bad_form_title", "error.bad_form"),
    }
}

/// Field errors of a submitted form, shown next to their fields; the empty field
/// name holds an error about the whole form.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn none() -> Self {
        FieldErrors::default()
    }

    /// One error about one field (`""` = the whole form).
    pub fn one(field: &str, message: impl Into<String>) -> Self {
        FieldErrors(vec![(field.to_string(), message.into())])
    }

    /// The errors a domain error carries, in the page's language.
    pub fn from_error(ctx: &Ctx, err: &Error) -> Self {
        match err {
            Error::Validation { field, message } => FieldErrors::one(field, ctx.msg(message)),
            other => FieldErrors::one("", i18n::error_text(ctx.lang, other)),
        }
    }

    /// Every error of a list, each on its field (the first one per field is kept), so a
    /// form shows all that is wrong with it at once.
    pub fn from_errors(ctx: &Ctx, errors: &[Error]) -> Self {
        let mut all = FieldErrors::none();
        errors.iter().for_each(|e| all.add(ctx, e));
        all
    }

    /// Adds a domain error unless its field already has one.
    pub fn add(&mut self, ctx: &Ctx, err: &Error) {
        for (field, message) in FieldErrors::from_error(ctx, err).0 {
            if !self.has(&field) {
                self.0.push((field, message));
            }
        }
    }

    /// The value of a parsed field, or `None` with its error added.
    pub fn take<T>(&mut self, ctx: &Ctx, parsed: crate::foundation::error::Result<T>) -> Option<T> {
        parsed.map_err(|e| self.add(ctx, &e)).ok()
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| f == field).map(|(_, m)| m.as_str())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// The error about the whole form, if any.
    pub fn general(&self) -> Option<&str> {
        self.get("")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Renders a page with the context's pending cookies; a plain 500 if rendering fails.
pub fn render<T: Template>(ctx: &Ctx, status: StatusCode, template: &T) -> Response {
    let response = match template.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    };
    ctx::with_cookies(ctx, response)
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    ctx: &'a Ctx,
    status: u16,
    title: &'a str,
    message: &'a str,
    link: &'a str,
    link_text: &'a str,
}

/// A readable page saying what happened, with a way back.
pub fn message_with(ctx: &Ctx, status: StatusCode, title: &str, message: &str) -> Response {
    let (link, link_text) =
        if ctx.email.is_some() { ("/dashboard", ctx.t("error.back")) } else { ("/login", ctx.t("nav.login")) };
    render(ctx, status, &MessagePage { ctx, status: status.as_u16(), title, message, link, link_text })
}

/// A message page from dictionary keys, for requests that never got a full context.
pub fn message_page(lang: Lang, status: StatusCode, title_key: &str, message_key: &str) -> Response {
    let ctx = Ctx::bare(lang);
    message_with(&ctx, status, ctx.t(title_key), ctx.t(message_key))
}

/// The page for a domain error a handler cannot show inside its form.
pub fn error_page_for(ctx: &Ctx, err: &Error) -> Response {
    err.log_if_internal();
    let title = match err.status_code() {
        StatusCode::NOT_FOUND => ctx.t("error.not_found_title"),
        StatusCode::FORBIDDEN => ctx.t("error.forbidden_title"),
        s if s.is_server_error() => ctx.t("error.server_title"),
        _ => ctx.t("error.generic_title"),
    };
    message_with(ctx, err.status_code(), title, &i18n::error_text(ctx.lang, err))
}

/// [`error_page_for`] without a request context.
pub fn error_page_in(lang: Lang, err: &Error) -> Response {
    error_page_for(&Ctx::bare(lang), err)
}

/// [`error_page_in`] English, for pages outside the signed-in site (the payment sandbox).
pub fn error_page(err: &Error) -> Response {
    error_page_in(Lang::En, err)
}

/// Renders a standalone template that does not use the site layout (the sandbox cashier).
pub fn render_plain<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The HTML 404 for unknown paths, in the language the request asks for.
pub fn not_found_for(headers: &axum::http::HeaderMap) -> Response {
    message_page(ctx::lang_from_headers(headers), StatusCode::NOT_FOUND, "error.not_found_title", "error.not_found")
}

/// The HTML page for a domain error, in the language the request asks for.
pub fn error_page_for_headers(headers: &axum::http::HeaderMap, err: &Error) -> Response {
    error_page_in(ctx::lang_from_headers(headers), err)
}

/// The HTML 404 when the request is not at hand.
pub fn not_found_page() -> Response {
    message_page(Lang::En, StatusCode::NOT_FOUND, "error.not_found_title", "error.not_found")
}

/// The `Set-Cookie` value for a web session (HttpOnly, SameSite=Lax, Secure on HTTPS).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let max_age = SESSION_LIFETIME_DAYS * 24 * 3600;
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}
