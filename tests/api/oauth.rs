//! LINUX DO sign-in end to end against a mock OAuth provider started by each test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    a_first_linuxdo_sign_in_creates_an_account_and_the_next_one_reuses_it,
    the_callback_refuses_a_forged_or_missing_state,
    trust_level_and_registration_settings_are_enforced,
    a_signed_in_user_links_linuxdo_and_then_signs_in_with_it,
    linuxdo_only_turns_off_password_sign_in_except_for_admins,
);

const CLIENT_ID: &str = "gateway-client";
const CLIENT_SECRET: &str = "gateway-secret";

/// What the mock provider knows: issued codes (with their PKCE challenge and user) and tokens.
#[derive(Default)]
struct ProviderState {
    codes: HashMap<String, (String, Value)>,
    tokens: HashMap<String, Value>,
    exchanges: usize,
    seen_redirect_uri: Option<String>,
}

struct MockProvider {
    base: String,
    state: Arc<Mutex<ProviderState>>,
}

impl MockProvider {
    async fn start() -> MockProvider {
        let state = Arc::new(Mutex::new(ProviderState::default()));
        let router = Router::new()
            .route("/oauth2/token", post(token))
            .route("/api/user", get(user_info))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        MockProvider { base, state }
    }

    /// The user approved at the provider: a code bound to the request's PKCE challenge.
    fn approve(&self, challenge: &str, user: Value) -> String {
        let code = format!("code-{}", rand::random::<u64>());
        self.state.lock().unwrap().codes.insert(code.clone(), (challenge.to_string(), user));
        code
    }

    fn exchanges(&self) -> usize {
        self.state.lock().unwrap().exchanges
    }
}

async fn token(
    State(state): State<Arc<Mutex<ProviderState>>>,
    headers: HeaderMap,
    body: String,
) -> (AxumStatus, Json<Value>) {
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap();
    let mut state = state.lock().unwrap();
    state.exchanges += 1;
    state.seen_redirect_uri = form.get("redirect_uri").cloned();
    let expected_auth = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected_auth.as_str()) {
        return (AxumStatus::UNAUTHORIZED, Json(json!({"error": "invalid_client"})));
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return (AxumStatus::BAD_REQUEST, Json(json!({"error": "unsupported_grant_type"})));
    }
    // Codes are single-use.
    let Some((challenge, user)) = form.get("code").and_then(|c| state.codes.remove(c)) else {
        return (AxumStatus::BAD_REQUEST, Json(json!({"error": "invalid_grant"})));
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return (AxumStatus::BAD_REQUEST, Json(json!({"error": "invalid_grant", "error_description": "PKCE"})));
    }
    let access = format!("at-{}", rand::random::<u64>());
    state.tokens.insert(access.clone(), user);
    (AxumStatus::OK, Json(json!({"access_token": access, "token_type": "bearer", "expires_in": 3600})))
}

async fn user_info(State(state): State<Arc<Mutex<ProviderState>>>, headers: HeaderMap) -> (AxumStatus, Json<Value>) {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.lock().unwrap().tokens.get(t).cloned()) {
        Some(user) => (AxumStatus::OK, Json(user)),
        None => (AxumStatus::UNAUTHORIZED, Json(json!({"error": "invalid_token"}))),
    }
}

/// Points the gateway's OAuth settings at the mock.
async fn configure(app: &TestApp, admin: &str, mock: &MockProvider, extra: Value) {
    let mut oauth = json!({
        "enabled": true, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "authorize_url": format!("{}/oauth2/authorize", mock.base),
        "token_url": format!("{}/oauth2/token", mock.base),
        "userinfo_url": format!("{}/api/user", mock.base),
    });
    for (k, v) in extra.as_object().unwrap() {
        oauth[k] = v.clone();
    }
    let r = app.put("/api/admin/settings", admin, json!({ "oauth": oauth })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// A cookie `name=value` from a response's `Set-Cookie` headers.
fn cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).find_map(|line| {
        let pair = line.split(';').next()?.to_string();
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| (v.to_string(), line.clone()))
    })
}

/// Starts the flow: returns the provider URL's query and the flow cookie.
async fn begin(app: &TestApp, mock: &MockProvider) -> (HashMap<String, String>, String) {
    let r = app.client.get(app.url("/api/auth/oauth/linuxdo")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.status());
    let location = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/oauth2/authorize?", mock.base)), "{location}");
    let (value, line) = cookie(r.headers(), "cg_oauth").expect("flow cookie");
    assert!(line.contains("HttpOnly") && line.contains("Max-Age=600"), "{line}");
    let query = url::Url::parse(&location).unwrap().query_pairs().into_owned().collect();
    (query, value)
}

