//! The gateway when upstreams misbehave: timeouts, client errors, missing usage.

use std::time::Duration;

use codex_gateway::domain::proxy::mock::{Fault, MockOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::on_both_databases;
use crate::proxy::{add_upstream, assert_openai_error, balance_and_held, mock, setup, usage_rows, v1};

on_both_databases!(
    upstream_client_errors_are_passed_through_and_logged_at_no_cost,
    a_stream_that_never_reports_usage_is_billed_on_the_documented_estimate,
    a_client_leaving_before_the_first_byte_still_settles_its_hold,
    bodies_of_several_megabytes_pass_under_the_default_limit,
    a_rate_limited_upstream_is_skipped_before_the_first_byte,
    concurrent_streams_are_each_billed_exactly_once,
);

async fn a_rate_limited_upstream_is_skipped_before_the_first_byte(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let limited = mock(MockOptions { fault: Some(Fault::Fail429), ..MockOptions::default() }).await;
    add_upstream(&app, &s.admin, "limited", &limited, 10).await;
    let resp = v1(&app, "/v1/chat/completions", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!((limited.requests(), s.mock.requests()), (1, 1));
    assert_eq!(usage_rows(&app, 1).await[0].cost, 4_025);
    app.assert_money_invariants().await;
}

async fn concurrent_streams_are_each_billed_exactly_once(app: TestApp) {
    let s = setup(&app, MockOptions { chunks: 10, ..MockOptions::default() }, Some("10")).await;
    let requests = (0..16).map(|i| {
        let path = if i % 2 == 0 { "/v1/responses" } else { "/v1/chat/completions" };
        let body =
            json!({"model": "gpt-5", "stream": true, "input": "hi", "messages": [{"role": "user", "content": "hi"}]});
        let request = v1(&app, path, &s.key).json(&body);
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.bytes().await.unwrap()
        }
    });
    futures::future::join_all(requests).await;
    let rows = usage_rows(&app, 16).await;
    assert!(rows.iter().all(|r| r.cost == 4_025 && !r.estimated));
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - 16 * 4_025, 0));
    app.assert_money_invariants().await;
}

async fn bodies_of_several_megabytes_pass_under_the_default_limit(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let big = json!({"model": "gpt-5", "input": "x".repeat(3 * 1024 * 1024)});
    let resp = v1(&app, "/v1/responses", &s.key).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    assert_eq!(s.mock.last().unwrap().body.len(), serde_json::to_vec(&big).unwrap().len(), "forwarded whole");
    assert_eq!(usage_rows(&app, 1).await[0].cost, 4_025);
    app.assert_money_invariants().await;
}

async fn upstream_client_errors_are_passed_through_and_logged_at_no_cost(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let resp = v1(&app, "/v1/responses", &s.key)
        .header("x-mock-fault", "fail-400")
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock upstream refuses this request", "the upstream's own error");
    assert_eq!(s.mock.requests(), 1, "a client error is not retried");
    let row = usage_rows(&app, 1).await.remove(0);
    assert_eq!((row.status_code, row.cost, row.tokens), (400, 0, (0, 0, 0, 0)));
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000, 0), "hold released, nothing charged");
    app.assert_money_invariants().await;
}

async fn a_stream_that_never_reports_usage_is_billed_on_the_documented_estimate(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    for path in ["/v1/responses", "/v1/chat/completions"] {
        let body = if path == "/v1/responses" {
            json!({"model": "gpt-5", "stream": true, "input": "hi"})
        } else {
            json!({"model": "gpt-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        };
        let resp = v1(&app, path, &s.key).header("x-mock-fault", "no-usage").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.unwrap();
    }
    let rows = usage_rows(&app, 2).await;
    let responses_bytes = serde_json::to_vec(&json!({"model": "gpt-5", "stream": true, "input": "hi"})).unwrap().len();
    for row in &rows {
        assert!(row.estimated && row.error.is_none(), "{row:?}");
        // Output: the 29 bytes of "Hello from the mock upstream." → ceil(29 / 4) = 8 tokens.
        assert_eq!(row.tokens.2, 8);
    }
    // Settlements commit in their own tasks, so rows may land in either order.
    let responses_row = rows.iter().find(|r| r.endpoint == "/responses").expect("a /responses row");
    assert_eq!(responses_row.tokens.0, (responses_bytes as i64 + 3) / 4);
    let total: i64 = rows.iter().map(|r| r.cost).sum();
    assert!(total > 0);
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - total, 0));
    app.assert_money_invariants().await;
}

async fn a_client_leaving_before_the_first_byte_still_settles_its_hold(app: TestApp) {
    let slow = MockOptions { initial_delay: Duration::from_millis(600), ..MockOptions::default() };
    let s = setup(&app, slow, Some("10")).await;
    let request = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}));
    let client = tokio::spawn(request.send());
    // The client gives up once the upstream has the request, before its first byte (a
    // fixed client timeout could fire before the gateway forwarded on a loaded machine).
    for _ in 0..1000 {
        if s.mock.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.mock.requests(), 1, "the request reached the upstream");
    client.abort();
    assert!(client.await.is_err_and(|e| e.is_cancelled()), "the client gave up before the upstream answered");
    let row = usage_rows(&app, 1).await.remove(0);
    assert_eq!(row.status_code, 200, "the upstream did answer");
    assert!(row.error.as_deref().unwrap().contains("client disconnected"), "{row:?}");
    assert!(row.estimated && row.tokens.2 == 0, "nothing was streamed: {row:?}");
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - row.cost, 0), "hold released");
    app.assert_money_invariants().await;
}

async fn a_slow_upstream_is_abandoned_at_the_first_byte_timeout(backend: Backend) {
    let app = spawn_app_with(backend, &[("GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", "1")]).await;
    let slow = MockOptions { initial_delay: Duration::from_secs(3), ..MockOptions::default() };
    let s = setup(&app, slow, Some("10")).await;
    // Only the slow upstream: 504 in the OpenAI shape, logged at no cost.
    let resp = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    let row = usage_rows(&app, 1).await.remove(0);
    assert_eq!((row.status_code, row.cost), (504, 0));
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000, 0));

    // A fast upstream at a lower priority takes over after the timeout.
    let fast = mock(MockOptions::default()).await;
    let fast_id = add_upstream(&app, &s.admin, "fast", &fast, -5).await;
    let resp = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    let rows = usage_rows(&app, 2).await;
    assert_eq!((rows[1].upstream_id, rows[1].cost), (Some(fast_id), 4_025));
    app.assert_money_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_abandoned_at_the_first_byte_timeout_on_sqlite() {
    a_slow_upstream_is_abandoned_at_the_first_byte_timeout(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_abandoned_at_the_first_byte_timeout_on_postgres() {
    a_slow_upstream_is_abandoned_at_the_first_byte_timeout(Backend::Postgres).await;
}

async fn oversized_bodies_get_a_413(backend: Backend) {
    let app = spawn_app_with(backend, &[("GATEWAY_MAX_BODY_BYTES", "2000")]).await;
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let huge = json!({"model": "gpt-5", "input": "x".repeat(5000)});
    let resp = v1(&app, "/v1/responses", &s.key).json(&huge).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&resp.json().await.unwrap(), "request_too_large");
    // Without a Content-Length (chunked), the limit still applies while reading.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 500])));
    let resp = v1(&app, "/v1/responses", &s.key).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.mock.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_413_on_sqlite() {
    oversized_bodies_get_a_413(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_413_on_postgres() {
    oversized_bodies_get_a_413(Backend::Postgres).await;
}
