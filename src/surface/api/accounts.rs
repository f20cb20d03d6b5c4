//! Accounts: register, login, logout, me, password.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ClientAddr};
use crate::domain::auth::sessions::{self, ClientInfo};
use crate::domain::auth::users;
use crate::domain::auth::{password, CurrentUser, Role};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/user/me", get(me))
        .route("/api/user/password", post(change_password))
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

async fn register(State(state): State<AppState>, ApiJson(body): ApiJson<Credentials>) -> ApiResult<impl IntoResponse> {
    let settings = state.settings.get().await?;
    if !settings.registration_enabled || settings.oauth.linuxdo_only {
        return Err(Error::forbidden("registration_closed", "registration is closed on this site").into());
    }
    let user = users::create(&state.db, &body.email, &body.password, Role::User, state.now()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user.view(state.calendar()) }))))
}

/// Client details for the session row.
pub fn client_info(headers: &HeaderMap, addr: Option<std::net::IpAddr>) -> ClientInfo {
    ClientInfo {
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
        ip: addr.map(|a| a.to_string()),
    }
}

/// Checks credentials; the same answer for a wrong email and a wrong password.
pub async fn check_credentials(state: &AppState, email: &str, plain: &str) -> Result<users::User, Error> {
    let wrong = || Error::Unauthorized("wrong email or password".into());
    let Some(user) = users::find_by_email(&state.db, email).await? else {
        password::verify_dummy(plain).await;
        return Err(wrong());
    };
    let Some(hash) = user.password_hash.as_deref() else {
        password::verify_dummy(plain).await;
        return Err(wrong());
    };
    if !password::verify(plain, hash).await {
        return Err(wrong());
    }
    if !user.is_active() {
        return Err(Error::forbidden("account_suspended", "this account is suspended"));
    }
    if !user.is_admin() && state.settings.get().await?.oauth.linuxdo_only {
        return Err(Error::forbidden("password_login_disabled", "this site only allows signing in with LINUX DO"));
    }
    Ok(user)
}

async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<impl IntoResponse> {
    state.login_throttle.check(client.ip().as_deref(), &body.email).await?;
    let user = check_credentials(&state, &body.email, &body.password).await?;
    let client = client_info(&headers, client.0);
    let session = sessions::create(&state.db, user.id, &client, state.now()).await?;
    Ok(Json(json!({
        "token": session.token,
        "expires_at": state.calendar().format(session.expires_at),
        "user": user.view(state.calendar()),
    })))
}

async fn logout(State(state): State<AppState>, current: CurrentUser) -> ApiResult<StatusCode> {
    sessions::revoke(&state.db, current.session_id, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(state): State<AppState>, current: CurrentUser) -> ApiResult<impl IntoResponse> {
    Ok(Json(current.user.view(state.calendar())))
}

#[derive(Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    let change = users::PasswordChange {
        old_password: &body.old_password,
        new_password: &body.new_password,
        keep_session_id: current.session_id,
    };
    users::change_own_password(&state.db, &current.user, &change, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
