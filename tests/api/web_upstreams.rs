//! The upstream edit page and its "test connection", over HTTP: every field editable
//! (the model map included), the key never shown back, every form error at once, and
//! a real request to the upstream's model list whose answer is shown without the key.

use axum::http::HeaderMap;
use codex_gateway::domain::auth::extract::csrf_token;
use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;
use crate::proxy::{add_upstream, mock};

const KEY: &str = "sk-upstream-secret-1234";

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)], htmx: bool) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let mut req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    if htmx {
        req = req.header("hx-request", "true");
    }
    TestApp::answer(req.send().await.unwrap()).await
}

async fn an_admin_edits_every_field_of_an_upstream_and_its_key_stays_unseen_and_kept(app: TestApp) {
    let admin = app.admin_token().await;
    let upstream = mock(MockOptions::default()).await;
    let id = add_upstream(&app, &admin, "main", &upstream, 0).await;
    let hint = app.get(&format!("/api/admin/upstreams/{id}"), &admin).await.body["api_key_hint"].clone();
    let edit = page(&app, &format!("/admin/upstreams/{id}"), &admin).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(edit.text.contains("id=\"model_map\"") && edit.text.contains("id=\"test-connection\""));
    assert!(edit.text.contains(hint.as_str().unwrap()), "the masked hint names the stored key");
    assert!(!edit.text.contains(KEY), "the edit form never shows the key");
    assert!(page(&app, "/admin/upstreams", &admin).await.text.contains(&format!("href=\"/admin/upstreams/{id}\"")));

    let path = format!("/admin/upstreams/{id}");
    let bad = [("name", ""), ("base_url", "ftp://x"), ("model_map", "gpt-5"), ("priority", "x"), ("weight", "0")];
    let r = form(&app, &path, &admin, &bad, false).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["name", "base_url", "model_map", "priority", "weight"] {
        assert!(r.text.contains(&format!("id=\"{field}-error\"")), "{field} shows its error among the others");
    }

    let base_url = upstream.base_url();
    let good = [
        ("name", "main-2"),
        ("base_url", base_url.as_str()),
        ("api_key", ""),
        ("models", "gpt-5"),
        ("model_map", "gpt-5 = gpt-5-2025-08-07"),
        ("priority", "3"),
        ("weight", "2"),
    ];
    assert_eq!(form(&app, &path, &admin, &good, false).await.status, StatusCode::SEE_OTHER);
    let stored = app.get(&format!("/api/admin/upstreams/{id}"), &admin).await.body;
    assert_eq!(stored["name"], "main-2");
    assert_eq!(stored["model_map"], json!({"gpt-5": "gpt-5-2025-08-07"}));
    assert_eq!((stored["priority"].as_i64(), stored["weight"].as_i64()), (Some(3), Some(2)));
    assert_eq!(stored["api_key_hint"], hint, "a blank key field keeps the stored key");
    let audit = app.get("/api/admin/audit?action=upstream.update", &admin).await;
    assert!(!audit.text.contains(KEY));
    let list = page(&app, "/admin/upstreams", &admin).await;
    assert!(list.text.contains("gpt-5 → gpt-5-2025-08-07"), "the list shows the map");
    assert!(!list.text.contains(KEY));
}

/// An upstream that refuses every key and, as some do, repeats the one it was given.
async fn refusing_upstream() -> String {
    async fn models(headers: HeaderMap) -> (StatusCode, axum::Json<serde_json::Value>) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let message = format!("Incorrect API key provided: {auth}");
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": message, "type": "invalid_request_error"}})))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/v1/models", axum::routing::get(models));
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1")
}

async fn test_connection_shows_what_the_upstream_answered_and_never_the_key(app: TestApp) {
    let admin = app.admin_token().await;
    let upstream = mock(MockOptions::default()).await;
    let id = add_upstream(&app, &admin, "main", &upstream, 0).await;
    let r = form(&app, &format!("/admin/upstreams/{id}/test"), &admin, &[], true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("data-connected=\"true\""), "{}", r.text);
    assert!(r.text.contains("Connected: HTTP 200") && r.text.contains("2 models: gpt-5, gpt-5-codex"), "{}", r.text);
    assert!(!r.text.contains("<html"), "htmx gets the result box alone");
    let full = form(&app, &format!("/admin/upstreams/{id}/test"), &admin, &[], false).await;
    assert!(full.text.contains("<html") && full.text.contains("Connected: HTTP 200"), "a plain post gets the page");

    let body = json!({"name": "refusing", "base_url": refusing_upstream().await, "api_key": KEY});
    let refusing = app.post("/api/admin/upstreams", &admin, body).await.body["id"].as_i64().unwrap();
    let r = form(&app, &format!("/admin/upstreams/{refusing}/test"), &admin, &[], true).await;
    assert!(r.text.contains("data-connected=\"false\"") && r.text.contains("Refused: HTTP 401"), "{}", r.text);
    assert!(r.text.contains("Incorrect API key provided"), "the upstream's own message is shown");
    assert!(!r.text.contains(KEY), "the key the upstream repeated is scrubbed: {}", r.text);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let body = json!({"name": "gone", "base_url": format!("http://{closed}/v1"), "api_key": KEY});
    let gone = app.post("/api/admin/upstreams", &admin, body).await.body["id"].as_i64().unwrap();
    let r = form(&app, &format!("/admin/upstreams/{gone}/test"), &admin, &[], true).await;
    assert!(r.text.contains("data-connected=\"false\"") && r.text.contains("Unreachable"), "{}", r.text);
    assert!(!r.text.contains(KEY));
    let (_, user) = app.register_and_login("user@example.com").await;
    assert_eq!(
        form(&app, &format!("/admin/upstreams/{id}/test"), &user, &[], true).await.status,
        StatusCode::FORBIDDEN
    );
}

on_both_databases!(
    an_admin_edits_every_field_of_an_upstream_and_its_key_stays_unseen_and_kept,
    test_connection_shows_what_the_upstream_answered_and_never_the_key,
);