/// Calls the callback as the browser would, optionally signed in already.
async fn callback(app: &TestApp, code: &str, state: &str, flow: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .get(app.url("/api/auth/oauth/linuxdo/callback"))
        .query(&[("code", code), ("state", state)])
        .header(COOKIE, format!("cg_oauth={flow}"));
    if let Some(token) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    req.send().await.unwrap()
}

/// The whole flow for `user`; returns the callback's answer.
async fn sign_in_as(app: &TestApp, mock: &MockProvider, user: Value, bearer: Option<&str>) -> reqwest::Response {
    let (query, flow) = begin(app, mock).await;
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["client_id"], CLIENT_ID);
    let code = mock.approve(&query["code_challenge"], user);
    callback(app, &code, &query["state"], &flow, bearer).await
}

async fn a_first_linuxdo_sign_in_creates_an_account_and_the_next_one_reuses_it(app: TestApp) {
    let mock = MockProvider::start().await;
    let admin = app.admin_token().await;
    let closed = app.client.get(app.url("/api/auth/oauth/linuxdo")).send().await.unwrap();
    assert_eq!(closed.status(), StatusCode::FORBIDDEN, "not configured yet");
    configure(&app, &admin, &mock, json!({})).await;
    let settings = app.get("/api/admin/settings", &admin).await;
    assert!(settings.body["oauth"].get("client_secret").is_none(), "{}", settings.text);
    assert_eq!(settings.body["oauth"]["client_secret_set"], true);
    let stored: String = sqlx::query_scalar("SELECT value FROM system_settings WHERE key = 'settings'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(!stored.contains(CLIENT_SECRET) && stored.contains("enc:v1:"), "the client secret is sealed at rest");

    let neo = json!({"id": 1001, "username": "neo", "trust_level": 2, "active": true});
    let r = sign_in_as(&app, &mock, neo.clone(), None).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()[LOCATION], "/dashboard");
    let (token, line) = cookie(r.headers(), "cg_session").expect("session cookie");
    assert!(line.contains("HttpOnly"), "{line}");
    assert_eq!(cookie(r.headers(), "cg_oauth").unwrap().0, "", "the flow cookie is cleared");
    assert_eq!(
        mock.state.lock().unwrap().seen_redirect_uri.as_deref(),
        Some(format!("{}/api/auth/oauth/linuxdo/callback", app.state.config.public_url).as_str())
    );

    let me = app.get("/api/user/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["email"], "linuxdo-1001@users.noreply.linux.do");
    assert_eq!(me.body["display_name"], "neo");
    let user_id = me.body["id"].as_i64().unwrap();
    let identity: (i64, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT user_id, username, trust_level FROM oauth_identities WHERE provider = 'linuxdo' AND subject = '1001'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(identity, (user_id, Some("neo".into()), Some(2)));

    let promoted = json!({"id": 1001, "username": "neo", "trust_level": 3});
    let again = sign_in_as(&app, &mock, promoted, None).await;
    let (token2, _) = cookie(again.headers(), "cg_session").unwrap();
    assert_ne!(token, token2);
    assert_eq!(app.get("/api/user/me", &token2).await.body["id"], user_id);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(users, 2, "the admin and neo");
    let level: i64 =
        sqlx::query_scalar("SELECT trust_level FROM oauth_identities").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(level, 3, "the trust level is refreshed");

    let with_email =
        sign_in_as(&app, &mock, json!({"id": "2002", "username": "trinity", "email": "Trin@Example.com"}), None).await;
    let (token3, _) = cookie(with_email.headers(), "cg_session").unwrap();
    assert_eq!(app.get("/api/user/me", &token3).await.body["email"], "trin@example.com");
    // An account made by LINUX DO has no password to sign in with.
    let no_password = app.post_public("/api/auth/login", json!({"email": "trin@example.com", "password": ""})).await;
    assert_eq!(no_password.status, StatusCode::UNAUTHORIZED);
}

async fn the_callback_refuses_a_forged_or_missing_state(app: TestApp) {
    let mock = MockProvider::start().await;
    let admin = app.admin_token().await;
    configure(&app, &admin, &mock, json!({})).await;
    let (query, flow) = begin(&app, &mock).await;
    let code = mock.approve(&query["code_challenge"], json!({"id": 7, "username": "x", "trust_level": 1}));

    let forged = callback(&app, &code, "forged-state", &flow, None).await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(cookie(forged.headers(), "cg_session").is_none());
    let tampered = callback(&app, &code, &query["state"], &flow.replace('.', "x"), None).await;
    assert_eq!(tampered.status(), StatusCode::BAD_REQUEST);
    let no_cookie = app
        .client
        .get(app.url("/api/auth/oauth/linuxdo/callback"))
        .query(&[("code", code.as_str()), ("state", query["state"].as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), StatusCode::BAD_REQUEST);
    app.clock.advance(chrono::Duration::minutes(11));
    let expired = callback(&app, &code, &query["state"], &flow, None).await;
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    assert_eq!(mock.exchanges(), 0, "no code is exchanged without a matching state");
    let denied = app.client.get(app.url("/api/auth/oauth/linuxdo/callback?error=access_denied")).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    // A code the provider refuses (already used, wrong verifier) is a clean 502, not a sign-in.
    let (query, flow) = begin(&app, &mock).await;
    let wrong_challenge = mock.approve("not-the-challenge", json!({"id": 7}));
    let refused = callback(&app, &wrong_challenge, &query["state"], &flow, None).await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert!(cookie(refused.headers(), "cg_session").is_none());
}

async fn trust_level_and_registration_settings_are_enforced(app: TestApp) {
    let mock = MockProvider::start().await;
    let admin = app.admin_token().await;
    configure(&app, &admin, &mock, json!({"min_trust_level": 2})).await;
    let low = sign_in_as(&app, &mock, json!({"id": 1, "username": "newbie", "trust_level": 1}), None).await;
    assert_eq!(low.status(), StatusCode::FORBIDDEN);
    assert!(low.text().await.unwrap().contains("trust level 2"));
    let inactive = sign_in_as(&app, &mock, json!({"id": 3, "trust_level": 4, "active": false}), None).await;
    assert_eq!(inactive.status(), StatusCode::FORBIDDEN);

    app.register_and_login("taken@example.com").await;
    let clash = sign_in_as(&app, &mock, json!({"id": 2, "trust_level": 2, "email": "taken@example.com"}), None).await;
    assert_eq!(
        clash.status(),
        StatusCode::CONFLICT,
        "an existing email account is linked by its owner, not taken over"
    );

    configure(&app, &admin, &mock, json!({"allow_oauth_registration": false})).await;
    let closed = sign_in_as(&app, &mock, json!({"id": 4, "trust_level": 3}), None).await;
    assert_eq!(closed.status(), StatusCode::FORBIDDEN);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(users, 2, "only the admin and the password user exist");
}

async fn a_signed_in_user_links_linuxdo_and_then_signs_in_with_it(app: TestApp) {
    let mock = MockProvider::start().await;
    let admin = app.admin_token().await;
    configure(&app, &admin, &mock, json!({"allow_oauth_registration": false})).await;
    let (user_id, user) = app.register_and_login("owner@example.com").await;
    let linked = sign_in_as(&app, &mock, json!({"id": 55, "username": "owner", "trust_level": 1}), Some(&user)).await;
    assert_eq!(linked.status(), StatusCode::FOUND);
    assert_eq!(linked.headers()[LOCATION], "/account");
    let owner: i64 = sqlx::query_scalar("SELECT user_id FROM oauth_identities WHERE subject = '55'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(owner, user_id);

    let signed_in = sign_in_as(&app, &mock, json!({"id": 55, "username": "owner", "trust_level": 1}), None).await;
    let (token, _) = cookie(signed_in.headers(), "cg_session").expect("signed in through the link");
    assert_eq!(app.get("/api/user/me", &token).await.body["email"], "owner@example.com");

    let (_, intruder) = app.register_and_login("other@example.com").await;
    let taken = sign_in_as(&app, &mock, json!({"id": 55, "trust_level": 1}), Some(&intruder)).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let still: i64 = sqlx::query_scalar("SELECT user_id FROM oauth_identities WHERE subject = '55'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(still, user_id);
}

async fn linuxdo_only_turns_off_password_sign_in_except_for_admins(app: TestApp) {
    let mock = MockProvider::start().await;
    let admin = app.admin_token().await;
    let admin_email = app.get("/api/user/me", &admin).await.body["email"].as_str().unwrap().to_string();
    app.register_and_login("pw@example.com").await;
    configure(&app, &admin, &mock, json!({"linuxdo_only": true})).await;
    let login = app.post_public("/api/auth/login", json!({"email": "pw@example.com", "password": "password123"})).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert_eq!(login.error_code(), "password_login_disabled");
    let register =
        app.post_public("/api/auth/register", json!({"email": "new@example.com", "password": "password123"})).await;
    assert_eq!(register.status, StatusCode::FORBIDDEN);
    app.login(&admin_email, "password123").await;
    let via_linuxdo = sign_in_as(&app, &mock, json!({"id": 9, "username": "nine", "trust_level": 0}), None).await;
    assert_eq!(via_linuxdo.status(), StatusCode::FOUND);
}
