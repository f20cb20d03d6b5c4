//! The `/v1` gateway against the in-process mock upstream: streaming and not, both
//! APIs, exact usage rows and charges, failover, broken streams, disconnects, refusals.

use std::sync::Arc;

use codex_gateway::domain::proxy::mock::{serve_mock, MockHandle, MockOptions};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    a_streamed_responses_request_passes_through_and_bills_the_reported_usage,
    a_non_streamed_responses_request_bills_the_usage_in_the_body,
    streamed_chat_hides_the_usage_chunk_only_when_the_client_did_not_ask_for_it,
    non_streamed_chat_is_billed_from_its_usage,
    chunks_reach_the_client_before_the_upstream_finishes,
    a_stream_of_small_events_is_not_slowed_down_per_event,
    a_suspension_takes_effect_before_the_next_request_goes_upstream,
    a_request_served_on_a_stale_hint_is_charged_and_the_next_one_refused,
    a_failing_upstream_is_skipped_before_the_first_byte_and_marked_unhealthy,
    an_upstream_dying_mid_stream_is_billed_on_an_estimate_without_retry,
    a_client_disconnecting_mid_stream_is_still_billed,
    missing_bad_and_revoked_keys_get_openai_shaped_401s,
    unpriced_models_and_malformed_bodies_are_refused_before_forwarding,
    a_user_who_cannot_pay_is_refused_before_anything_is_forwarded,
);

/// gpt-5 list price (1.25 / 0.125 / 10 per 1M) for the mock's usage (1000 input of
/// which 200 cached, 300 output): 800×1.25 + 200×0.125 + 300×10 = 4025 micro-USD.
const MOCK_COST_MICROS: i64 = 4_025;

pub struct Setup {
    pub admin: String,
    pub user_id: i64,
    pub key: String,
    pub key_id: i64,
    pub user_token: String,
    pub mock: MockHandle,
}

pub async fn mock(options: MockOptions) -> MockHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_mock(listener, options).await.unwrap()
}

