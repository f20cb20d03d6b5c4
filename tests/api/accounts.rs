use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    a_user_registers_logs_in_reads_themselves_and_logs_out,
    registration_errors_are_clear_and_change_nothing,
    login_refuses_wrong_credentials_the_same_way,
    registration_can_be_switched_off,
    changing_the_password_ends_other_sessions,
    malformed_bodies_get_the_api_error_shape,
    health_and_readiness_answer,
    first_run_setup_creates_the_admin_once,
);

async fn a_user_registers_logs_in_reads_themselves_and_logs_out(app: TestApp) {
    let reg =
        app.post_public("/api/auth/register", json!({"email": "Alice@Example.com", "password": "password123"})).await;
    assert_eq!(reg.status, StatusCode::CREATED);
    assert_eq!(reg.body["user"]["email"], "alice@example.com");
    assert_eq!(reg.body["user"]["role"], "user");
    assert_eq!(reg.body["user"]["balance"], "0.00");
    assert!(reg.body["user"].get("password_hash").is_none());

    let token = app.login("alice@example.com", "password123").await;
    let me = app.get("/api/user/me", &token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "alice@example.com");
    assert_eq!(me.body["status"], "active");

    let out = app.post("/api/auth/logout", &token, json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = app.get("/api/user/me", &token).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.error_code(), "unauthorized");
}

async fn registration_errors_are_clear_and_change_nothing(app: TestApp) {
    let bad_email = app.post_public("/api/auth/register", json!({"email": "nope", "password": "password123"})).await;
    assert_eq!(bad_email.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_email.body["error"]["field"], "email");

    let short = app.post_public("/api/auth/register", json!({"email": "b@example.com", "password": "short"})).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(short.body["error"]["field"], "password");

    app.register_and_login("b@example.com").await;
    let dup = app.post_public("/api/auth/register", json!({"email": "B@example.com", "password": "password123"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error_code(), "email_taken");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(count, 1);
}

async fn login_refuses_wrong_credentials_the_same_way(app: TestApp) {
    app.register_and_login("c@example.com").await;
    let wrong_pw =
        app.post_public("/api/auth/login", json!({"email": "c@example.com", "password": "password999"})).await;
    let no_user =
        app.post_public("/api/auth/login", json!({"email": "zz@example.com", "password": "password123"})).await;
    assert_eq!(wrong_pw.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_user.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_pw.body, no_user.body);
}

async fn registration_can_be_switched_off(app: TestApp) {
    let admin = app.admin_token().await;
    let r = app.put("/api/admin/settings", &admin, json!({"registration_enabled": false})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reg = app.post_public("/api/auth/register", json!({"email": "d@example.com", "password": "password123"})).await;
    assert_eq!(reg.status, StatusCode::FORBIDDEN);
    assert_eq!(reg.error_code(), "registration_closed");
}

async fn changing_the_password_ends_other_sessions(app: TestApp) {
    let (_, first) = app.register_and_login("e@example.com").await;
    let second = app.login("e@example.com", "password123").await;
    let wrong = app
        .post("/api/user/password", &first, json!({"old_password": "nope-nope", "new_password": "newpassword1"}))
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.body["error"]["field"], "old_password");
    let ok = app
        .post("/api/user/password", &first, json!({"old_password": "password123", "new_password": "newpassword1"}))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/user/me", &first).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/user/me", &second).await.status, StatusCode::UNAUTHORIZED);
    app.login("e@example.com", "newpassword1").await;
}

async fn malformed_bodies_get_the_api_error_shape(app: TestApp) {
    let resp = app.client.post(app.url("/api/auth/login")).body("{not json").send().await.unwrap();
    let answer = TestApp::answer(resp).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_json");
    let missing = app.post_public("/api/auth/login", json!({"email": "x@example.com"})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.error_code(), "invalid_body");
    let unknown = app.post_public("/api/nothing/here", json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
    let (_, token) = app.register_and_login("f@example.com").await;
    let bad_path = app.delete("/api/user/keys/abc", &token).await;
    assert_eq!(bad_path.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_path.error_code(), "invalid_path");
}

async fn health_and_readiness_answer(app: TestApp) {
    let h = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    let r = TestApp::answer(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ready");
}

async fn first_run_setup_creates_the_admin_once(app: TestApp) {
    let home = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(home.headers()["location"], "/setup");
    let setup = app.client.get(app.url("/setup")).send().await.unwrap();
    let pre = setup.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = setup.text().await.unwrap();
    assert!(page.contains("Create admin account"));
    let start = page.find("name=\"_csrf\" value=\"").unwrap() + 20;
    let csrf = page[start..].split('"').next().unwrap().to_string();
    let post = |fields: Vec<(&'static str, String)>| {
        app.client.post(app.url("/setup")).header("cookie", pre.clone()).form(&fields).send()
    };

    let forged = app
        .client
        .post(app.url("/setup"))
        .form(&[("email", "evil@example.com"), ("password", "password123")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a post without the form's CSRF token is refused");

    let bad = post(vec![("email", "root@example.com".into()), ("password", "short".into()), ("_csrf", csrf.clone())])
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("at least 8"));

    let ok =
        post(vec![("email", "root@example.com".into()), ("password", "password123".into()), ("_csrf", csrf.clone())])
            .await
            .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));

    let again = post(vec![("email", "evil@example.com".into()), ("password", "password123".into()), ("_csrf", csrf)])
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let admins: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(admins, 1);
    let token = app.login("root@example.com", "password123").await;
    assert_eq!(app.get("/api/admin/users", &token).await.status, StatusCode::OK);
}
