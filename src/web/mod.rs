//! Server-rendered pages (askama templates compiled into the binary).
//!
//! For now: the first-run setup page that creates the admin account, and readable
//! error pages. The user and admin pages build on the same session cookie.

use askama::Template;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::sessions::{self, ClientInfo, SESSION_COOKIE, SESSION_LIFETIME_DAYS};
use crate::auth::Role;
use crate::error::Error;
use crate::users;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home)).route("/setup", get(setup_form).post(setup_submit))
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    email: String,
    email_error: Option<String>,
    password_error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    link: &'a str,
    link_text: &'a str,
}

/// Renders a template, or a plain 500 if rendering itself fails.
pub fn render<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A readable page for a domain error.
pub fn error_page(err: &Error) -> Response {
    err.log_if_internal();
    let message = err.public_message();
    render(
        err.status_code(),
        &MessagePage {
            title: "Something went wrong",
            message: &message,
            link: "/",
            link_text: "Back to the start page",
        },
    )
}

/// The HTML 404 for unknown paths.
pub fn not_found_page() -> Response {
    render(
        StatusCode::NOT_FOUND,
        &MessagePage {
            title: "Page not found",
            message: "There is no page at this address.",
            link: "/",
            link_text: "Back to the start page",
        },
    )
}

async fn home(State(state): State<AppState>) -> Response {
    match users::admin_exists(&state.db).await {
        Ok(false) => Redirect::to("/setup").into_response(),
        Ok(true) => render(
            StatusCode::OK,
            &MessagePage {
                title: "codex-gateway",
                message: "The gateway is running. Use the JSON API under /api and the OpenAI-compatible API under /v1.",
                link: "/healthz",
                link_text: "Health check",
            },
        ),
        Err(e) => error_page(&e),
    }
}

async fn setup_form(State(state): State<AppState>) -> Response {
    match users::admin_exists(&state.db).await {
        Ok(true) => Redirect::to("/").into_response(),
        Ok(false) => {
            render(StatusCode::OK, &SetupPage { email: String::new(), email_error: None, password_error: None })
        }
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    email: String,
    password: String,
}

async fn setup_submit(State(state): State<AppState>, Form(form): Form<SetupForm>) -> Response {
    match users::admin_exists(&state.db).await {
        Ok(true) => return Redirect::to("/").into_response(),
        Ok(false) => {}
        Err(e) => return error_page(&e),
    }
    let now = state.now();
    let user = match users::create(&state.db, &form.email, &form.password, Role::Admin, now).await {
        Ok(user) => user,
        Err(Error::Validation { field, message }) => {
            let (email_error, password_error) =
                if field == "email" { (Some(message), None) } else { (None, Some(message)) };
            return render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &SetupPage { email: form.email, email_error, password_error },
            );
        }
        Err(e) => return error_page(&e),
    };
    match sessions::create(&state.db, user.id, &ClientInfo::default(), now).await {
        Ok(session) => {
            let cookie = session_cookie(&session.token, state.config.public_url.starts_with("https://"));
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => error_page(&e),
    }
}

/// The `Set-Cookie` value for a web session (HttpOnly, SameSite=Lax, Secure on HTTPS).
pub fn session_cookie(token: &str, secure: bool) -> String {
    let max_age = SESSION_LIFETIME_DAYS * 24 * 3600;
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}
