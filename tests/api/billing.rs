use std::sync::Arc;

use codex_gateway::domain::billing::{self, AdmissionRequest, Hold, UsageRecord};
use codex_gateway::foundation::clock::to_micros;
use codex_gateway::foundation::money::Money;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{parse_time, TestApp};
use crate::on_both_databases;

on_both_databases!(
    a_charge_splits_exactly_at_the_daily_allowance,
    the_allowance_resets_at_midnight_in_shanghai_and_a_straddling_request_stays_on_its_day,
    a_package_that_ends_mid_day_stops_paying_at_that_instant,
    without_a_package_the_balance_pays_and_refusals_are_clear,
    concurrent_requests_cannot_overspend_beyond_their_holds,
    a_daily_cap_refuses_with_the_reset_time,
    settling_twice_applies_once_and_stale_holds_are_released,
    daily_usage_history_is_zero_filled_for_charts,
);

/// Puts a package directly in the tables (the packages module sells them through the API).
async fn give_package(app: &TestApp, user_id: i64, daily_limit: &str, starts: &str, ends: &str) -> i64 {
    let now = to_micros(app.state.now());
    let limit = Money::parse(daily_limit).unwrap().micros();
    let package_id: i64 = sqlx::query_scalar(
        "INSERT INTO packages (name, description, price, duration_days, daily_limit, sort_order, enabled, created_at, updated_at) \
         VALUES ('Basic', '', 30000000, 30, $1, 1, 1, $2, $2) RETURNING id",
    )
    .bind(limit)
    .bind(now)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO user_packages (user_id, package_id, name, daily_limit, duration_days, paid_amount, source, status, \
           starts_at, ends_at, created_at, updated_at) VALUES ($1, $2, 'Basic', $3, 30, 30000000, 'grant', 'active', $4, $5, $6, $6) RETURNING id",
    )
    .bind(user_id)
    .bind(package_id)
    .bind(limit)
    .bind(to_micros(parse_time(starts)))
    .bind(to_micros(parse_time(ends)))
    .bind(now)
    .fetch_one(app.db.pool())
    .await
    .unwrap()
}

async fn key_for(app: &TestApp, token: &str) -> i64 {
    let r = app.post("/api/user/keys", token, json!({"name": "k"})).await;
    r.body["id"].as_i64().unwrap()
}

fn record(id: &str, cost: &str) -> UsageRecord {
    UsageRecord {
        request_id: id.to_string(),
        endpoint: "/v1/responses".into(),
        model: "gpt-5".into(),
        status_code: 200,
        input_tokens: 1000,
        output_tokens: 100,
        cost: Money::parse(cost).unwrap(),
        ..Default::default()
    }
}

async fn admit(
    app: &TestApp,
    user_id: i64,
    key_id: i64,
    hold: &str,
) -> Result<Hold, codex_gateway::foundation::error::Error> {
    billing::admit(
        app.state.env(),
        &AdmissionRequest { request_id: None, user_id, api_key_id: key_id, hold: Money::parse(hold).unwrap() },
    )
    .await
}

async fn charge(app: &TestApp, user_id: i64, key_id: i64, id: &str, cost: &str) -> billing::Settlement {
    let hold = admit(app, user_id, key_id, "0.01").await.unwrap();
    billing::settle(app.state.env(), &hold, &record(id, cost)).await.unwrap()
}

