//! Three instances behind one PostgreSQL database under concurrent load: billing,
//! holds, stock and revocations stay right because they rely on atomic SQL, not on
//! anything one process remembers. (PostgreSQL only: several instances on one SQLite
//! file is not a supported deployment.)

use std::sync::Arc;

use codex_gateway::domain::proxy::mock::MockOptions;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::helpers::{spawn_cluster, TestApp};
use crate::proxy::{add_upstream, mock};

/// gpt-5 price for the mock's default usage (see tests/api/proxy.rs).
const COST_MICROS: i64 = 4_025;

struct Buyer {
    id: i64,
    token: String,
    key: String,
}

async fn buyer(app: &TestApp, admin: &str, email: &str, funds: &str) -> Buyer {
    let (id, token) = app.register_and_login(email).await;
    app.fund(admin, id, funds).await;
    let key = app.post("/api/user/keys", &token, json!({"name": "cli"})).await;
    Buyer { id, token, key: key.body["key"].as_str().unwrap().to_string() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_one_postgres_bill_exactly_under_concurrent_load() {
    let apps = Arc::new(spawn_cluster(3).await);
    let upstream = mock(MockOptions::default()).await;
    let admin = apps[0].admin_token().await;
    add_upstream(&apps[0], &admin, "mock", &upstream, 0).await;
    // This scenario promises no overspend at all, so every hold is the full worst case:
    // a floor of 4,096 output tokens keeps learned holds (billing::holds) from shrinking.
    let floor = apps[0].put("/api/admin/settings", &admin, json!({"hold_floor_tokens": 4096})).await;
    assert_eq!(floor.status, StatusCode::OK, "{}", floor.text);
    let mut buyers = Vec::new();
    for i in 0..4 {
        buyers.push(buyer(&apps[i % 3], &admin, &format!("load{i}@example.com"), "0.10").await);
    }
    let buyers = Arc::new(buyers);

    // 4 users × 40 requests, round-robin over the instances, 24 in flight at once.
    let permits = Arc::new(Semaphore::new(24));
    let mut calls = Vec::new();
    for n in 0..160usize {
        let (apps, buyers, permits) = (apps.clone(), buyers.clone(), permits.clone());
        calls.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let app = &apps[n % 3];
            let who = n % 4;
            let stream = n % 2 == 0;
            let resp = app
                .client
                .post(app.url("/v1/responses"))
                .bearer_auth(&buyers[who].key)
                .json(&json!({"model": "gpt-5", "stream": stream, "input": "hi"}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let _ = resp.bytes().await;
            (who, status)
        }));
    }
    let results: Vec<(usize, StatusCode)> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
    let served = |who: usize| results.iter().filter(|(w, s)| *w == who && *s == StatusCode::OK).count() as i64;
    assert!(results.iter().all(|(_, s)| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS), "{results:?}");
    // Settlements run in tracked tasks after the body ends; wait for each instance's.
    for app in apps.iter() {
        app.state.tasks.close();
        app.state.tasks.wait().await;
    }
    for (who, b) in buyers.iter().enumerate() {
        let expected = 100_000 - served(who) * COST_MICROS;
        let balance: i64 = sqlx::query_scalar("SELECT balance FROM users WHERE id = $1")
            .bind(b.id)
            .fetch_one(apps[1].db.pool())
            .await
            .unwrap();
        assert_eq!(balance, expected, "user {who}: served {} requests", served(who));
        assert!(balance >= 0, "holds cover each request's cost, so no overspend");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs WHERE user_id = $1 AND cost > 0")
            .bind(b.id)
            .fetch_one(apps[2].db.pool())
            .await
            .unwrap();
        assert_eq!(rows, served(who));
    }
    let held: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM users")
        .fetch_one(apps[0].db.pool())
        .await
        .unwrap();
    assert_eq!(held, 0, "every hold was released");
    let total_served: i64 = (0..4).map(served).sum();
    println!("SCALEOUT|instances=3|requests=160|served={total_served}|refused={}", 160 - total_served);
    apps[0].assert_money_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_unit_of_stock_sells_once_across_instances_and_revocations_reach_all() {
    let apps = spawn_cluster(3).await;
    let admin = apps[0].admin_token().await;
    let package = apps[0]
        .create_package(
            &admin,
            json!({"name": "Last one", "price": "5.00", "duration_days": 30, "daily_limit": "1.00", "stock": 1}),
        )
        .await;
    let mut buyers = Vec::new();
    for i in 0..6 {
        buyers.push(buyer(&apps[i % 3], &admin, &format!("stock{i}@example.com"), "10.00").await);
    }
    let path = format!("/api/packages/{package}/purchase");
    let attempts =
        buyers.iter().enumerate().map(|(i, b)| apps[i % 3].post(&path, &b.token, json!({"pay_with": "balance"})));
    let answers = join_all(attempts).await;
    let winners = answers.iter().filter(|a| a.status.is_success()).count();
    assert_eq!(winners, 1, "{:?}", answers.iter().map(|a| (a.status, a.text.clone())).collect::<Vec<_>>());
    assert!(answers.iter().filter(|a| !a.status.is_success()).all(|a| a.status == StatusCode::CONFLICT));

    // A key revoked through one instance is refused by the others on the next request.
    let keys = apps[1].get("/api/user/keys", &buyers[1].token).await;
    let key_id = keys.body["items"][0]["id"].as_i64().unwrap();
    assert_eq!(
        apps[1].delete(&format!("/api/user/keys/{key_id}"), &buyers[1].token).await.status,
        StatusCode::NO_CONTENT
    );
    for app in &apps {
        let r = app.client.get(app.url("/v1/models")).bearer_auth(&buyers[1].key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // A suspension through one instance ends sessions everywhere.
    apps[2].patch(&format!("/api/admin/users/{}", buyers[2].id), &admin, json!({"status": "suspended"})).await;
    for app in &apps {
        assert_eq!(app.get("/api/user/me", &buyers[2].token).await.status, StatusCode::UNAUTHORIZED);
    }
    apps[0].assert_money_invariants().await;
}

/// Polls `check` for up to a second: other instances learn of a change by a
/// PostgreSQL notification, which arrives asynchronously but within milliseconds
/// (their caches would otherwise keep the old value for 3 to 5 seconds).
async fn within_a_second<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_catalog_and_key_changes_reach_the_other_instances_at_once() {
    let apps = spawn_cluster(2).await;
    let (a, b) = (&apps[0], &apps[1]);
    let admin = a.admin_token().await;
    let upstream = mock(MockOptions::default()).await;
    add_upstream(a, &admin, "mock", &upstream, 0).await;
    let user = buyer(b, &admin, "spread@example.com", "5.00").await;

    // B has fresh copies of the settings and the catalog (read just now).
    assert_eq!(b.get("/api/admin/settings", &admin).await.body["hold_output_tokens"], 4096);
    let models = |app: &TestApp| {
        let request = app.client.get(app.url("/v1/models")).bearer_auth(&user.key);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    assert!(!models(b).await.to_string().contains("spread-model"));

    let r = a.put("/api/admin/settings", &admin, json!({"hold_output_tokens": 1000})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = a
        .post(
            "/api/admin/prices",
            &admin,
            json!({"model": "spread-model", "input": "1.00", "cached_input": "0.10", "output": "2.00"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert!(
        within_a_second(|| async { b.get("/api/admin/settings", &admin).await.body["hold_output_tokens"] == 1000 })
            .await,
        "B still serves the old settings"
    );
    assert!(
        within_a_second(|| async { models(b).await.to_string().contains("spread-model") }).await,
        "B still serves the old catalog"
    );

    // A key B has just used (and cached, with the user's headroom hint) is refused by B
    // as soon as A's notice arrives: the hint is dropped, so admission decides before
    // anything goes upstream. A request that B served in the milliseconds before the
    // notice is billed like any other (the invariants below).
    let call = || {
        b.client
            .post(b.url("/v1/responses"))
            .bearer_auth(&user.key)
            .json(&json!({"model": "gpt-5", "input": "hi"}))
            .send()
    };
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    let keys = a.get("/api/user/keys", &user.token).await;
    let key_id = keys.body["items"][0]["id"].as_i64().unwrap();
    assert_eq!(a.delete(&format!("/api/user/keys/{key_id}"), &user.token).await.status, StatusCode::NO_CONTENT);
    assert!(
        within_a_second(|| async { call().await.unwrap().status() == StatusCode::UNAUTHORIZED }).await,
        "B still serves a revoked key"
    );
    let refused = call().await.unwrap();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "api_key_revoked");
    let before = upstream.requests();
    assert_eq!(call().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.requests(), before, "refused before anything went upstream");
    b.wait_until_settled().await;
    b.assert_money_invariants().await;
}
