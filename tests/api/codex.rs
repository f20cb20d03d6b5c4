//! What the Codex CLI reads beyond the OpenAI API: quota windows and credits in
//! `x-codex-*` headers, usage-limit refusals in the shape it does not retry.

use codex_gateway::proxy::mock::MockOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{assert_openai_error, balance_and_held, setup, usage_rows, v1};

on_both_databases!(
    a_responses_answer_carries_the_package_window_and_the_balance_in_codex_headers,
    a_used_up_package_is_refused_as_a_usage_limit_with_the_daily_reset,
);

/// 2026-01-15T16:00:00Z: the first Shanghai midnight after the test clock's start.
const NEXT_RESET: i64 = 1_768_492_800;

/// Grants the user a package with `daily_limit` (USD) through the admin API.
pub async fn grant_package(app: &TestApp, admin: &str, user_id: i64, daily_limit: &str) {
    let package = app
        .create_package(admin, json!({"name": "Daily", "price": 10, "duration_days": 30, "daily_limit": daily_limit}))
        .await;
    let granted =
        app.post(&format!("/api/admin/users/{user_id}/packages"), admin, json!({"package_id": package})).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn a_responses_answer_carries_the_package_window_and_the_balance_in_codex_headers(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("5")).await;
    grant_package(&app, &s.admin, s.user_id, "1.00").await;
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let first =
        v1(&app, "/v1/responses", &s.key).header("x-request-id", "client-abc").json(&body).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // x-request-id names the client's request; the upstream's id is kept apart.
    assert_eq!(header(&first, "x-request-id"), Some("client-abc"));
    assert_eq!(header(&first, "x-upstream-request-id"), Some("req_mock_upstream"));
    assert!(header(&first, "x-gateway-request-id").is_some_and(|id| id.starts_with("req_")));
    assert_eq!(header(&first, "x-codex-primary-used-percent"), Some("0.0"));
    assert_eq!(header(&first, "x-codex-primary-window-minutes"), Some("1440"));
    assert_eq!(header(&first, "x-codex-primary-reset-at"), Some(NEXT_RESET.to_string().as_str()));
    assert_eq!(header(&first, "x-codex-credits-has-credits"), Some("true"));
    assert_eq!(header(&first, "x-codex-credits-unlimited"), Some("false"));
    assert_eq!(header(&first, "x-codex-credits-balance"), Some("5.00"));
    assert!(header(&first, "x-codex-secondary-used-percent").is_none(), "no second window without a cap");
    first.text().await.unwrap();
    usage_rows(&app, 1).await;

    // The first request cost 4025 micro-USD of the 1.00 daily allowance: 0.4025 %.
    let second = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(header(&second, "x-codex-primary-used-percent"), Some("0.4"));
    assert_eq!(header(&second, "x-codex-credits-balance"), Some("5.00"), "the package paid, not the balance");
    second.text().await.unwrap();

    // Chat Completions answers stay as they were.
    let chat = v1(&app, "/v1/chat/completions", &s.key)
        .json(&json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(header(&chat, "x-codex-primary-used-percent").is_none());
    chat.text().await.unwrap();
    usage_rows(&app, 3).await;
    app.assert_money_invariants().await;
}

async fn a_used_up_package_is_refused_as_a_usage_limit_with_the_daily_reset(app: TestApp) {
    let s = setup(&app, MockOptions::default(), None).await;
    grant_package(&app, &s.admin, s.user_id, "0.01").await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    // Codex maps a 429 whose error.type is usage_limit_reached to a terminal error
    // ("You've hit your usage limit. … or try again at …") and never retries it.
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "x-codex-primary-reset-at"), Some(NEXT_RESET.to_string().as_str()));
    assert!(header(&resp, "x-codex-promo-message").is_some_and(|m| m.contains("top up")));
    assert_eq!(header(&resp, "x-codex-credits-has-credits"), Some("false"));
    let body: Value = resp.json().await.unwrap();
    assert_openai_error(&body, "insufficient_quota");
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    assert_eq!(body["error"]["resets_at"], NEXT_RESET);
    assert_eq!(s.mock.requests(), 0, "nothing was forwarded");
    assert_eq!(balance_and_held(&app, s.user_id).await, (0, 0));
    app.assert_money_invariants().await;
}
