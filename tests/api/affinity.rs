//! Session affinity, measured: two upstreams that (like a provider's prompt cache)
//! report cached input only for a prefix they saw before; 20 sessions × 10 turns with
//! a growing conversation, once keyed by `session_id` and once with no key. Prints the
//! cached-input share and the bill of each run (the README's figures) and checks that
//! each bill is exactly the sum of its usage rows' prices.

use codex_gateway::domain::proxy::mock::{Fault, MockHandle, MockOptions};
use codex_gateway::domain::proxy::pricing::{self, Usage};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{add_upstream, balance_and_held, mock};

on_both_databases!(
    affinity_keeps_each_session_on_one_upstream_and_its_cache_warm,
    a_session_whose_upstream_fails_before_the_first_byte_fails_over,
);

const SESSIONS: usize = 20;
const TURNS: usize = 10;

/// One run's totals from its usage rows.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    input: i64,
    cached: i64,
    cost: i64,
    same_upstream_turns: usize,
}

/// A user message of about 1 KiB (a Codex turn carries file contents and tool output).
fn user_turn(session: &str, turn: usize) -> Value {
    let text = format!("{session} turn {turn}: {}", "context line of a coding task. ".repeat(32));
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

fn assistant_turn(text: &str) -> Value {
    json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
}

async fn run(app: &TestApp, key: &str, label: &str, keyed: bool) -> Totals {
    let mut request_ids: Vec<Vec<String>> = Vec::new();
    for s in 0..SESSIONS {
        let session = format!("{label}-session-{s}");
        let mut input = Vec::new();
        let mut ids = Vec::new();
        for t in 0..TURNS {
            input.push(user_turn(&session, t));
            let mut request = app.client.post(app.url("/v1/responses")).bearer_auth(key);
            if keyed {
                request = request.header("session_id", &session);
            }
            let resp = request.json(&json!({"model": "gpt-5", "input": input})).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            ids.push(resp.headers()["x-gateway-request-id"].to_str().unwrap().to_string());
            let body: Value = resp.json().await.unwrap();
            input.push(assistant_turn(body["output"][0]["content"][0]["text"].as_str().unwrap_or_default()));
        }
        request_ids.push(ids);
    }
    app.wait_until_settled().await;
    let price = app.state.catalog.get().await.prices.get("gpt-5").cloned().unwrap();
    let markup = app.state.settings.get().await.unwrap().markup;
    let mut totals = Totals::default();
    for ids in &request_ids {
        let mut previous_upstream = None;
        for id in ids {
            let (input, cached, output, cost, upstream): (i64, i64, i64, i64, Option<i64>) = sqlx::query_as(
                "SELECT input_tokens, cached_tokens, output_tokens, cost, upstream_id FROM usage_logs WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
            let usage = Usage { input, cached, output, reasoning: 0 };
            assert_eq!(cost, pricing::cost(&price, &usage, markup).micros(), "{id} is priced exactly");
            totals.input += input;
            totals.cached += cached;
            totals.cost += cost;
            if previous_upstream.is_some() && previous_upstream == Some(upstream) {
                totals.same_upstream_turns += 1;
            }
            previous_upstream = Some(upstream);
        }
    }
    totals
}

fn percent(part: i64, whole: i64) -> String {
    let tenths = part * 1000 / whole.max(1);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

async fn affinity_keeps_each_session_on_one_upstream_and_its_cache_warm(app: TestApp) {
    let options = MockOptions { prefix_cache: true, ..MockOptions::default() };
    let (a, b): (MockHandle, MockHandle) = (mock(options.clone()).await, mock(options).await);
    let admin = app.admin_token().await;
    add_upstream(&app, &admin, "cache-a", &a, 0).await;
    add_upstream(&app, &admin, "cache-b", &b, 0).await;
    let (user_id, token) = app.register_and_login("affinity@example.com").await;
    app.fund(&admin, user_id, "100").await;
    let key =
        app.post("/api/user/keys", &token, json!({"name": "cli"})).await.body["key"].as_str().unwrap().to_string();

    let without = run(&app, &key, "plain", false).await;
    let with = run(&app, &key, "keyed", true).await;
    let follow_ups = SESSIONS * (TURNS - 1);
    for (name, t) in [("without affinity", without), ("with affinity", with)] {
        eprintln!(
            "AFFINITY {:?} {name}: input {} tokens, cached {} ({}), bill {} micro-USD, follow-up turns on the same upstream {}/{}",
            app.backend,
            t.input,
            t.cached,
            percent(t.cached, t.input),
            t.cost,
            t.same_upstream_turns,
            follow_ups,
        );
    }
    assert_eq!(with.same_upstream_turns, follow_ups, "every follow-up stayed on its session's upstream");
    assert!(with.cached > without.cached, "affinity keeps more input cached");
    assert!(with.cost < without.cost, "and the bill is lower");
    assert_eq!(with.input, without.input, "the same conversations were sent");
    let (balance, held) = balance_and_held(&app, user_id).await;
    assert_eq!((balance, held), (100_000_000 - with.cost - without.cost, 0), "the bill is the sum of the rows");
    app.assert_money_invariants().await;
}

async fn a_session_whose_upstream_fails_before_the_first_byte_fails_over(app: TestApp) {
    let good = mock(MockOptions::default()).await;
    let bad = mock(MockOptions { fault: Some(Fault::Fail500), ..MockOptions::default() }).await;
    let admin = app.admin_token().await;
    let good_id = add_upstream(&app, &admin, "good", &good, 0).await;
    add_upstream(&app, &admin, "bad", &bad, 0).await;
    let (user_id, token) = app.register_and_login("failover@example.com").await;
    app.fund(&admin, user_id, "10").await;
    let key =
        app.post("/api/user/keys", &token, json!({"name": "cli"})).await.body["key"].as_str().unwrap().to_string();
    // Some of these sessions prefer the failing upstream; every one is still served.
    for n in 0..8 {
        let resp = app
            .client
            .post(app.url("/v1/responses"))
            .bearer_auth(&key)
            .header("session_id", format!("s{n}"))
            .json(&json!({"model": "gpt-5", "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "session s{n}");
        resp.bytes().await.unwrap();
    }
    assert!(bad.requests() > 0, "some sessions preferred the failing upstream");
    app.wait_until_settled().await;
    let served: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT upstream_id FROM usage_logs").fetch_all(app.db.pool()).await.unwrap();
    assert_eq!(served.len(), 8);
    assert!(served.iter().all(|u| *u == Some(good_id)), "{served:?}");
    app.assert_money_invariants().await;
}
