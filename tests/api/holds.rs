//! Holds that fit real use (issue 22): the hold follows what the model's requests
//! really produce, a refusal says what was reserved and what to do, and 30 parallel
//! streams never leave a user owing more than Σ(cost − hold) — on both databases.

use std::sync::Arc;

use codex_gateway::domain::billing::holds::{HoldSizes, MIN_SAMPLES};
use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{setup, usage_rows, v1};

on_both_databases!(
    the_hold_follows_what_the_model_really_produces,
    thirty_parallel_streams_owe_at_most_the_sum_of_cost_minus_hold,
);

/// The mock's usage (1,000 input of which 200 cached, 300 output) at gpt-5's price.
const COST_MICROS: i64 = 4_025;

async fn balance_of(app: &TestApp, user_id: i64) -> i64 {
    sqlx::query_scalar("SELECT balance FROM users WHERE id = $1").bind(user_id).fetch_one(app.db.pool()).await.unwrap()
}

async fn the_hold_follows_what_the_model_really_produces(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("0.01")).await;
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    // Nothing learned yet: the default 4,096 output tokens (0.04 USD) cannot be held.
    let refused = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    // The Responses API answers a refusal for money in Codex's usage-limit shape (429).
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let text = refused.text().await.unwrap();
    assert!(text.contains("insufficient_balance"), "{text}");
    assert!(text.contains("reserves 0.04") && text.contains("leaves 0.01 USD"), "says why, with the figures: {text}");
    assert!(text.contains("max_output_tokens") && text.contains("top up"), "says what to do: {text}");
    // Enough that the previous request's hold (0.04, its settlement may still be in the
    // writer's batch when the next request arrives) never blocks the next one.
    app.fund(&s.admin, s.user_id, "0.39").await;
    for _ in 0..MIN_SAMPLES {
        let r = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap();
    }
    usage_rows(&app, MIN_SAMPLES).await;
    assert_eq!(app.state.billing.hold_sizes().learned("gpt-5"), Some(300), "the p95 of the mock's 300 tokens");
    // Down to 0.01 again: a request now holds ~300 output tokens and is served.
    let left = 400_000 - MIN_SAMPLES as i64 * COST_MICROS;
    let down = codex_gateway::foundation::money::Money::from_micros(10_000 - left);
    app.fund(&s.admin, s.user_id, &down.to_string()).await;
    assert_eq!(balance_of(&app, s.user_id).await, 10_000);
    let served = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK, "0.01 left pays a typical request");
    served.text().await.unwrap();
    usage_rows(&app, MIN_SAMPLES + 1).await;
    // A request's own max_output_tokens bounds its hold; a restarted instance learns
    // the same figure from the usage log.
    let warmed = HoldSizes::default();
    assert_eq!(warmed.warm(&app.db).await.unwrap(), MIN_SAMPLES + 1);
    assert_eq!(warmed.learned("gpt-5"), Some(300));
    app.assert_money_invariants().await;
    let figures = [("requests", MIN_SAMPLES as u64 + 2), ("refused", 1), ("learned_output_tokens", 300)];
    crate::helpers::report("holds_learned_from_use", app.backend, &figures, 0);
}

async fn thirty_parallel_streams_owe_at_most_the_sum_of_cost_minus_hold(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let s = setup(&app, MockOptions { gate: Some(gate.clone()), ..MockOptions::default() }, Some("0.06")).await;
    // What this instance learned of gpt-5: 300 output tokens per request.
    for _ in 0..MIN_SAMPLES {
        app.state.billing.hold_sizes().observe("gpt-5", 300);
    }
    let cap = json!({"rate_limits": {"user_max_concurrent_streams": 32}});
    let r = app.put("/api/admin/settings", &s.admin, cap).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app = Arc::new(app);
    let mut sends = Vec::new();
    for _ in 0..30 {
        let (app, key) = (app.clone(), s.key.clone());
        sends.push(tokio::spawn(async move {
            let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
            v1(&app, "/v1/responses", &key).json(&body).send().await.unwrap()
        }));
    }
    let mut open = Vec::new();
    let mut refused = 0u64;
    for send in sends {
        let r = send.await.unwrap();
        match r.status() {
            StatusCode::OK => open.push(r),
            status => {
                let text = r.text().await.unwrap();
                assert!(status == StatusCode::TOO_MANY_REQUESTS && text.contains("insufficient_balance"), "{text}");
                refused += 1;
            }
        }
    }
    let n = open.len() as i64;
    assert!(n > 0 && refused > 0, "the balance pays some holds, not all: {n} served, {refused} refused");
    // Every admitted stream holds money now (holds admitted on a hint are written while
    // the stream runs: poll until all are there).
    let mut held = (0i64, 0i64);
    for _ in 0..3000 {
        held =
            sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM holds WHERE user_id = $1")
                .bind(s.user_id)
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        if held.0 == n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(held.0, n, "one hold per running stream");
    assert!(n <= 32, "never more streams than the cap");
    // Requests admitted on this instance's headroom hint are forced (README, Billing):
    // their holds may pass the balance by what was admitted before the next commit.
    let hint_excess = (held.1 - 60_000).max(0);
    gate.add_permits(1000);
    for r in open {
        r.text().await.unwrap();
    }
    usage_rows(&app, n as usize).await;
    app.wait_until_settled().await;
    let balance = balance_of(&app, s.user_id).await;
    assert_eq!(balance, 60_000 - n * COST_MICROS, "each served stream charged once");
    let debt = (-balance).max(0);
    let bound = n * COST_MICROS - held.1;
    assert!(debt <= bound + hint_excess, "debt {debt} ≤ Σ(cost − hold) {bound} + hint excess {hint_excess}");
    let figures = [
        ("requests", 30),
        ("served", n as u64),
        ("refused", refused),
        ("debt_micros", debt as u64),
        ("bound_micros", bound as u64),
        ("hint_excess_micros", hint_excess as u64),
    ];
    crate::helpers::report("holds_parallel_debt_bound", app.backend, &figures, 0);
    app.assert_money_invariants().await;
}
