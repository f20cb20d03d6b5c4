//! Plans with several windows (issue 19): 5-hour blocks, weeks, preferences, stacked
//! packages, per-key caps — through the billing engine and the HTTP API, on both
//! databases, with the fake clock.

use std::sync::Arc;

use codex_gateway::domain::billing::{self, AdmissionRequest, Hold, UsageRecord};
use codex_gateway::foundation::money::Money;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    every_window_of_a_plan_counts_and_daily_usage_and_quota_show_them,
    a_request_admitted_in_one_block_is_settled_in_that_block_after_it_ended,
    forty_racing_requests_never_spend_a_window_past_its_limit_beyond_the_holds,
    the_billing_preference_is_read_changed_and_validated,
    stacked_packages_pay_earliest_ending_first,
    a_renewal_mid_block_keeps_the_windows_and_an_expiry_mid_block_stops_paying,
    a_key_daily_cap_and_concurrency_cap_refuse,
    codex_headers_report_the_tightest_plan_windows,
    the_dashboard_shows_each_window_and_switches_the_preference,
    an_admin_sets_and_clears_a_users_five_hour_cap,
    a_plan_without_a_daily_limit_counts_its_other_windows,
    an_admin_grant_stacks_in_stack_mode_and_queues_otherwise,
    a_key_daily_cap_set_mid_day_counts_the_whole_day,
);

/// Runs `$scenario(backend)` on SQLite and on PostgreSQL (scenarios that start their
/// own databases or instances).
macro_rules! per_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

per_backend!(
    the_optional_daily_limit_migration_keeps_every_row,
    a_replayed_request_is_split_by_the_admin_default_preference,
);

mod the_week_follows_new_york_across_the_dst_change {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = crate::helpers::spawn_app_with(
            crate::helpers::Backend::Sqlite,
            &[("GATEWAY_TIMEZONE", "America/New_York")],
        )
        .await;
        super::the_week_follows_new_york_across_the_dst_change(app).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let app = crate::helpers::spawn_app_with(
            crate::helpers::Backend::Postgres,
            &[("GATEWAY_TIMEZONE", "America/New_York")],
        )
        .await;
        super::the_week_follows_new_york_across_the_dst_change(app).await
    }
}

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}

