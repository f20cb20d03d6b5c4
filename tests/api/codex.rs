//! What the Codex CLI reads beyond the OpenAI API: quota windows and credits in
//! `x-codex-*` headers, usage-limit refusals in the shape it does not retry.

use codex_gateway::domain::proxy::mock::MockOptions;
use codex_gateway::foundation::money::Money;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TempDir, TestApp};
use crate::on_both_databases;
use crate::proxy::{assert_openai_error, balance_and_held, setup, usage_rows, v1};

on_both_databases!(
    a_responses_answer_carries_the_package_window_and_the_balance_in_codex_headers,
    a_used_up_package_is_refused_as_a_usage_limit_with_the_daily_reset,
    codex_gets_its_model_catalogue_with_an_etag_and_sdks_keep_the_openai_list,
    responses_answers_and_the_websocket_handshake_carry_the_catalogue_s_etag,
    the_credits_balance_shows_each_charge_and_each_adjustment_in_the_next_answer,
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

/// The quota figures come from a standing the instance caches (`billing::standing`): a
/// settlement committed here and a change the instance is told of (an admin adjustment)
/// retire it, so the next answer shows them even within the cache's second.
async fn the_credits_balance_shows_each_charge_and_each_adjustment_in_the_next_answer(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("5")).await;
    let body = json!({"model": "gpt-5", "input": "hi"});
    let send = || v1(&app, "/v1/responses", &s.key).json(&body).send();
    let balance = |r: &reqwest::Response| header(r, "x-codex-credits-balance").map(String::from);
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(balance(&first).as_deref(), Some("5.00"));
    first.text().await.unwrap();
    usage_rows(&app, 1).await;
    let (left, held) = balance_and_held(&app, s.user_id).await;
    assert!(left < 5_000_000 && held == 0, "the first request was charged to the balance: {left}");

    let second = send().await.unwrap();
    assert_eq!(balance(&second), Some(Money::from_micros(left).to_string()), "the charge shows at once");
    second.text().await.unwrap();
    usage_rows(&app, 2).await;

    let path = format!("/api/admin/users/{}/balance", s.user_id);
    let adjusted = app.post(&path, &s.admin, json!({"amount": "10", "reason": "gift"})).await;
    assert_eq!(adjusted.status, StatusCode::OK, "{}", adjusted.text);
    let (left, _) = balance_and_held(&app, s.user_id).await;
    let third = send().await.unwrap();
    assert_eq!(balance(&third), Some(Money::from_micros(left).to_string()), "the adjustment shows at once");
    third.text().await.unwrap();
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

async fn models(app: &TestApp, key: &str, query: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(&format!("/v1/models{query}"))).bearer_auth(key);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.unwrap()
}

/// Codex asks `GET /v1/models?client_version=…` (openai/codex `endpoint/models.rs`).
async fn codex_gets_its_model_catalogue_with_an_etag_and_sdks_keep_the_openai_list(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("5")).await;
    let list: Value = models(&app, &s.key, "", None).await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    assert!(list["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-5-codex"), "{list}");
    // No agent prompt configured: an empty catalogue, so Codex keeps its built-in prompt.
    let empty = models(&app, &s.key, "?client_version=0.171.0", None).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(empty.json::<Value>().await.unwrap(), json!({"models": []}));
    let refused = models(&app, "sk-nope", "?client_version=0.171.0", None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_openai_error(&refused.json().await.unwrap(), "invalid_api_key");

    let dir = TempDir(std::env::temp_dir().join(format!("cg-prompt-{}-{:?}", std::process::id(), app.backend)));
    std::fs::create_dir_all(&dir.0).unwrap();
    let prompt = dir.0.join("prompt.md");
    std::fs::write(&prompt, "You are a coding agent behind codex-gateway.").unwrap();
    let with_prompt =
        spawn_app_with(app.backend, &[("GATEWAY_CODEX_INSTRUCTIONS_FILE", prompt.to_str().unwrap())]).await;
    let s = setup(&with_prompt, MockOptions::default(), Some("5")).await;
    let resp = models(&with_prompt, &s.key, "?client_version=0.171.0", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = header(&resp, "etag").expect("an ETag").to_string();
    let body: Value = resp.json().await.unwrap();
    let entries = body["models"].as_array().unwrap();
    let codex = entries.iter().find(|m| m["slug"] == "gpt-5-codex").expect("every priced model is listed");
    assert_eq!(codex["base_instructions"], "You are a coding agent behind codex-gateway.");
    assert_eq!((codex["visibility"].as_str(), codex["supported_in_api"].as_bool()), (Some("list"), Some(true)));
    assert_eq!(entries.len(), list["data"].as_array().unwrap().len(), "the same models as the OpenAI list");

    let unchanged = models(&with_prompt, &s.key, "?client_version=0.171.0", Some(&etag)).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&unchanged, "etag"), Some(etag.as_str()));
    assert!(unchanged.bytes().await.unwrap().is_empty());
    // A new price changes the catalogue, so the old tag no longer matches.
    let priced = with_prompt
        .post(
            "/api/admin/prices",
            &s.admin,
            json!({"model": "gpt-new", "input": "1", "cached_input": "0.1", "output": "2"}),
        )
        .await;
    assert!(priced.status.is_success(), "{}", priced.text);
    let changed = models(&with_prompt, &s.key, "?client_version=0.171.0", Some(&etag)).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, "etag"), Some(etag.as_str()));
    let body: Value = changed.json().await.unwrap();
    assert!(body["models"].as_array().unwrap().iter().any(|m| m["slug"] == "gpt-new"));
}

/// Codex compares `x-models-etag` on each Responses answer (and on the WebSocket
/// handshake) with the catalogue it holds and fetches `/models` again when it differs:
/// the header is the catalogue's own ETag and follows a price change at once.
async fn responses_answers_and_the_websocket_handshake_carry_the_catalogue_s_etag(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("5")).await;
    let catalogue_etag = |resp: &reqwest::Response| header(resp, "etag").expect("an ETag").to_string();
    let etag = catalogue_etag(&models(&app, &s.key, "?client_version=0.171.0", None).await);
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let answer = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(header(&answer, "x-models-etag"), Some(etag.as_str()), "the empty catalogue's tag");
    answer.text().await.unwrap();
    let (mut socket, handshake) = crate::codex_ws::connect_with_answer(&app, &s.key).await.unwrap();
    let on_socket = handshake.headers().get("x-models-etag").and_then(|v| v.to_str().ok());
    assert_eq!(on_socket, Some(etag.as_str()), "the handshake carries it too");
    futures::SinkExt::close(&mut socket).await.ok();

    let priced = app
        .post(
            "/api/admin/prices",
            &s.admin,
            json!({"model": "gpt-new", "input": "1", "cached_input": "0.1", "output": "2"}),
        )
        .await;
    assert!(priced.status.is_success(), "{}", priced.text);
    let new_etag = catalogue_etag(&models(&app, &s.key, "?client_version=0.171.0", None).await);
    let answer = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(header(&answer, "x-models-etag"), Some(new_etag.as_str()));
    answer.text().await.unwrap();
    // Codex reads it from an answered stream only; a refused caller learns nothing.
    let refused = v1(&app, "/v1/responses", "sk-nope").json(&body).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&refused, "x-models-etag").is_none());
    usage_rows(&app, 2).await;
    app.assert_money_invariants().await;
}
