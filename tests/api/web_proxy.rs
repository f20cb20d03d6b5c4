//! The upstream and pricing admin pages over HTTP.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::COOKIE;
use reqwest::StatusCode;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

async fn admins_add_switch_and_delete_upstreams_without_seeing_their_keys(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("user@example.com").await;
    assert_eq!(page(&app, "/admin/upstreams", &user).await.status, StatusCode::FORBIDDEN);
    let bad = [("name", "main"), ("base_url", "ftp://x"), ("api_key", "sk-upstream-secret-1234")];
    let r = form(&app, "/admin/upstreams", &admin, &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"base_url-error\""));
    assert!(!r.text.contains("sk-upstream-secret-1234"), "a rejected form does not echo the key");
    let good = [
        ("name", "main"),
        ("base_url", "https://api.example.com/v1"),
        ("api_key", "sk-upstream-secret-1234"),
        ("models", "gpt-5, gpt-5-codex"),
    ];
    assert_eq!(form(&app, "/admin/upstreams", &admin, &good).await.status, StatusCode::SEE_OTHER);
    let list = page(&app, "/admin/upstreams", &admin).await;
    assert!(list.text.contains("gpt-5, gpt-5-codex") && list.text.contains("Healthy"));
    assert!(!list.text.contains("sk-upstream-secret-1234"));
    let id = app.get("/api/admin/upstreams", &admin).await.body["items"][0]["id"].as_i64().unwrap();
    form(&app, &format!("/admin/upstreams/{id}/toggle"), &admin, &[]).await;
    assert_eq!(app.get("/api/admin/upstreams", &admin).await.body["items"][0]["enabled"], false);
    form(&app, &format!("/admin/upstreams/{id}/delete"), &admin, &[]).await;
    assert_eq!(app.get("/api/admin/upstreams", &admin).await.body["items"].as_array().unwrap().len(), 0);
}

async fn admins_add_change_and_switch_off_model_prices(app: TestApp) {
    let admin = app.admin_token().await;
    let r = form(&app, "/admin/pricing", &admin, &[("model", "my-model"), ("input", "x"), ("output", "2")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"input-error\""));
    let r = form(&app, "/admin/pricing", &admin, &[("model", "my-model"), ("input", "1.5"), ("output", "6")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let price = app.get("/api/admin/prices/my-model", &admin).await.body;
    assert_eq!(price["cached_input"], "1.50", "cached input defaults to the input price");
    let r = form(&app, "/admin/pricing", &admin, &[("model", "my-model"), ("input", "2"), ("output", "8")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get("/api/admin/prices/my-model", &admin).await.body["output"], "8.00");
    form(&app, "/admin/pricing/my-model/toggle", &admin, &[]).await;
    assert_eq!(app.get("/api/admin/prices/my-model", &admin).await.body["enabled"], false);
    assert!(page(&app, "/admin/pricing", &admin).await.text.contains("my-model"));
    form(&app, "/admin/pricing/my-model/delete", &admin, &[]).await;
    assert_eq!(app.get("/api/admin/prices/my-model", &admin).await.status, StatusCode::NOT_FOUND);
}

on_both_databases!(
    admins_add_switch_and_delete_upstreams_without_seeing_their_keys,
    admins_add_change_and_switch_off_model_prices,
);