/// A user with `balance`, a key (id, secret) and a login token.
async fn customer(app: &TestApp, email: &str, balance: &str) -> (i64, String, i64, String) {
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login(email).await;
    if m(balance).is_positive() {
        app.fund(&admin, user_id, balance).await;
    }
    let r = app.post("/api/user/keys", &token, json!({"name": "k"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (user_id, token, r.body["id"].as_i64().unwrap(), r.body["key"].as_str().unwrap().to_string())
}

/// Creates a package and grants it to the user (starts now unless one applies).
async fn plan(app: &TestApp, user_id: i64, body: Value) -> i64 {
    let admin = app.admin_token().await;
    let mut body = body;
    body["price"] = json!("10.00");
    body["duration_days"] = body.get("duration_days").cloned().unwrap_or(json!(30));
    body["name"] = body.get("name").cloned().unwrap_or(json!(format!("Plan {}", rand_suffix())));
    let id = app.create_package(&admin, body).await;
    let r = app.post(&format!("/api/admin/users/{user_id}/packages"), &admin, json!({"package_id": id})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_i64().unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn record(id: &str, cost: &str) -> UsageRecord {
    UsageRecord {
        request_id: id.to_string(),
        endpoint: "/v1/responses".into(),
        model: "gpt-5".into(),
        status_code: 200,
        cost: m(cost),
        ..Default::default()
    }
}

async fn admit(
    app: &TestApp,
    user_id: i64,
    key_id: i64,
    hold: &str,
) -> Result<Hold, codex_gateway::foundation::error::Error> {
    let request = AdmissionRequest { request_id: None, user_id, api_key_id: key_id, hold: m(hold) };
    billing::admit(app.state.env(), &request).await
}

async fn charge(app: &TestApp, user_id: i64, key_id: i64, id: &str, cost: &str) -> billing::Settlement {
    let hold = admit(app, user_id, key_id, "0.01").await.unwrap();
    billing::settle(app.state.env(), &hold, &record(id, cost)).await.unwrap()
}

fn window<'a>(usage: &'a Value, name: &str) -> &'a Value {
    usage["windows"].as_array().unwrap().iter().find(|w| w["window"] == name).unwrap_or(&Value::Null)
}

async fn every_window_of_a_plan_counts_and_daily_usage_and_quota_show_them(app: TestApp) {
    let (user_id, token, key, secret) = customer(&app, "windows@example.com", "10.00").await;
    plan(&app, user_id, json!({"daily_limit": "5", "five_hour_limit": "2", "weekly_limit": "8"})).await;
    let first = charge(&app, user_id, key, "w1", "1.50").await;
    assert_eq!((first.package, first.balance), (m("1.5"), Money::ZERO));
    let second = charge(&app, user_id, key, "w2", "1.00").await;
    assert_eq!((second.package, second.balance), (m("0.5"), m("0.5")), "the 5-hour block is the tightest");

    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    assert_eq!(usage.body["billing_preference"], "package_first");
    assert_eq!(usage.body["package"]["used_today"], "2.00", "seed fields unchanged");
    let block = window(&usage.body, "5h");
    assert_eq!((block["limit"].as_str(), block["used"].as_str()), (Some("2.00"), Some("2.00")));
    assert_eq!(block["remaining"], "0.00");
    // The block started with the first request at 12:00 Shanghai (04:00 UTC).
    assert_eq!(block["resets_at"], "2026-01-15T17:00:00+08:00");
    assert_eq!(window(&usage.body, "day")["used"], "2.00");
    assert_eq!(window(&usage.body, "day")["resets_at"], "2026-01-16T00:00:00+08:00");
    let week = window(&usage.body, "week");
    assert_eq!((week["used"].as_str(), week["remaining"].as_str()), (Some("2.00"), Some("6.00")));
    assert_eq!(week["resets_at"], "2026-01-19T00:00:00+08:00", "the next Monday 00:00");
    assert!(window(&usage.body, "month").is_null(), "no monthly limit, no window");

    let quota = app.send(reqwest::Method::GET, "/api/user/quota", Some(&secret), None).await;
    assert_eq!(quota.status, StatusCode::OK, "{}", quota.text);
    assert_eq!(quota.body["windows"], usage.body["windows"]);
    let bad = app.send(reqwest::Method::GET, "/api/user/quota", Some("sk-nope"), None).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body["error"]["code"].is_string());

    // 4:59:59 after the block started it is still spent; at 5:00:00 a request starts a new one.
    app.clock.set("2026-01-15T08:59:59Z");
    assert_eq!(charge(&app, user_id, key, "w3", "0.10").await.package, Money::ZERO);
    app.clock.set("2026-01-15T09:00:00Z");
    assert_eq!(charge(&app, user_id, key, "w4", "0.10").await.package, m("0.10"));
    app.assert_money_invariants().await;
}

async fn a_request_admitted_in_one_block_is_settled_in_that_block_after_it_ended(app: TestApp) {
    let (user_id, token, key, _) = customer(&app, "straddle@example.com", "10.00").await;
    let package = plan(&app, user_id, json!({"daily_limit": "50", "five_hour_limit": "1"})).await;
    charge(&app, user_id, key, "s0", "0.40").await;
    let straddler = admit(&app, user_id, key, "0.10").await.unwrap();
    // The block (04:00-09:00 UTC) ends; a new request starts a new one.
    app.clock.set("2026-01-15T09:30:00Z");
    let fresh = charge(&app, user_id, key, "s1", "0.30").await;
    assert_eq!(fresh.package, m("0.30"));
    // The request admitted in the first block is paid from what was left of it (0.60).
    let late = billing::settle(app.state.env(), &straddler, &record("s2", "0.80")).await.unwrap();
    assert_eq!((late.package, late.balance), (m("0.60"), m("0.20")));
    let blocks: Vec<(i64, i64)> =
        sqlx::query_as("SELECT starts_at, used FROM window_usage WHERE scope = $1 AND kind = '5h' ORDER BY starts_at")
            .bind(format!("p:{package}"))
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert_eq!(blocks.iter().map(|b| b.1).collect::<Vec<_>>(), vec![m("1").micros(), m("0.30").micros()]);
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(window(&usage.body, "5h")["used"], "0.30");
    assert_eq!(window(&usage.body, "5h")["resets_at"], "2026-01-15T22:30:00+08:00");
    app.assert_money_invariants().await;
}

async fn forty_racing_requests_never_spend_a_window_past_its_limit_beyond_the_holds(app: TestApp) {
    let (user_id, token, key, _) = customer(&app, "race-window@example.com", "10.00").await;
    plan(&app, user_id, json!({"daily_limit": "20", "five_hour_limit": "1"})).await;
    let r = app.put("/api/user/billing-preference", &token, json!({"preference": "package_only"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { (i, admit(&app, user_id, key, "0.10").await) }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(hold)) => admitted.push((i, hold)),
            (_, Err(e)) => assert_eq!(e.status_code(), StatusCode::TOO_MANY_REQUESTS, "{e}"),
        }
    }
    assert_eq!(admitted.len(), 10, "1.00 of block / 0.10 holds");
    let mut settles = Vec::new();
    for (i, hold) in admitted {
        let app = app.clone();
        settles.push(tokio::spawn(async move {
            billing::settle(app.state.env(), &hold, &record(&format!("rw-{i}"), "0.12")).await.unwrap()
        }));
    }
    for s in settles {
        assert_eq!(s.await.unwrap().balance, Money::ZERO, "package_only never touches the balance");
    }
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(window(&usage.body, "5h")["used"], "1.20", "the limit plus 10 × (0.12 − 0.10), no more");
    assert_eq!(usage.body["balance"], "10.00");
    let refused = admit(&app, user_id, key, "0.01").await.unwrap_err();
    assert!(refused.to_string().contains("2026-01-15T17:00:00+08:00"), "earliest reset named: {refused}");
    app.assert_money_invariants().await;
}

async fn the_billing_preference_is_read_changed_and_validated(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token, key, _) = customer(&app, "prefs@example.com", "10.00").await;
    plan(&app, user_id, json!({"daily_limit": "5"})).await;
    let r = app.get("/api/user/billing-preference", &token).await;
    assert_eq!(r.body, json!({"preference": "package_first", "chosen": false}));
    let s = app.put("/api/admin/settings", &admin, json!({"default_billing_preference": "balance_first"})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    assert_eq!(s.body["default_billing_preference"], "balance_first");
    let r = app.get("/api/user/billing-preference", &token).await;
    assert_eq!(r.body["preference"], "balance_first");
    let first = charge(&app, user_id, key, "p1", "1.00").await;
    assert_eq!((first.package, first.balance), (Money::ZERO, m("1")), "the admin default applies");
    let bad = app.put("/api/user/billing-preference", &token, json!({"preference": "whatever"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["error"]["code"], "validation_failed");
    let r = app.put("/api/user/billing-preference", &token, json!({"preference": "package_first"})).await;
    assert_eq!(r.body, json!({"preference": "package_first", "chosen": true}));
    let second = charge(&app, user_id, key, "p2", "1.00").await;
    assert_eq!((second.package, second.balance), (m("1"), Money::ZERO));
    app.put("/api/user/billing-preference", &token, json!({"preference": "balance_only"})).await;
    let third = charge(&app, user_id, key, "p3", "1.00").await;
    assert_eq!((third.package, third.balance), (Money::ZERO, m("1")));
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.body["billing_preference"], "balance_only");
    app.assert_money_invariants().await;
}

async fn stacked_packages_pay_earliest_ending_first(app: TestApp) {
    let admin = app.admin_token().await;
    let s = app.put("/api/admin/settings", &admin, json!({"package_switch_mode": "stack"})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let (user_id, token, key, _) = customer(&app, "stack@example.com", "100.00").await;
    let monthly = app
        .create_package(&admin, json!({"name": "Monthly", "price": "10", "duration_days": 30, "daily_limit": "1"}))
        .await;
    let booster = app
        .create_package(&admin, json!({"name": "Booster", "price": "5", "duration_days": 7, "daily_limit": "2"}))
        .await;
    for id in [monthly, booster] {
        let r = app.post(&format!("/api/packages/{id}/purchase"), &token, json!({"pay_with": "balance"})).await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let usage = app.get("/api/user/daily-usage", &token).await;
    let names: Vec<&str> =
        usage.body["packages_in_force"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Booster", "Monthly"], "both apply, the earliest-ending first");
    let s = charge(&app, user_id, key, "st1", "2.50").await;
    assert_eq!((s.package, s.balance), (m("2.50"), Money::ZERO));
    let usage = app.get("/api/user/daily-usage", &token).await;
    let days: Vec<&str> = usage.body["packages_in_force"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["windows"][0]["used"].as_str().unwrap())
        .collect();
    assert_eq!(days, vec!["2.00", "0.50"]);
    let s = charge(&app, user_id, key, "st2", "1.00").await;
    assert_eq!((s.package, s.balance), (m("0.50"), m("0.50")));
    app.assert_money_invariants().await;
}

async fn a_renewal_mid_block_keeps_the_windows_and_an_expiry_mid_block_stops_paying(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token, key, _) = customer(&app, "renew@example.com", "10.00").await;
    let body =
        json!({"name": "Renewable", "price": "10", "duration_days": 1, "daily_limit": "10", "five_hour_limit": "1"});
    let package = app.create_package(&admin, body).await;
    let path = format!("/api/admin/users/{user_id}/packages");
    let r = app.post(&path, &admin, json!({"package_id": package})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    charge(&app, user_id, key, "r1", "0.70").await;
    // Renewed in the middle of the block: the same row is extended, the block keeps its use.
    app.clock.set("2026-01-15T06:00:00Z");
    let r = app.post(&path, &admin, json!({"package_id": package})).await;
    assert_eq!((r.status, r.body["id"].clone()), (StatusCode::CREATED, json!(r.body["id"])), "{}", r.text);
    let s = charge(&app, user_id, key, "r2", "0.50").await;
    assert_eq!((s.package, s.balance), (m("0.30"), m("0.20")));
    // The package (2 days from 04:00 on the 15th) ends at 04:00 on the 17th, mid-block.
    app.clock.set("2026-01-17T02:00:00Z");
    let before = admit(&app, user_id, key, "0.10").await.unwrap();
    app.clock.set("2026-01-17T04:00:00Z");
    let after = charge(&app, user_id, key, "r3", "0.20").await;
    assert_eq!((after.package, after.balance), (Money::ZERO, m("0.20")), "expired: the balance pays");
    // Admitted while it applied: still paid by it.
    let s = billing::settle(app.state.env(), &before, &record("r4", "0.20")).await.unwrap();
    assert_eq!(s.package, m("0.20"));
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert!(usage.body["package"].is_null() && usage.body["windows"] == json!([]));
    app.assert_money_invariants().await;
}

async fn a_key_daily_cap_and_concurrency_cap_refuse(app: TestApp) {
    let (user_id, token, key, _) = customer(&app, "keycaps@example.com", "10.00").await;
    let r =
        app.patch(&format!("/api/user/keys/{key}"), &token, json!({"daily_cap": "1.00", "max_concurrency": 2})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!((r.body["daily_cap"].as_str(), r.body["max_concurrency"].as_i64()), (Some("1.00"), Some(2)));
    let a = admit(&app, user_id, key, "0.10").await.unwrap();
    let b = admit(&app, user_id, key, "0.10").await.unwrap();
    let busy = admit(&app, user_id, key, "0.10").await.unwrap_err();
    assert_eq!(busy.status_code(), StatusCode::TOO_MANY_REQUESTS);
    billing::settle(app.state.env(), &a, &record("k1", "0.85")).await.unwrap();
    billing::settle(app.state.env(), &b, &record("k2", "0.05")).await.unwrap();
    let capped = admit(&app, user_id, key, "0.20").await.unwrap_err();
    assert!(capped.to_string().contains("daily spending cap"), "{capped}");
    assert!(admit(&app, user_id, key, "0.05").await.is_ok(), "0.90 spent: 0.05 still fits under 1.00");
    // The next business day the key's cap is fresh.
    app.clock.set("2026-01-15T16:00:00Z");
    assert!(admit(&app, user_id, key, "0.50").await.is_ok());
    let bad = app.patch(&format!("/api/user/keys/{key}"), &token, json!({"max_concurrency": 0})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn the_week_follows_new_york_across_the_dst_change(app: TestApp) {
    app.clock.set("2026-03-02T12:00:00Z");
    let (user_id, token, key, _) = customer(&app, "dst@example.com", "10.00").await;
    plan(&app, user_id, json!({"daily_limit": "5", "weekly_limit": "2"})).await;
    charge(&app, user_id, key, "d1", "1.50").await;
    // Sunday 2026-03-08 23:59:59 EDT (the clocks moved forward that morning).
    app.clock.set("2026-03-09T03:59:59Z");
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.body["timezone"], "America/New_York");
    let week = window(&usage.body, "week");
    assert_eq!((week["used"].as_str(), week["resets_at"].as_str()), (Some("1.50"), Some("2026-03-09T00:00:00-04:00")));
    let s = charge(&app, user_id, key, "d2", "1.00").await;
    assert_eq!((s.package, s.balance), (m("0.50"), m("0.50")));
    // Monday 00:00 EDT: a new week.
    app.clock.set("2026-03-09T04:00:00Z");
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(window(&usage.body, "week")["used"], "0.00");
    assert_eq!(window(&usage.body, "week")["resets_at"], "2026-03-16T00:00:00-04:00");
    assert_eq!(charge(&app, user_id, key, "d3", "1.00").await.package, m("1"));
    app.assert_money_invariants().await;
}

async fn codex_headers_report_the_tightest_plan_windows(app: TestApp) {
    use codex_gateway::domain::proxy::mock::MockOptions;
    let s = crate::proxy::setup(&app, MockOptions::default(), Some("5")).await;
    plan(&app, s.user_id, json!({"daily_limit": "1", "five_hour_limit": "0.01"})).await;
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let header =
        |r: &reqwest::Response, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let first = crate::proxy::v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    first.text().await.unwrap();
    crate::proxy::usage_rows(&app, 1).await;
    // The first request (0.004025) started the block at 04:00 UTC: 40.2 % of 0.01 used.
    let second = crate::proxy::v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(header(&second, "x-codex-primary-used-percent").as_deref(), Some("40.2"));
    assert_eq!(header(&second, "x-codex-primary-window-minutes").as_deref(), Some("300"));
    assert_eq!(header(&second, "x-codex-primary-reset-at").as_deref(), Some("1768467600"));
    assert_eq!(header(&second, "x-codex-secondary-window-minutes").as_deref(), Some("1440"));
    assert_eq!(header(&second, "x-codex-secondary-used-percent").as_deref(), Some("0.4"));
    second.text().await.unwrap();
    crate::proxy::usage_rows(&app, 2).await;
    app.assert_money_invariants().await;
}

async fn the_dashboard_shows_each_window_and_switches_the_preference(app: TestApp) {
    use reqwest::header::COOKIE;
    let (user_id, token, key, _) = customer(&app, "dash@example.com", "10.00").await;
    plan(&app, user_id, json!({"name": "Pro", "daily_limit": "5", "five_hour_limit": "2", "monthly_limit": "40"}))
        .await;
    charge(&app, user_id, key, "dash1", "1.60").await;
    let get = || app.client.get(app.url("/dashboard")).header(COOKIE, format!("cg_session={token}")).send();
    let page = get().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"plan-windows\""), "{page}");
    assert!(page.contains("5-hour block") && page.contains("This month"), "window labels");
    assert!(page.contains("1.60 / 2.00 USD") && page.contains("1.60 / 40.00 USD"), "used / limit per window");
    assert!(page.contains("pct-80") && page.contains("progress warn"), "the 5-hour bar at 80 %");
    assert!(page.contains("value=\"package_first\" selected"));
    let csrf = codex_gateway::domain::auth::extract::csrf_token(app.state.config.secret_bytes(), &token);
    let form = [("_csrf", csrf.as_str()), ("preference", "balance_first")];
    let posted = app
        .client
        .post(app.url("/dashboard/billing-preference"))
        .header(COOKIE, format!("cg_session={token}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_redirection(), "{}", posted.status());
    let r = app.get("/api/user/billing-preference", &token).await;
    assert_eq!(r.body["preference"], "balance_first");
    let page = get().await.unwrap().text().await.unwrap();
    assert!(page.contains("value=\"balance_first\" selected"));
}

async fn an_admin_sets_and_clears_a_users_five_hour_cap(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, _, key, _) = customer(&app, "cap5h@example.com", "10.00").await;
    let path = format!("/api/admin/users/{user_id}");
    let bad = app.patch(&path, &admin, json!({"five_hour_cap": "-1"})).await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("five_hour_cap"))
    );
    let r = app.patch(&path, &admin, json!({"five_hour_cap": "0.50"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["five_hour_cap"], "0.50");
    assert_eq!(app.get(&path, &admin).await.body["five_hour_cap"], "0.50", "shown on read");
    charge(&app, user_id, key, "cap1", "0.40").await;
    let refused = admit(&app, user_id, key, "0.20").await.unwrap_err();
    assert_eq!(refused.status_code(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.to_string().contains("5-hour spending cap"), "{refused}");
    let fits = admit(&app, user_id, key, "0.10").await.unwrap();
    billing::settle(app.state.env(), &fits, &record("cap2", "0.10")).await.unwrap();
    // Other fields leave the cap alone; null clears it.
    let r = app.patch(&path, &admin, json!({"daily_cap": "5"})).await;
    assert_eq!(r.body["five_hour_cap"], "0.50");
    let r = app.patch(&path, &admin, json!({"five_hour_cap": null})).await;
    assert!(r.body["five_hour_cap"].is_null(), "{}", r.text);
    let hold = admit(&app, user_id, key, "0.20").await.expect("no cap any more");
    billing::settle(app.state.env(), &hold, &record("cap3", "0.20")).await.unwrap();
    app.assert_money_invariants().await;
}

async fn a_plan_without_a_daily_limit_counts_its_other_windows(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token, key, _) = customer(&app, "nodaily@example.com", "10.00").await;
    let none =
        app.post("/api/admin/packages", &admin, json!({"name": "Nothing", "price": "1", "duration_days": 7})).await;
    assert_eq!(
        (none.status, none.body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("daily_limit"))
    );
    let weekly = json!({"name": "Weekly", "price": "5", "duration_days": 7, "weekly_limit": "3"});
    let created = app.post("/api/admin/packages", &admin, weekly).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(created.body["daily_limit"].is_null(), "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    let r = app.post(&format!("/api/admin/users/{user_id}/packages"), &admin, json!({"package_id": id})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["daily_limit"].is_null());
    let first = charge(&app, user_id, key, "nd1", "2.50").await;
    assert_eq!((first.package, first.balance), (m("2.50"), Money::ZERO), "no daily window stops it");
    let second = charge(&app, user_id, key, "nd2", "1.00").await;
    assert_eq!((second.package, second.balance), (m("0.50"), m("0.50")), "the week is the limit");
    let usage = app.get("/api/user/daily-usage", &token).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    let package = &usage.body["package"];
    assert!(package["daily_limit"].is_null() && package["remaining_today"].is_null(), "{}", usage.text);
    assert_eq!(package["used_today"], "3.00");
    let windows: Vec<&str> =
        usage.body["windows"].as_array().unwrap().iter().map(|w| w["window"].as_str().unwrap()).collect();
    assert_eq!(windows, vec!["week"]);
    // The admin can set a daily limit and remove it again.
    let put = app.put(&format!("/api/admin/packages/{id}"), &admin, json!({"daily_limit": "1"})).await;
    assert_eq!(put.body["daily_limit"], "1.00", "{}", put.text);
    let put = app.put(&format!("/api/admin/packages/{id}"), &admin, json!({"daily_limit": null})).await;
    assert!(put.body["daily_limit"].is_null(), "{}", put.text);
    let catalog = app.get("/api/packages", &token).await;
    assert!(catalog.body["items"].as_array().unwrap().iter().any(|p| p["id"] == id && p["daily_limit"].is_null()));
    use reqwest::header::COOKIE;
    for page in ["/dashboard", "/packages"] {
        let r = app.client.get(app.url(page)).header(COOKIE, format!("cg_session={token}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{page}");
    }
    app.assert_money_invariants().await;
}

async fn an_admin_grant_stacks_in_stack_mode_and_queues_otherwise(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, token, key, _) = customer(&app, "grant-stack@example.com", "100.00").await;
    let monthly = app
        .create_package(&admin, json!({"name": "Monthly", "price": "10", "duration_days": 30, "daily_limit": "1"}))
        .await;
    let booster = app
        .create_package(&admin, json!({"name": "Booster", "price": "5", "duration_days": 7, "daily_limit": "2"}))
        .await;
    let r = app.post(&format!("/api/packages/{monthly}/purchase"), &token, json!({"pay_with": "balance"})).await;
    assert!(r.status.is_success(), "{}", r.text);
    let grant = |package: i64| {
        let path = format!("/api/admin/users/{user_id}/packages");
        let admin = admin.clone();
        let app = &app;
        async move { app.post(&path, &admin, json!({"package_id": package})).await }
    };
    let queued = grant(booster).await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.text);
    assert_eq!(queued.body["status"], "queued", "queue mode: behind the monthly plan");
    let s = app.put("/api/admin/settings", &admin, json!({"package_switch_mode": "stack"})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let (other_id, other_token, other_key, _) = customer(&app, "grant-stack2@example.com", "100.00").await;
    let r = app.post(&format!("/api/packages/{monthly}/purchase"), &other_token, json!({"pay_with": "balance"})).await;
    assert!(r.status.is_success(), "{}", r.text);
    let path = format!("/api/admin/users/{other_id}/packages");
    let stacked = app.post(&path, &admin, json!({"package_id": booster})).await;
    assert_eq!(stacked.status, StatusCode::CREATED, "{}", stacked.text);
    assert_eq!((stacked.body["status"].as_str(), stacked.body["current"].as_bool()), (Some("active"), Some(true)));
    let usage = app.get("/api/user/daily-usage", &other_token).await;
    let names: Vec<&str> =
        usage.body["packages_in_force"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Booster", "Monthly"], "the granted booster runs beside the bought plan");
    let s = charge(&app, other_id, other_key, "gs1", "2.50").await;
    assert_eq!((s.package, s.balance), (m("2.50"), Money::ZERO));
    let s = charge(&app, user_id, key, "gs2", "2.50").await;
    assert_eq!((s.package, s.balance), (m("1"), m("1.50")), "the queued grant does not pay yet");
    app.assert_money_invariants().await;
}

async fn a_key_daily_cap_set_mid_day_counts_the_whole_day(app: TestApp) {
    let (user_id, token, key, _) = customer(&app, "keyday@example.com", "10.00").await;
    charge(&app, user_id, key, "kd1", "0.70").await;
    let in_flight = admit(&app, user_id, key, "0.10").await.unwrap();
    let r = app.patch(&format!("/api/user/keys/{key}"), &token, json!({"daily_cap": "1.00"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Admitted before the cap was set, settled after: it counts too.
    billing::settle(app.state.env(), &in_flight, &record("kd2", "0.20")).await.unwrap();
    let used: i64 = sqlx::query_scalar("SELECT used FROM window_usage WHERE scope = $1 AND kind = 'day'")
        .bind(format!("k:{key}"))
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(used, m("0.90").micros(), "the day's spend before the cap counts");
    let capped = admit(&app, user_id, key, "0.20").await.unwrap_err();
    assert!(capped.to_string().contains("daily spending cap"), "{capped}");
    let fits = admit(&app, user_id, key, "0.10").await.unwrap();
    billing::settle(app.state.env(), &fits, &record("kd3", "0.10")).await.unwrap();
    // Changing the cap later keeps the count (derived again from the usage log).
    let r = app.patch(&format!("/api/user/keys/{key}"), &token, json!({"daily_cap": "2.00"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(admit(&app, user_id, key, "1.01").await.is_err(), "1.00 spent of 2.00");
    let hold = admit(&app, user_id, key, "1.00").await.unwrap();
    billing::settle(app.state.env(), &hold, &record("kd4", "0.50")).await.unwrap();
    app.assert_money_invariants().await;
}

/// A database as release 19 left it, with a package, a user package and an order
/// pointing at it; migrating to the optional daily limit keeps them and their links.
async fn the_optional_daily_limit_migration_keeps_every_row(backend: crate::helpers::Backend) {
    use codex_gateway::foundation::db::{self, Db};
    let dir = crate::helpers::TempDir(std::env::temp_dir().join(format!("cg_mig_{}", rand_suffix())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let url = crate::helpers::fresh_database_url(backend, &dir.0).await;
    let db = Db::connect(&url, 2).await.unwrap();
    db::migrate_up_to(&db, 19).await.unwrap();
    let exec = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query(sql).execute(db.pool()).await }
    };
    let id = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.unwrap() }
    };
    let user =
        id("INSERT INTO users (email, created_at, updated_at) VALUES ('old@example.com', 1, 1) RETURNING id").await;
    let old =
        id("INSERT INTO packages (name, price, duration_days, daily_limit, created_at, updated_at, weekly_limit) \
                  VALUES ('Old', 10000000, 30, 5000000, 1, 1, 9000000) RETURNING id")
        .await;
    let gone = id("INSERT INTO packages (name, price, duration_days, daily_limit, created_at, updated_at) \
                   VALUES ('Gone', 1, 1, 1, 1, 1) RETURNING id")
    .await;
    sqlx::query("DELETE FROM packages WHERE id = $1").bind(gone).execute(db.pool()).await.unwrap();
    let link = format!(
        "INSERT INTO user_packages (user_id, package_id, name, daily_limit, duration_days, source, status, starts_at, \
           ends_at, created_at, updated_at) VALUES ({user}, {old}, 'Old', 5000000, 30, 'grant', 'active', 1, 2, 1, 1)"
    );
    sqlx::query(&link).execute(db.pool()).await.unwrap();
    let order = format!(
        "INSERT INTO payment_orders (out_trade_no, user_id, kind, package_id, amount, list_amount, expires_at, \
           created_at, updated_at) VALUES ('T1', {user}, 'package', {old}, 10000000, 10000000, 1, 1, 1)"
    );
    sqlx::query(&order).execute(db.pool()).await.unwrap();
    let no_day = "INSERT INTO packages (name, price, duration_days, created_at, updated_at, weekly_limit) \
                  VALUES ('No day', 1, 1, 1, 1, 1)";
    assert!(exec(no_day).await.is_err(), "NOT NULL before");

    assert_eq!(db::migrate(&db).await.unwrap(), db::MIGRATIONS.iter().filter(|m| m.version > 19).count());
    let package: (i64, String, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT id, name, daily_limit, weekly_limit FROM packages").fetch_one(db.pool()).await.unwrap();
    assert_eq!(package, (old, "Old".to_string(), Some(5_000_000), Some(9_000_000)), "rows and added columns kept");
    let held: (i64, Option<i64>) =
        sqlx::query_as("SELECT package_id, daily_limit FROM user_packages").fetch_one(db.pool()).await.unwrap();
    assert_eq!(held, (old, Some(5_000_000)));
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_orders WHERE package_id = $1")
        .bind(old)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(orders, 1);
    let fresh = id("INSERT INTO packages (name, price, duration_days, created_at, updated_at, weekly_limit) \
                    VALUES ('No day', 1, 1, 1, 1, 1) RETURNING id")
    .await;
    assert!(fresh > gone, "a deleted id is never reused (the AUTOINCREMENT counter is kept)");
    let grant = format!(
        "INSERT INTO user_packages (user_id, package_id, name, duration_days, source, status, starts_at, ends_at, \
           created_at, updated_at) VALUES ({user}, {fresh}, 'No day', 1, 'grant', 'active', 1, 2, 1, 1)"
    );
    sqlx::query(&grant).execute(db.pool()).await.unwrap();
    let dangling = grant.replace(&format!(", {fresh}, 'No day'"), ", 999999, 'No day'");
    assert!(sqlx::query(&dangling).execute(db.pool()).await.is_err(), "foreign keys still enforced");
    let indexed: i64 = match backend {
        crate::helpers::Backend::Sqlite => sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN ('packages_enabled_sort', 'user_packages_user_status', 'user_packages_status_ends')"),
        crate::helpers::Backend::Postgres => sqlx::query_scalar("SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('packages_enabled_sort', 'user_packages_user_status', 'user_packages_status_ends')"),
    }
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(indexed, 3, "indexes kept");
    db.close().await;
}

/// A request a dead instance served is charged at the next start with the admin's
/// default billing preference (here `balance_first`) for a user who chose none.
async fn a_replayed_request_is_split_by_the_admin_default_preference(backend: crate::helpers::Backend) {
    use codex_gateway::domain::proxy::journal::{Forwarded, Journal};
    let dir = crate::helpers::TempDir(std::env::temp_dir().join(format!("cg_replay_{}", rand_suffix())));
    let second_dir = crate::helpers::TempDir(std::env::temp_dir().join(format!("cg_replay2_{}", rand_suffix())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::create_dir_all(second_dir.0.join("journal")).unwrap();
    let url = crate::helpers::fresh_database_url(backend, &dir.0).await;
    let clock = crate::helpers::FakeClock::at("2026-01-15T04:00:00Z");
    let app = crate::helpers::launch(backend, &url, dir, clock.clone(), &[]).await;
    let admin = app.admin_token().await;
    let (user_id, token, key, _) = customer(&app, "replay-pref@example.com", "10.00").await;
    plan(&app, user_id, json!({"daily_limit": "5"})).await;
    let s = app.put("/api/admin/settings", &admin, json!({"default_billing_preference": "balance_first"})).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    // What a killed instance left: a forwarded request with its measured usage, unsettled.
    {
        let journal = Journal::open(&second_dir.0.join("journal")).unwrap();
        let forwarded = Forwarded {
            request_id: "replayed-1".into(),
            user_id,
            api_key_id: key,
            admitted_at: app.state.now().timestamp_micros(),
            endpoint: "/v1/responses".into(),
            model: "gpt-5".into(),
            upstream_id: None,
            streamed: true,
            request_bytes: 100,
            price_input: 0,
            price_cached: 0,
            price_output: 0,
            markup: 1_000_000,
        };
        let entry = journal.forwarding(forwarded).unwrap();
        entry.send_mark().sent(1);
        entry.measured(&record("replayed-1", "0.75"));
        entry.keep();
    }
    // One instance per SQLite file (foundation::db::single_instance): the first stops
    // before the other starts, as a restart does.
    let _first_dir = app.stop().await;
    let restarted = crate::helpers::launch(backend, &url, second_dir, clock, &[]).await;
    let row: (i64, i64) =
        sqlx::query_as("SELECT package_cost, balance_cost FROM usage_logs WHERE request_id = 'replayed-1'")
            .fetch_one(restarted.db.pool())
            .await
            .unwrap();
    assert_eq!(row, (0, m("0.75").micros()), "balance_first, as the settings say");
    assert_eq!(restarted.balance(&token).await, "9.25");
    restarted.assert_money_invariants().await;
}