async fn a_charge_splits_exactly_at_the_daily_allowance(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("split@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "10.00").await;
    give_package(&app, user_id, "5.00", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z").await;

    let first = charge(&app, user_id, key, "r1", "4.50").await;
    assert_eq!((first.package, first.balance), (Money::parse("4.5").unwrap(), Money::ZERO));
    let second = charge(&app, user_id, key, "r2", "1.00").await;
    assert_eq!((second.package, second.balance), (Money::parse("0.5").unwrap(), Money::parse("0.5").unwrap()));
    assert_eq!(second.balance_after, Money::parse("9.5").unwrap());

    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    assert_eq!(usage.body["date"], "2026-01-15");
    assert_eq!(usage.body["timezone"], "Asia/Shanghai");
    assert_eq!(usage.body["next_reset_at"], "2026-01-16T00:00:00+08:00");
    assert_eq!(usage.body["balance"], "9.50");
    assert_eq!(usage.body["package"]["daily_limit"], "5.00");
    assert_eq!(usage.body["package"]["used_today"], "5.00");
    assert_eq!(usage.body["package"]["remaining_today"], "0.00");
    assert_eq!(usage.body["spent_today"], json!({"package": "5.00", "balance": "0.50", "total": "5.50"}));

    let logs = app.get("/api/user/usage", &token).await;
    assert_eq!(logs.status, StatusCode::OK, "{}", logs.text);
    assert_eq!(logs.body["total"], 2);
    assert_eq!(logs.body["items"][0]["package_cost"], "0.50");
    assert_eq!(logs.body["items"][0]["balance_cost"], "0.50");
    let ledger = app.get("/api/user/ledger", &token).await;
    assert_eq!(ledger.body["items"][0]["kind"], "usage");
    assert_eq!(ledger.body["items"][0]["amount"], "-0.50");
    assert_eq!(ledger.body["items"][0]["package_amount"], "0.50");
    app.assert_money_invariants().await;
}

async fn the_allowance_resets_at_midnight_in_shanghai_and_a_straddling_request_stays_on_its_day(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("midnight@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "10.00").await;
    give_package(&app, user_id, "1.00", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z").await;

    // 23:59:59 in Shanghai: the allowance of the 15th is spent.
    app.clock.set("2026-01-15T15:59:59Z");
    charge(&app, user_id, key, "late", "1.00").await;
    let straddler = admit(&app, user_id, key, "0.10").await.unwrap();
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.body["date"], "2026-01-15");
    assert_eq!(usage.body["package"]["remaining_today"], "0.00");

    // 00:00:00: a fresh allowance.
    app.clock.set("2026-01-15T16:00:00Z");
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.body["date"], "2026-01-16");
    assert_eq!(usage.body["package"]["remaining_today"], "1.00");
    assert_eq!(usage.body["next_reset_at"], "2026-01-17T00:00:00+08:00");

    // The request admitted at 23:59:59 is billed to the 15th (from the balance, the
    // allowance of that day being gone), not to the fresh day.
    let s = billing::settle(app.state.env(), &straddler, &record("straddler", "0.20")).await.unwrap();
    assert_eq!((s.package, s.balance), (Money::ZERO, Money::parse("0.2").unwrap()));
    let fresh = charge(&app, user_id, key, "new-day", "0.30").await;
    assert_eq!(fresh.package, Money::parse("0.3").unwrap());
    let usage = app.get("/api/user/daily-usage?days=2", &token).await;
    assert_eq!(
        usage.body["history"][0],
        json!({"date": "2026-01-15", "package": "1.00", "balance": "0.20", "total": "1.20", "requests": 2})
    );
    assert_eq!(usage.body["history"][1]["package"], "0.30");
    app.assert_money_invariants().await;
}

async fn a_package_that_ends_mid_day_stops_paying_at_that_instant(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("expiry@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "10.00").await;
    give_package(&app, user_id, "5.00", "2026-01-01T00:00:00Z", "2026-01-15T06:00:00Z").await;

    app.clock.set("2026-01-15T05:59:59Z");
    assert_eq!(charge(&app, user_id, key, "before", "1.00").await.package, Money::units(1));
    app.clock.set("2026-01-15T06:00:00Z");
    let after = charge(&app, user_id, key, "after", "1.00").await;
    assert_eq!((after.package, after.balance), (Money::ZERO, Money::units(1)));
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert!(usage.body["package"].is_null());
    app.assert_money_invariants().await;
}

async fn without_a_package_the_balance_pays_and_refusals_are_clear(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("plain@example.com").await;
    let key = key_for(&app, &token).await;
    let refused = admit(&app, user_id, key, "0.01").await.unwrap_err();
    assert_eq!(refused.status_code().as_u16(), 402);
    assert_eq!(refused.code(), "insufficient_balance");

    app.fund(&admin, user_id, "1.00").await;
    let s = charge(&app, user_id, key, "p1", "0.25").await;
    assert_eq!(
        (s.package, s.balance, s.balance_after),
        (Money::ZERO, Money::parse("0.25").unwrap(), Money::parse("0.75").unwrap())
    );

    give_package(&app, user_id, "0.10", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z").await;
    app.post(&format!("/api/admin/users/{user_id}/balance"), &admin, json!({"amount": "-0.75", "reason": "zero it"}))
        .await;
    charge(&app, user_id, key, "p2", "0.10").await;
    let used_up = admit(&app, user_id, key, "0.01").await.unwrap_err();
    assert_eq!(used_up.code(), "insufficient_quota");
    assert!(used_up.public_message().contains("daily package allowance used up"));
    app.assert_money_invariants().await;
}

async fn concurrent_requests_cannot_overspend_beyond_their_holds(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("race@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "1.00").await;
    let app = Arc::new(app);

    // 40 requests race for a 1.00 balance with 0.10 holds: exactly 10 get in.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { (i, admit(&app, user_id, key, "0.10").await) }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        match result {
            Ok(hold) => admitted.push((i, hold)),
            Err(e) => assert_eq!(e.code(), "insufficient_balance"),
        }
    }
    assert_eq!(admitted.len(), 10);

    // Each costs more than its hold (0.12): the overspend is bounded by 10 × 0.02.
    let mut settles = Vec::new();
    for (i, hold) in admitted {
        let app = app.clone();
        settles.push(tokio::spawn(async move {
            billing::settle(app.state.env(), &hold, &record(&format!("race-{i}"), "0.12")).await.unwrap()
        }));
    }
    for s in settles {
        s.await.unwrap();
    }
    let me = app.get("/api/user/me", &token).await;
    assert_eq!(me.body["balance"], "-0.20", "overspend = sum of (cost - hold), no more");
    let held: i64 = sqlx::query_scalar("SELECT held FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(held, 0);
    assert!(admit(&app, user_id, key, "0.01").await.is_err());
    app.assert_money_invariants().await;
}

async fn a_daily_cap_refuses_with_the_reset_time(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("cap@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "10.00").await;
    let r = app.patch(&format!("/api/admin/users/{user_id}"), &admin, json!({"daily_cap": "1.00"})).await;
    assert_eq!(r.body["daily_cap"], "1.00");
    charge(&app, user_id, key, "c1", "0.95").await;
    let capped = admit(&app, user_id, key, "0.10").await.unwrap_err();
    assert_eq!(capped.status_code().as_u16(), 429);
    assert!(capped.public_message().contains("2026-01-16T00:00:00+08:00"));

    // The global default cap applies to users without their own.
    app.patch(&format!("/api/admin/users/{user_id}"), &admin, json!({"daily_cap": null})).await;
    app.put("/api/admin/settings", &admin, json!({"default_daily_cap": "0.50"})).await;
    assert_eq!(admit(&app, user_id, key, "0.01").await.unwrap_err().status_code().as_u16(), 429);
    app.clock.set("2026-01-15T16:00:00Z");
    assert!(admit(&app, user_id, key, "0.01").await.is_ok(), "caps reset with the business day");
}

async fn settling_twice_applies_once_and_stale_holds_are_released(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("twice@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "1.00").await;
    let hold = admit(&app, user_id, key, "0.50").await.unwrap();
    let first = billing::settle(app.state.env(), &hold, &record("dup", "0.30")).await.unwrap();
    let second = billing::settle(app.state.env(), &hold, &record("dup", "0.30")).await.unwrap();
    assert!(first.applied && !second.applied);
    assert_eq!(app.get("/api/user/me", &token).await.body["balance"], "0.70");

    // A hold whose request never settles (crashed instance) blocks until the janitor frees it.
    let _orphan = admit(&app, user_id, key, "0.70").await.unwrap();
    assert!(admit(&app, user_id, key, "0.10").await.is_err());
    assert_eq!(billing::release_expired_holds(app.state.env()).await.unwrap(), 0);
    app.clock.advance(chrono::Duration::hours(billing::HOLD_LIFETIME_HOURS));
    assert_eq!(billing::release_expired_holds(app.state.env()).await.unwrap(), 1);
    assert!(admit(&app, user_id, key, "0.10").await.is_ok());
    app.assert_money_invariants().await;
}

async fn daily_usage_history_is_zero_filled_for_charts(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("chart@example.com").await;
    let key = key_for(&app, &token).await;
    app.fund(&admin, user_id, "5.00").await;
    app.clock.set("2026-01-10T04:00:00Z");
    charge(&app, user_id, key, "d10", "0.40").await;
    app.clock.set("2026-01-12T04:00:00Z");
    charge(&app, user_id, key, "d12", "0.60").await;
    let usage = app.get("/api/user/daily-usage?days=30", &token).await;
    let history = usage.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 30);
    assert_eq!(history[29]["date"], "2026-01-12");
    assert_eq!(history[29]["balance"], "0.60");
    assert_eq!(history[28]["total"], "0.00");
    assert_eq!(history[27]["balance"], "0.40");
    let filtered = app.get("/api/user/usage?from=2026-01-11&to=2026-01-12", &token).await;
    assert_eq!(filtered.body["total"], 1);
    let bad = app.get("/api/user/usage?from=yesterday", &token).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let all = app.get(&format!("/api/admin/usage?user_id={user_id}"), &admin).await;
    assert_eq!(all.body["total"], 2);
    assert_eq!(app.get("/api/admin/usage", &token).await.status, StatusCode::FORBIDDEN);
}
