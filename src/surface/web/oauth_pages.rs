//! `GET /api/auth/oauth/linuxdo` (→ 302 to LINUX DO) and its callback, which signs in,
//! links or registers and returns the browser to the site. These are browser
//! navigations, so failures answer with a readable HTML page, not JSON: they live with the
//! pages, though their paths are under `/api` (mounted as they are, by `routes`).

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::domain::auth::extract::{cookie_value, resolve};
use crate::domain::auth::sessions;
use crate::domain::oauth::accounts::{self, Outcome};
use crate::domain::oauth::{self, provider, FlowCookie};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;
use crate::surface::api::accounts::client_info;
use crate::surface::api::extract::ClientAddr;
use crate::surface::web;

/// Where the browser lands after signing in, and after linking from the account page.
const AFTER_SIGN_IN: &str = "/dashboard";
const AFTER_LINK: &str = "/account";

pub fn router() -> Router<AppState> {
    Router::new().route("/api/auth/oauth/linuxdo", get(start)).route("/api/auth/oauth/linuxdo/callback", get(callback))
}

/// A `302 Found` to `location` setting `cookies` (the status the API contract names).
fn found(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

async fn start(State(state): State<AppState>) -> Response {
    match start_flow(&state).await {
        Ok(response) => response,
        Err(e) => web::error_page(&e),
    }
}

async fn start_flow(state: &AppState) -> Result<Response, Error> {
    let settings = state.settings.get().await?;
    if !settings.oauth.is_usable() {
        return Err(Error::forbidden("oauth_disabled", "LINUX DO sign-in is not enabled on this site"));
    }
    let flow = FlowCookie::new(state.now());
    let target = provider::authorize_url(&settings.oauth, &oauth::redirect_uri(&state.config.public_url), &flow)?;
    let cookie = flow.set_cookie(state.config.secret_bytes(), secure(state));
    Ok(found(&target, &[cookie]))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    client: ClientAddr,
    parts: Parts,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match finish_flow(&state, client, &parts, query).await {
        Ok(response) => response,
        Err(e) => {
            let mut page = web::error_page(&e);
            if let Ok(clear) = oauth::clear_flow_cookie().parse() {
                page.headers_mut().append(header::SET_COOKIE, clear);
            }
            page
        }
    }
}

async fn finish_flow(
    state: &AppState,
    client: ClientAddr,
    parts: &Parts,
    query: CallbackQuery,
) -> Result<Response, Error> {
    if let Some(error) = query.error {
        return Err(Error::forbidden("oauth_denied", format!("LINUX DO did not authorize the sign-in ({error})")));
    }
    let now = state.now();
    let flow = cookie_value(parts, oauth::FLOW_COOKIE)
        .and_then(|value| FlowCookie::decode(state.config.secret_bytes(), &value, now))
        .ok_or_else(|| {
            Error::bad_request("oauth_state_mismatch", "the sign-in attempt expired or was not started here; try again")
        })?;
    if !flow.state_matches(query.state.as_deref().unwrap_or("")) {
        return Err(Error::bad_request("oauth_state_mismatch", "the sign-in attempt does not match; try again"));
    }
    let code = query
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::bad_request("oauth_no_code", "the provider sent no code"))?;
    let settings = state.settings.get().await?;
    if !settings.oauth.is_usable() {
        return Err(Error::forbidden("oauth_disabled", "LINUX DO sign-in is not enabled on this site"));
    }
    let redirect_uri = oauth::redirect_uri(&state.config.public_url);
    let token = provider::exchange_code(&state.http, &settings.oauth, &code, &flow.verifier, &redirect_uri).await?;
    let profile = provider::fetch_profile(&state.http, &settings.oauth, &token).await?;
    // A valid session (cookie or bearer) means "link to me"; anything else is a sign-in.
    let signed_in =
        resolve(parts, crate::surface::api::extract::resolver(state)).await.ok().map(|current| current.user);
    let outcome = accounts::sign_in(&state.db, &settings.oauth, &profile, signed_in.as_ref(), now).await?;
    let clear = oauth::clear_flow_cookie();
    if let Outcome::Linked(_) = outcome {
        return Ok(found(AFTER_LINK, &[clear]));
    }
    let session = sessions::create(&state.db, outcome.user().id, &client_info(&parts.headers, client.0), now).await?;
    let session_cookie = web::session_cookie(&session.token, secure(state));
    Ok(found(AFTER_SIGN_IN, &[clear, session_cookie]))
}