pub async fn add_upstream(app: &TestApp, admin: &str, name: &str, mock: &MockHandle, priority: i64) -> i64 {
    let r = app
        .post(
            "/api/admin/upstreams",
            admin,
            json!({"name": name, "base_url": format!("{}/", mock.base_url()), "api_key": "sk-upstream-secret-1234", "priority": priority}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_i64().unwrap()
}

/// An admin, a funded user with an API key, and one upstream served by a mock.
pub async fn setup(app: &TestApp, options: MockOptions, funds: Option<&str>) -> Setup {
    let mock = mock(options).await;
    let admin = app.admin_token().await;
    add_upstream(app, &admin, "primary", &mock, 0).await;
    let (user_id, user_token) = app.register_and_login("coder@example.com").await;
    if let Some(amount) = funds {
        app.fund(&admin, user_id, amount).await;
    }
    let key = app.post("/api/user/keys", &user_token, json!({"name": "cli"})).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    Setup {
        admin,
        user_id,
        key: key.body["key"].as_str().unwrap().to_string(),
        key_id: key.body["id"].as_i64().unwrap(),
        user_token,
        mock,
    }
}

/// One usage row as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub endpoint: String,
    pub model: String,
    pub upstream_id: Option<i64>,
    pub status_code: i64,
    pub streamed: bool,
    pub tokens: (i64, i64, i64, i64),
    pub cost: i64,
    pub estimated: bool,
    pub error: Option<String>,
}

type RawRow = (String, String, Option<i64>, i64, i64, i64, i64, i64, i64, i64, i64, Option<String>);

/// Waits (the settlement runs in a background task) until `n` usage rows exist.
pub async fn usage_rows(app: &TestApp, n: usize) -> Vec<Row> {
    for _ in 0..500 {
        let rows: Vec<RawRow> = sqlx::query_as(
            "SELECT endpoint, model, upstream_id, status_code, streamed, \
               input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost, \
               estimated, error FROM usage_logs ORDER BY id",
        )
        .fetch_all(app.db.pool())
        .await
        .unwrap();
        if rows.len() >= n {
            assert_eq!(rows.len(), n, "more usage rows than requests");
            return rows
                .into_iter()
                .map(|r| Row {
                    endpoint: r.0,
                    model: r.1,
                    upstream_id: r.2,
                    status_code: r.3,
                    streamed: r.4 == 1,
                    tokens: (r.5, r.6, r.7, r.8),
                    cost: r.9,
                    estimated: r.10 == 1,
                    error: r.11,
                })
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("usage row never appeared");
}

pub async fn balance_and_held(app: &TestApp, user_id: i64) -> (i64, i64) {
    sqlx::query_as("SELECT balance, held FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

pub fn v1(app: &TestApp, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url(path)).bearer_auth(key)
}

async fn a_streamed_responses_request_passes_through_and_bills_the_reported_usage(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .header("session_id", "sess-1")
        .header("x-codex-turn-metadata", "t1")
        .header("OpenAI-Beta", "responses=experimental")
        .json(&json!({"model": "gpt-5", "stream": true, "input": "say hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("\"delta\":\"Hello fr\""), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");

    let seen = s.mock.last().unwrap();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-secret-1234");
    assert_eq!(seen.headers["session_id"], "sess-1");
    assert_eq!(seen.headers["x-codex-turn-metadata"], "t1");
    assert_eq!(seen.headers["openai-beta"], "responses=experimental");
    // The body (proxy::outgoing, which journals the request as it is sent) goes with its
    // length, as a plain byte body would: not chunked.
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string().as_str());
    assert!(!seen.headers.contains_key("transfer-encoding"));

    let rows = usage_rows(&app, 1).await;
    let row = &rows[0];
    assert_eq!((row.endpoint.as_str(), row.model.as_str(), row.status_code), ("/responses", "gpt-5", 200));
    assert!(row.streamed && !row.estimated && row.error.is_none() && row.upstream_id.is_some());
    assert_eq!(row.tokens, (1000, 200, 300, 100));
    assert_eq!(row.cost, MOCK_COST_MICROS);
    let me = app.get("/api/user/me", &s.user_token).await;
    assert_eq!(me.body["balance"], "9.995975");
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - MOCK_COST_MICROS, 0));
    let spent: i64 = sqlx::query_scalar("SELECT spent FROM api_keys WHERE id = $1")
        .bind(s.key_id)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(spent, MOCK_COST_MICROS);
    app.assert_money_invariants().await;
}

async fn a_non_streamed_responses_request_bills_the_usage_in_the_body(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let resp = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello from the mock upstream.");
    let row = usage_rows(&app, 1).await.remove(0);
    assert!(!row.streamed && !row.estimated);
    assert_eq!(row.tokens, (1000, 200, 300, 100));
    assert_eq!(row.cost, MOCK_COST_MICROS);
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - MOCK_COST_MICROS, 0));
    app.assert_money_invariants().await;
}

async fn streamed_chat_hides_the_usage_chunk_only_when_the_client_did_not_ask_for_it(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let body = json!({"model": "gpt-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = v1(&app, "/v1/chat/completions", &s.key).json(&body).send().await.unwrap().text().await.unwrap();
    let sent: Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "the gateway asks for usage");
    assert!(!text.contains("\"usage\""), "the client did not ask for the usage chunk: {text}");
    assert!(text.contains("\"content\":\"Hello fr\"") && text.ends_with("data: [DONE]\n\n"), "{text}");

    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let text = v1(&app, "/v1/chat/completions", &s.key).json(&asked).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\"usage\":{"), "the client asked for usage: {text}");

    let rows = usage_rows(&app, 2).await;
    for row in &rows {
        assert_eq!(row.endpoint, "/chat/completions");
        assert!(row.streamed && !row.estimated);
        assert_eq!(row.tokens, (1000, 200, 300, 100));
        assert_eq!(row.cost, MOCK_COST_MICROS);
    }
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - 2 * MOCK_COST_MICROS, 0));
    app.assert_money_invariants().await;
}

async fn non_streamed_chat_is_billed_from_its_usage(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let resp = v1(&app, "/v1/chat/completions", &s.key)
        .json(&json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock upstream.");
    let row = usage_rows(&app, 1).await.remove(0);
    assert_eq!(row.tokens, (1000, 200, 300, 100));
    assert_eq!(row.cost, MOCK_COST_MICROS);
    app.assert_money_invariants().await;
}

async fn chunks_reach_the_client_before_the_upstream_finishes(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let s = setup(&app, MockOptions { gate: Some(gate.clone()), ..MockOptions::default() }, Some("10")).await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the first event arrives while the upstream is still holding the stream")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    let none_yet: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(none_yet, 0, "nothing is settled while the stream is open");
    gate.add_permits(1);
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("response.completed"));
    assert_eq!(usage_rows(&app, 1).await[0].cost, MOCK_COST_MICROS);
    app.assert_money_invariants().await;
}

