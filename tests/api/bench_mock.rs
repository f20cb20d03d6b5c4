//! The mock upstream's benchmark aids: per-event send stamps that pass through the
//! gateway untouched, and the request counter the benchmark's billing check compares
//! usage rows with.

use codex_gateway::domain::proxy::mock::MockOptions;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{setup, usage_rows, v1};

on_both_databases!(stamped_events_reach_the_client_with_their_send_times_and_the_mock_counts_requests);

async fn stamped_events_reach_the_client_with_their_send_times_and_the_mock_counts_requests(app: TestApp) {
    let s = setup(&app, MockOptions { stamp: true, ..MockOptions::default() }, Some("10")).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    let r = v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    let stamps: Vec<u128> =
        text.lines().filter_map(|l| l.strip_prefix(": mock-sent-us=")).map(|v| v.parse().unwrap()).collect();
    let events = text.lines().filter(|l| l.starts_with("event: ")).count();
    assert_eq!(stamps.len(), events, "one stamp per event: {text}");
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "stamps in send order");
    assert!(stamps.iter().all(|t| (before..=after).contains(t)), "stamps are wall-clock send times");
    assert!(text.contains("response.completed"));
    assert_eq!(usage_rows(&app, 1).await[0].status_code, 200);

    let stats: serde_json::Value =
        reqwest::get(format!("http://{}/mock/stats", s.mock.addr)).await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests"], json!(1));
}
