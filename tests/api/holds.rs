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
    thirty_tiny_streams_owe_at_most_the_cap_times_cost_minus_the_floor_hold,
    a_dead_neighbours_stale_hold_is_charged_from_its_journal_not_released_uncharged,
);

/// The mock's usage (1,000 input of which 200 cached, 300 output) at gpt-5's price.
const COST_MICROS: i64 = 4_025;

/// The hold floor the tiny-limit test sets for gpt-5 (the general default is 256 too).
const FLOOR_TOKENS: i64 = 256;

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
    // The settling task learns the output after its commit (the row may be seen first).
    for _ in 0..500 {
        if app.state.billing.hold_sizes().learned("gpt-5").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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

/// What 30 parallel gated streams came to.
struct Parallel {
    served: i64,
    refused: u64,
    /// Σ of the holds of the running streams, read while all of them were held.
    held: i64,
    /// The balance once every stream was released and settled.
    balance: i64,
}

/// Sends 30 streams at once against a gated mock, waits until every admitted one
/// holds money, reads the holds, then releases and settles them all.
async fn thirty_gated_streams(
    app: Arc<TestApp>,
    s: &crate::proxy::Setup,
    gate: &Semaphore,
    body: serde_json::Value,
) -> Parallel {
    let mut sends = Vec::new();
    for _ in 0..30 {
        let (app, key, body) = (app.clone(), s.key.clone(), body.clone());
        sends.push(tokio::spawn(async move { v1(&app, "/v1/responses", &key).json(&body).send().await.unwrap() }));
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
    gate.add_permits(1000);
    for r in open {
        r.text().await.unwrap();
    }
    usage_rows(&app, n as usize).await;
    app.wait_until_settled().await;
    Parallel { served: n, refused, held: held.1, balance: balance_of(&app, s.user_id).await }
}

/// Issue 22: Σ(cost − hold) bounds the debt, and requests admitted on this instance's
/// headroom hint add nothing to it: a waiting admission counts the holds taken on the
/// hint and not yet written, and the hint counts the waiting admissions. Before, the
/// two could pass the funds together (measured: 22 holds of 0.003014 on 0.06, 0.006308
/// above the funds).
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
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let p = thirty_gated_streams(app.clone(), &s, &gate, body).await;
    let n = p.served;
    // The holds never passed the funds: nothing was admitted on the hint beyond them.
    let hint_excess = (p.held - 60_000).max(0);
    assert_eq!(hint_excess, 0, "holds {} on funds of 60000: the hint admitted past them", p.held);
    assert_eq!(p.balance, 60_000 - n * COST_MICROS, "each served stream charged once");
    let debt = (-p.balance).max(0);
    let bound = n * COST_MICROS - p.held;
    assert!(debt <= bound, "debt {debt} ≤ Σ(cost − hold) {bound}");
    let figures = [
        ("requests", 30),
        ("served", n as u64),
        ("refused", p.refused),
        ("debt_micros", debt as u64),
        ("bound_micros", bound as u64),
        ("hint_excess_micros", hint_excess as u64),
    ];
    crate::helpers::report("holds_parallel_debt_bound", app.backend, &figures, 0);
    app.assert_all_invariants().await;
}

/// Issue 22: clients that send a tiny `max_output_tokens` cannot shrink the hold below
/// the model's floor, so under the default per-user stream cap C (32) the debt is at
/// most C × (cost − hold) with hold ≥ the floor's price — here against an upstream that
/// ignores the limit (300 output tokens for a request that asked for 16), the worst case.
async fn thirty_tiny_streams_owe_at_most_the_cap_times_cost_minus_the_floor_hold(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let s = setup(&app, MockOptions { gate: Some(gate.clone()), ..MockOptions::default() }, Some("0.05")).await;
    for _ in 0..MIN_SAMPLES {
        app.state.billing.hold_sizes().observe("gpt-5", 300);
    }
    let settings = app.get("/api/admin/settings", &s.admin).await;
    let cap = settings.body["rate_limits"]["user_max_concurrent_streams"].as_i64();
    assert_eq!(cap, Some(32), "the default per-user stream cap: {}", settings.text);
    let floors = json!({"hold_floors": [{"model": "gpt-5", "output_tokens": FLOOR_TOKENS}]});
    let r = app.put("/api/admin/settings", &s.admin, floors).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app = Arc::new(app);
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi", "max_output_tokens": 16});
    let p = thirty_gated_streams(app.clone(), &s, &gate, body).await;
    let n = p.served;
    let hold = p.held / n;
    assert_eq!(hold * n, p.held, "every stream holds the same");
    // gpt-5 output at 10 USD per 1M tokens: 10 micro-USD a token.
    assert!(hold >= FLOOR_TOKENS * 10, "the floor's 256 tokens are held, not the 16 asked for: {hold}");
    assert!(p.held <= 50_000, "the holds never pass the funds: {}", p.held);
    assert_eq!(p.balance, 50_000 - n * COST_MICROS, "each served stream charged once");
    let debt = (-p.balance).max(0);
    let stated = 32 * (COST_MICROS - hold);
    assert!(debt <= n * COST_MICROS - p.held, "debt {debt} ≤ Σ(cost − hold)");
    assert!(debt <= stated, "debt {debt} ≤ C × (cost − hold) = {stated}");
    let figures = [
        ("requests", 30),
        ("served", n as u64),
        ("refused", p.refused),
        ("hold_micros", hold as u64),
        ("debt_micros", debt as u64),
        ("stated_bound_micros", stated as u64),
    ];
    crate::helpers::report("holds_tiny_max_output_debt_bound", app.backend, &figures, 0);
    app.assert_all_invariants().await;
}

/// Issue 22: the stale hold of an instance that died and never came back is settled
/// from what it journalled, by the hold expiry job of a running instance sharing the
/// data directory — not released uncharged after 6 h (before, only a start replayed
/// dead segments). A segment still empty (a neighbour starting) is left alone.
async fn a_dead_neighbours_stale_hold_is_charged_from_its_journal_not_released_uncharged(app: TestApp) {
    use codex_gateway::domain::billing::{self, AdmissionRequest};
    use codex_gateway::foundation::money::Money;
    let s = setup(&app, MockOptions::default(), Some("1.00")).await;
    let request_id = "req_dead_neighbour_1";
    // The neighbour admitted the request (its hold is written) and streamed 1,200 bytes
    // of text before it was killed.
    let hold = AdmissionRequest {
        request_id: Some(request_id.into()),
        user_id: s.user_id,
        api_key_id: s.key_id,
        hold: Money::from_micros(50_000),
    };
    billing::admit(app.state.env(), &hold).await.unwrap();
    let admitted_at = codex_gateway::foundation::clock::to_micros(app.state.now());
    let forwarded = json!({"forwarded": {
        "request_id": request_id, "user_id": s.user_id, "api_key_id": s.key_id, "admitted_at": admitted_at,
        "endpoint": "/v1/responses", "model": "gpt-5", "upstream_id": null, "streamed": true,
        "request_bytes": 400, "price_input": 1_250_000, "price_cached": 125_000, "price_output": 10_000_000,
        "markup": 1_000_000}});
    let progress = json!({"progress": {"id": request_id, "text_bytes": 1200}});
    // A second request was killed between its hold's commit and its `forwarded` line:
    // nothing of it reached an upstream.
    let unforwarded = "req_dead_neighbour_2";
    billing::admit(app.state.env(), &AdmissionRequest { request_id: Some(unforwarded.into()), ..hold.clone() })
        .await
        .unwrap();
    let admitting = |id: &str| json!({"admitting": {"id": id, "user_id": s.user_id}});
    let dir = app.state.config.data_dir.join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let dead = dir.join("20260115T040000-1-00000000000dead1.journal");
    std::fs::write(&dead, format!("{}\n{forwarded}\n{progress}\n{}\n", admitting(request_id), admitting(unforwarded)))
        .unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM holds").await, 2);
    let starting = dir.join("20260115T040000-2-0000000000000002.journal");
    std::fs::write(&starting, "").unwrap();
    app.clock.advance(chrono::Duration::hours(billing::HOLD_LIFETIME_HOURS));
    let summary = codex_gateway::runtime::jobs::run_once(&app.state, "release_expired_holds").await.unwrap();
    assert!(summary.contains("replayed 1 dead journal segments (1 requests charged, 1 on the estimate"), "{summary}");
    assert!(summary.contains("; 1 holds of requests never forwarded released)"), "{summary}");
    assert!(summary.ends_with("released 0 holds"), "nothing left to release uncharged: {summary}");
    assert_eq!(app.count("SELECT COUNT(*) FROM holds").await, 0, "both holds settled or released");
    let unforwarded_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs WHERE request_id = $1")
        .bind(unforwarded)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(unforwarded_rows, 0, "a request never forwarded is not charged");
    // The documented estimate: 400 bytes / 4 = 100 input tokens × 1.25 + 1,200 / 4 = 300
    // output tokens × 10.00 per 1M = 3,125 micro-USD.
    let (cost, estimated): (i64, i64) = sqlx::query_as("SELECT cost, estimated FROM usage_logs WHERE request_id = $1")
        .bind(request_id)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!((cost, estimated), (3_125, 1), "charged on the estimate, marked so");
    assert_eq!(balance_of(&app, s.user_id).await, 1_000_000 - 3_125);
    assert!(!dead.exists(), "a replayed segment is removed");
    assert!(starting.exists(), "an empty segment (an instance starting) is not touched");
    let usage = app.get("/api/user/usage", &s.user_token).await;
    assert!(usage.text.contains(request_id), "the user sees the charge: {}", usage.text);
    app.assert_all_invariants().await;
    let figures = [
        ("requests", 2),
        ("faults", 1),
        ("charged_from_journal", 1),
        ("never_forwarded_released", 1),
        ("released_uncharged_by_expiry", 0),
    ];
    crate::helpers::report("stale_hold_of_dead_instance", app.backend, &figures, 0);
}