/// A per-event delay on the way through (buffering, or Nagle's algorithm holding each
/// small write for the client's delayed ACK, ~40 ms on Linux) would turn 24 events
/// 2 ms apart (~50 ms) into a second or more. Measured here: 85-100 ms in a debug
/// build; the bound leaves room for a loaded machine. (On this loopback Nagle does not
/// show between the gateway and this client even without TCP_NODELAY; the gateway
/// sets it on every client connection anyway, as SSE writes are small.)
async fn a_stream_of_small_events_is_not_slowed_down_per_event(app: TestApp) {
    let options = MockOptions { delay: std::time::Duration::from_millis(2), chunks: 24, ..MockOptions::default() };
    let s = setup(&app, options, Some("10")).await;
    let request =
        || v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "stream": true, "input": "hi"})).send();
    request().await.unwrap().bytes().await.unwrap(); // warm connections and the key cache
    let started = std::time::Instant::now();
    let mut stream = request().await.unwrap().bytes_stream();
    let mut events = 0;
    while let Some(chunk) = stream.next().await {
        events += String::from_utf8_lossy(&chunk.unwrap()).matches("\n\n").count();
    }
    let elapsed = started.elapsed();
    assert!(events >= 20, "{events} events");
    println!("STREAM|events={events}|elapsed_ms={}", elapsed.as_millis());
    assert!(elapsed < std::time::Duration::from_millis(500), "the stream took {elapsed:?}");
    usage_rows(&app, 2).await;
    app.assert_money_invariants().await;
}

/// A user with headroom has their next request admitted on the instance's hint and
/// forwarded at once. Suspending the account through the gateway drops the hint, so
/// the next request is admitted first and refused before anything goes upstream.
async fn a_suspension_takes_effect_before_the_next_request_goes_upstream(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let call = || v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send();
    assert_eq!(call().await.unwrap().status(), StatusCode::OK); // leaves headroom for the next one
    usage_rows(&app, 1).await;
    let suspended =
        app.patch(&format!("/api/admin/users/{}", s.user_id), &s.admin, json!({"status": "suspended"})).await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.text);
    let refused = call().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "account_suspended");
    assert_eq!(s.mock.requests(), 1, "the refused request never went upstream");
    app.wait_until_settled().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(app.db.pool()).await.unwrap();
    let holds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!((rows, holds), (1, 0));
    app.assert_money_invariants().await;
}

/// The bound of admission on a hint: a change the instance was not told about (here
/// written straight to the database, as another instance would before its notice
/// arrives) is seen when the request's admission commits. The request, already
/// served, is held and charged like any other; the hint is dropped, so the next
/// request is admitted first and refused.
async fn a_request_served_on_a_stale_hint_is_charged_and_the_next_one_refused(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let call = || v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send();
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    usage_rows(&app, 1).await;
    sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1")
        .bind(s.user_id)
        .execute(app.db.pool())
        .await
        .unwrap();
    assert_eq!(call().await.unwrap().status(), StatusCode::OK, "admitted on the hint");
    app.wait_until_settled().await;
    let rows = usage_rows(&app, 2).await;
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - rows[0].cost - rows[1].cost, 0));
    let refused = call().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.mock.requests(), 2, "the third request never went upstream");
    app.assert_money_invariants().await;
}

async fn a_failing_upstream_is_skipped_before_the_first_byte_and_marked_unhealthy(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let broken =
        mock(MockOptions { fault: Some(codex_gateway::domain::proxy::mock::Fault::Fail500), ..MockOptions::default() })
            .await;
    let broken_id = add_upstream(&app, &s.admin, "broken", &broken, 10).await;
    for round in 1..=4 {
        let resp = v1(&app, "/v1/responses", &s.key)
            .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        assert!(resp.text().await.unwrap().contains("response.completed"));
    }
    // Three failures make it unhealthy; the fourth request goes straight to the good one.
    assert_eq!(broken.requests(), 3);
    assert_eq!(s.mock.requests(), 4);
    let rows = usage_rows(&app, 4).await;
    assert!(rows.iter().all(|r| r.upstream_id != Some(broken_id) && r.cost == MOCK_COST_MICROS));
    let view = app.get(&format!("/api/admin/upstreams/{broken_id}"), &s.admin).await;
    assert_eq!(view.body["healthy"], false);
    assert_eq!(view.body["consecutive_failures"], 3);
    assert!(view.body["last_error"].as_str().unwrap().contains("500"));
    // Its /models answers, so the probe brings it back.
    let recovered = codex_gateway::runtime::jobs::probe_upstreams(&app.state).await.unwrap();
    assert_eq!(recovered, 1);
    let view = app.get(&format!("/api/admin/upstreams/{broken_id}"), &s.admin).await;
    assert_eq!((view.body["healthy"].clone(), view.body["consecutive_failures"].clone()), (json!(true), json!(0)));
    app.assert_money_invariants().await;
}

