//! Upstream faults and concurrent writers through the real proxy: hostile or broken
//! event streams, a stream that never ends, and many requests racing admin balance
//! changes — no hang, no error reaching the user that the user did not cause, and
//! every invariant intact.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use codex_gateway::domain::proxy::metering::MAX_REPORTED_TOKENS;
use codex_gateway::domain::proxy::mock::MockOptions;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{report, spawn_app_with, Backend, TestApp};
use crate::on_both_databases;
use crate::proxy::{balance_and_held, setup, v1};

on_both_databases!(
    hostile_event_streams_pass_through_untouched_and_are_billed_within_bounds,
    fifty_parallel_requests_racing_admin_adjustments_all_succeed_and_add_up,
);

/// What the scripted upstream answers: chunks, then either the end or silence forever.
#[derive(Clone)]
struct Script {
    chunks: Vec<Vec<u8>>,
    hang: bool,
}

/// An upstream whose answers are chosen by the `x-script` request header.
async fn scripted_upstream(scripts: Vec<Script>) -> String {
    let scripts = std::sync::Arc::new(scripts);
    let handler = move |headers: HeaderMap| {
        let scripts = scripts.clone();
        async move {
            let i: usize =
                headers.get("x-script").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
            let script = scripts[i].clone();
            let chunks =
                futures::stream::iter(script.chunks.into_iter().map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
            let body = if script.hang {
                Body::from_stream(chunks.chain(futures::stream::pending()))
            } else {
                Body::from_stream(chunks)
            };
            Response::builder().header("content-type", "text/event-stream").body(body).unwrap()
        }
    };
    let router = Router::new().route("/v1/responses", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    format!("http://{addr}/v1/")
}

async fn use_only(app: &TestApp, admin: &str, base_url: &str) {
    let list = app.get("/api/admin/upstreams", admin).await;
    for u in list.body["items"].as_array().or_else(|| list.body.as_array()).cloned().unwrap_or_default() {
        let r = app.delete(&format!("/api/admin/upstreams/{}", u["id"]), admin).await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let r = app
        .post(
            "/api/admin/upstreams",
            admin,
            json!({"name": "scripted", "base_url": base_url, "api_key": "sk-upstream-scripted-9999", "priority": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

fn completed(usage: &str) -> Vec<u8> {
    format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"usage\":{usage}}}}}\n\n"
    )
    .into_bytes()
}

fn hostile_scripts() -> Vec<Script> {
    let delta =
        b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n"
            .to_vec();
    let ok = |chunks: Vec<Vec<u8>>| Script { chunks, hang: false };
    vec![
        // 0: not JSON at all.
        ok(vec![b"data: {{{not json\n\ndata: \xff\xfe\x00binary\n\n".to_vec(), delta.clone()]),
        // 1: completed without usage.
        ok(vec![delta.clone(), b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n".to_vec()]),
        // 2: usage fields of the wrong type.
        ok(vec![delta.clone(), completed(r#"{"input_tokens":"1000","output_tokens":[3]}"#)]),
        // 3: an empty body.
        ok(vec![]),
        // 4: negative counts.
        ok(vec![completed(r#"{"input_tokens":-5000000,"output_tokens":-1}"#)]),
        // 5: CR-only line endings and no final blank line.
        ok(vec![b"event: response.output_text.delta\rdata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\r\r".to_vec(),
                b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":5}}}".to_vec()]),
        // 6: one 1 MB line that never ends.
        ok(vec![b"data: ".to_vec(), vec![b'x'; 1 << 20]]),
        // 7: two completed events; the last report wins.
        ok(vec![completed(r#"{"input_tokens":1,"output_tokens":1}"#), completed(r#"{"input_tokens":1000,"output_tokens":300}"#)]),
        // 8: a usage-shaped field nested deep in a delta (must not be billed as usage).
        ok(vec![b"data: {\"type\":\"response.output_text.delta\",\"delta\":{\"usage\":{\"input_tokens\":99999999}}}\n\n".to_vec()]),
        // 9 (last: it leaves the user in debt): absurd counts, which would overflow the ledger unclamped.
        ok(vec![completed(r#"{"input_tokens":9223372036854775807,"output_tokens":9223372036854775807,"input_tokens_details":{"cached_tokens":9223372036854775807}}"#)]),
    ]
}

async fn hostile_event_streams_pass_through_untouched_and_are_billed_within_bounds(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("20.00")).await;
    let scripts = hostile_scripts();
    let base = scripted_upstream(scripts.clone()).await;
    use_only(&app, &s.admin, &base).await;
    for (i, script) in scripts.iter().enumerate() {
        let resp = v1(&app, "/v1/responses", &s.key)
            .header("x-script", i.to_string())
            .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "script {i}");
        let got = resp.bytes().await.unwrap();
        assert_eq!(got.to_vec(), script.chunks.concat(), "script {i}: the client gets the upstream's bytes untouched");
        // Settlements run in the background: keep the usage rows in script order.
        app.wait_until_settled().await;
    }
    app.wait_until_settled().await;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT request_id, input_tokens, output_tokens, cached_tokens, cost, estimated FROM usage_logs ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), scripts.len());
    // gpt-5 at list price: the most one request may cost with clamped counts.
    let max_cost = MAX_REPORTED_TOKENS * 12;
    for (i, r) in rows.iter().enumerate() {
        assert!(r.4 >= 0 && r.4 <= max_cost, "script {i}: cost {} out of bounds", r.4);
        assert!(r.1 >= 0 && r.2 >= 0 && r.3 >= 0 && r.3 <= r.1, "script {i}: tokens {r:?}");
    }
    // Untrustworthy reports fall back to the estimate; good ones are taken as sent.
    for i in [0, 1, 2, 3, 6, 8] {
        assert_eq!(rows[i].5, 1, "script {i} is estimated: {:?}", rows[i]);
    }
    assert_eq!((rows[9].1, rows[9].2, rows[9].3), (MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS));
    assert_eq!((rows[4].1, rows[4].2, rows[4].4), (0, 0, 0), "negative counts bill nothing");
    assert_eq!((rows[5].1, rows[5].2, rows[5].5), (10, 5, 0), "an unterminated last event still counts");
    assert_eq!((rows[7].1, rows[7].2), (1000, 300));
    let total: i64 = rows.iter().map(|r| r.4).sum();
    assert_eq!(balance_and_held(&app, s.user_id).await, (20_000_000 - total, 0));
    app.assert_all_invariants().await;
    report(
        "upstream_hostile_sse",
        app.backend,
        &[("requests", scripts.len() as u64), ("bad_inputs", scripts.len() as u64)],
        0,
    );
}

async fn a_stream_that_never_ends_is_cut_and_settled(backend: Backend) {
    let app = spawn_app_with(backend, &[("GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS", "1")]).await;
    let s = setup(&app, MockOptions::default(), Some("20.00")).await;
    let delta =
        b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n";
    let base = scripted_upstream(vec![Script { chunks: vec![delta.to_vec()], hang: true }]).await;
    use_only(&app, &s.admin, &base).await;

    // A patient client: the gateway cuts the stalled stream after the idle timeout.
    let started = std::time::Instant::now();
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], &delta[..]);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the gateway must not hang on a silent upstream");
    assert!(started.elapsed() < Duration::from_secs(8));

    // An impatient client leaves first: settled as a disconnect.
    let resp = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);

    // The gateway learns of the disconnect when its side of the socket closes, a moment
    // after the drop: until then nothing is pending that `wait_until_settled` could see.
    crate::proxy::usage_rows(&app, 2).await;
    app.wait_until_settled().await;
    let rows: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT error, cost FROM usage_logs ORDER BY id").fetch_all(app.db.pool()).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.0.is_some() && r.1 > 0), "{rows:?}");
    assert!(rows.iter().any(|r| r.0.as_deref().unwrap().contains("no data from the upstream")), "{rows:?}");
    assert!(rows.iter().any(|r| r.0.as_deref().unwrap().contains("client disconnected")), "{rows:?}");
    let (_, held) = balance_and_held(&app, s.user_id).await;
    assert_eq!(held, 0, "no hold left hanging");
    app.assert_all_invariants().await;
    report("upstream_never_ends", backend, &[("requests", 2), ("faults", 2)], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_ends_is_cut_and_settled_on_sqlite() {
    a_stream_that_never_ends_is_cut_and_settled(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_ends_is_cut_and_settled_on_postgres() {
    a_stream_that_never_ends_is_cut_and_settled(Backend::Postgres).await;
}

async fn fifty_parallel_requests_racing_admin_adjustments_all_succeed_and_add_up(app: TestApp) {
    let requests = if std::env::var_os("RELIABILITY_LONG").is_some() { 400 } else { 50 };
    let s = setup(&app, MockOptions { chunks: 6, ..MockOptions::default() }, Some("100.00")).await;
    let proxied = futures::future::join_all((0..requests).map(|i| {
        let req = v1(&app, if i % 3 == 0 { "/v1/chat/completions" } else { "/v1/responses" }, &s.key);
        let body = if i % 3 == 0 {
            json!({"model": "gpt-5", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "gpt-5", "stream": i % 2 == 0, "input": "hi"})
        };
        async move {
            let r = req.json(&body).send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            (status, text)
        }
    }));
    let adjust_path = format!("/api/admin/users/{}/balance", s.user_id);
    let adjustments = futures::future::join_all((0..20).map(|i| {
        let amount = if i % 2 == 0 { "1.50" } else { "-0.50" };
        app.post(&adjust_path, &s.admin, json!({"amount": amount, "reason": "race"}))
    }));
    let reads = futures::future::join_all((0..20).map(|_| app.get("/api/user/daily-usage", &s.user_token)));
    let (proxied, adjustments, reads) = tokio::join!(proxied, adjustments, reads);
    let failed: Vec<_> = proxied.iter().filter(|(st, _)| *st != StatusCode::OK).collect();
    assert!(failed.is_empty(), "{} of {requests} failed: {:?}", failed.len(), failed.first());
    assert!(
        adjustments.iter().all(|a| a.status == StatusCode::OK),
        "{:?}",
        adjustments.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    assert!(reads.iter().all(|r| r.status == StatusCode::OK));
    app.wait_until_settled().await;
    let (count, cost): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM usage_logs")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(count, requests as i64, "every request logged once");
    assert_eq!(balance_and_held(&app, s.user_id).await, (100_000_000 + 10_000_000 - cost, 0));
    app.assert_all_invariants().await;
    report("concurrent_writers", app.backend, &[("requests", requests as u64 + 40)], 0);
}
