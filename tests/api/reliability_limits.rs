//! Proxy rate limits from `Settings.rate_limits`: per key and per user requests per
//! minute and concurrent streams per user, refused as OpenAI-shaped 429s with
//! `Retry-After`, before anything is held or forwarded.

use std::sync::Arc;

use codex_gateway::domain::proxy::mock::MockOptions;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::{report, TestApp};
use crate::on_both_databases;
use crate::proxy::{setup, v1};

on_both_databases!(
    per_key_and_per_user_request_rates_are_refused_in_the_openai_shape,
    concurrent_streams_per_user_are_capped_and_slots_come_back,
    rate_limit_settings_are_validated,
);

async fn limit(app: &TestApp, admin: &str, limits: Value) {
    let r = app.put("/api/admin/settings", admin, json!({ "rate_limits": limits })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn call(app: &TestApp, key: &str) -> (StatusCode, Option<String>, Value) {
    let r = v1(app, "/v1/responses", key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    let status = r.status();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

async fn usage_count(app: &TestApp) -> i64 {
    app.wait_until_settled().await;
    sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(app.db.pool()).await.unwrap()
}

async fn per_key_and_per_user_request_rates_are_refused_in_the_openai_shape(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("20.00")).await;
    limit(&app, &s.admin, json!({"key_requests_per_minute": 3})).await;
    for _ in 0..3 {
        assert_eq!(call(&app, &s.key).await.0, StatusCode::OK);
    }
    let (status, retry, body) = call(&app, &s.key).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&secs), "a slot frees within 60/3 s: {secs}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(body["error"]["message"].as_str().unwrap().contains("3 requests per minute"), "{body}");
    assert_eq!(s.mock.requests(), 3, "the refused request was not forwarded");
    assert_eq!(usage_count(&app).await, 3, "nor held or logged");

    // A second key of the same user has its own key budget, but the user budget spans both.
    let second = app.post("/api/user/keys", &s.user_token, json!({"name": "second"})).await;
    let second = second.body["key"].as_str().unwrap().to_string();
    assert_eq!(call(&app, &second).await.0, StatusCode::OK);
    limit(&app, &s.admin, json!({"key_requests_per_minute": 0, "user_requests_per_minute": 2})).await;
    assert_eq!(call(&app, &s.key).await.0, StatusCode::OK);
    assert_eq!(call(&app, &second).await.0, StatusCode::OK);
    let (status, retry, _) = call(&app, &second).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
    // Another user is not affected.
    let (other_id, other_token) = app.register_and_login("other@example.com").await;
    app.fund(&s.admin, other_id, "5.00").await;
    let other = app.post("/api/user/keys", &other_token, json!({"name": "o"})).await;
    assert_eq!(call(&app, other.body["key"].as_str().unwrap()).await.0, StatusCode::OK);
    // 0 = unlimited again.
    limit(&app, &s.admin, json!({"user_requests_per_minute": 0})).await;
    for _ in 0..10 {
        assert_eq!(call(&app, &s.key).await.0, StatusCode::OK);
    }
    app.assert_all_invariants().await;
    report("rate_limits_per_minute", app.backend, &[("requests", 22), ("refused", 2)], 0);
}

async fn concurrent_streams_per_user_are_capped_and_slots_come_back(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let s = setup(&app, MockOptions { gate: Some(gate.clone()), ..MockOptions::default() }, Some("20.00")).await;
    limit(&app, &s.admin, json!({"user_max_concurrent_streams": 2})).await;
    let stream = || v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}));
    let mut a = stream().send().await.unwrap().bytes_stream();
    let mut b = stream().send().await.unwrap().bytes_stream();
    a.next().await.unwrap().unwrap();
    b.next().await.unwrap().unwrap();
    assert_eq!(app.state.limits.open_streams(s.user_id), 2);
    let third = stream().send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Non-streamed requests are not streams.
    gate.add_permits(1000);
    assert_eq!(call(&app, &s.key).await.0, StatusCode::OK);
    // A finished stream and an abandoned one both give their slot back.
    while a.next().await.is_some() {}
    drop(b);
    for _ in 0..100 {
        if app.state.limits.open_streams(s.user_id) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.limits.open_streams(s.user_id), 0);
    let again = stream().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    again.bytes().await.unwrap();
    app.assert_all_invariants().await;
    report("rate_limits_concurrent_streams", app.backend, &[("requests", 5), ("refused", 1)], 0);
}

async fn rate_limit_settings_are_validated(app: TestApp) {
    let admin = app.admin_token().await;
    let r = app.put("/api/admin/settings", &admin, json!({"rate_limits": {"user_requests_per_minute": -1}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "rate_limits.user_requests_per_minute");
    let shown = app.get("/api/admin/settings", &admin).await;
    assert_eq!(
        shown.body["rate_limits"],
        json!({"key_requests_per_minute": 0, "user_requests_per_minute": 0, "user_max_concurrent_streams": 32})
    );
    app.assert_all_invariants().await;
}