async fn an_upstream_dying_mid_stream_is_billed_on_an_estimate_without_retry(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let spare = mock(MockOptions::default()).await;
    add_upstream(&app, &s.admin, "spare", &spare, -1).await;
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let request_bytes = serde_json::to_vec(&body).unwrap().len() as i64;
    let resp = v1(&app, "/v1/responses", &s.key).header("x-mock-fault", "die").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut received = Vec::new();
    let mut broke = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received.extend_from_slice(&c),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the client sees the stream break");
    assert!(String::from_utf8_lossy(&received).contains("\"delta\":\"Hello fr\""));
    assert_eq!((s.mock.requests(), spare.requests()), (1, 0), "no retry once streaming started");
    let row = usage_rows(&app, 1).await.remove(0);
    assert!(row.estimated);
    assert!(row.error.as_deref().unwrap().contains("upstream"), "{:?}", row.error);
    // Estimate: input = ceil(request bytes / 4); output = ceil("Hello fr" (8 bytes) / 4) = 2.
    assert_eq!(row.tokens, ((request_bytes + 3) / 4, 0, 2, 0));
    let expected = ((request_bytes + 3) / 4 * 1_250_000 + 2 * 10_000_000 + 999_999) / 1_000_000;
    assert_eq!(row.cost, expected);
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - expected, 0));
    app.assert_money_invariants().await;
}

async fn a_client_disconnecting_mid_stream_is_still_billed(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let options = MockOptions {
        gate: Some(gate.clone()),
        chunks: 40,
        delay: std::time::Duration::from_millis(20),
        response_bytes: 400,
        ..MockOptions::default()
    };
    let s = setup(&app, options, Some("10")).await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    drop(stream);
    gate.add_permits(1);
    let row = usage_rows(&app, 1).await.remove(0);
    assert!(row.error.as_deref().unwrap().contains("client disconnected"), "{:?}", row.error);
    assert!(row.estimated, "usage never arrived");
    assert!(row.cost > 0);
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - row.cost, 0));
    app.assert_money_invariants().await;
}

pub fn assert_openai_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
}

async fn missing_bad_and_revoked_keys_get_openai_shaped_401s(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let body = json!({"model": "gpt-5", "input": "hi"});
    let none = app.client.post(app.url("/v1/responses")).json(&body).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_openai_error(&none.json().await.unwrap(), "missing_api_key");
    let bad = v1(&app, "/v1/responses", "sk-not-a-real-key").json(&body).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_openai_error(&bad.json().await.unwrap(), "invalid_api_key");
    let revoked = app.delete(&format!("/api/user/keys/{}", s.key_id), &s.user_token).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert_openai_error(&after.json().await.unwrap(), "api_key_revoked");
    let models = app.client.get(app.url("/v1/models")).bearer_auth("sk-nope").send().await.unwrap();
    assert_eq!(models.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.mock.requests(), 0);
}

async fn unpriced_models_and_malformed_bodies_are_refused_before_forwarding(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let unknown =
        v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-9-ultra", "input": "hi"})).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.unwrap();
    assert_openai_error(&body, "model_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9-ultra"));
    let broken = v1(&app, "/v1/chat/completions", &s.key).body("{\"model\": ").send().await.unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert_openai_error(&broken.json().await.unwrap(), "invalid_json");
    let no_model = v1(&app, "/v1/chat/completions", &s.key).json(&json!({"messages": []})).send().await.unwrap();
    assert_eq!(no_model.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.mock.requests(), 0);
    let none: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(none, 0);
    app.assert_money_invariants().await;
}

async fn a_user_who_cannot_pay_is_refused_before_anything_is_forwarded(app: TestApp) {
    let s = setup(&app, MockOptions::default(), None).await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    // The usage-limit shape the Codex CLI does not retry; no window resets it (only a
    // top-up does), so resets_at is null.
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("x-codex-promo-message").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_openai_error(&body, "insufficient_balance");
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    assert_eq!(body["error"]["resets_at"], Value::Null);
    assert_eq!(s.mock.requests(), 0, "the upstream received nothing");
    assert_eq!(balance_and_held(&app, s.user_id).await, (0, 0));
    app.assert_money_invariants().await;
}
