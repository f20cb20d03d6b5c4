use chrono::Duration;
use codex_gateway::domain::packages::activation;
use codex_gateway::foundation::clock::Clock;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    admins_create_packages_with_the_seed_example_and_validation_names_the_field,
    users_see_enabled_packages_by_sort_order_and_deleting_only_disables,
    buying_from_the_balance_starts_the_package_and_debits_the_price,
    buying_the_same_package_again_extends_it,
    a_different_package_is_queued_and_starts_when_the_current_one_ends,
    a_package_stops_applying_at_the_exact_end_instant,
    switch_mode_replaces_the_current_package_and_credits_the_unused_part_once,
    the_last_unit_goes_to_exactly_one_of_many_concurrent_buyers,
    admins_grant_and_end_packages_with_ledger_and_audit_records,
    coupons_and_unknown_payment_methods_are_refused_clearly,
    a_refunded_balance_purchase_returns_the_money_and_moves_the_queue_up,
    the_per_user_purchase_limit_is_enforced,
    refunding_a_renewal_takes_back_only_its_days,
);

fn seed_package() -> Value {
    json!({"name": "基础套餐", "description": "适合轻度使用", "price": 30.00, "duration_days": 30, "daily_limit": 5.00, "sort_order": 1})
}

async fn funded_user(app: &TestApp, admin: &str, email: &str, amount: &str) -> (i64, String) {
    let (id, token) = app.register_and_login(email).await;
    app.fund(admin, id, amount).await;
    (id, token)
}

async fn buy_with_balance(app: &TestApp, token: &str, package_id: i64) -> crate::helpers::Answer {
    app.post(&format!("/api/packages/{package_id}/purchase"), token, json!({"pay_with": "balance"})).await
}

async fn admins_create_packages_with_the_seed_example_and_validation_names_the_field(app: TestApp) {
    let admin = app.admin_token().await;
    let created = app.post("/api/admin/packages", &admin, seed_package()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["price"], "30.00");
    assert_eq!(created.body["daily_limit"], "5.00");
    assert_eq!(created.body["duration_days"], 30);
    assert_eq!(created.body["enabled"], true);
    assert_eq!(created.body["package"]["id"], created.body["id"]);
    assert_eq!(created.body["package"]["name"], "基础套餐");
    assert_eq!(created.body["stock"], Value::Null);
    let id = created.body["id"].as_i64().unwrap();

    let cases = [
        (json!({"name": "x", "price": 0, "duration_days": 30, "daily_limit": 5}), "price"),
        (json!({"name": "x", "price": "29.999", "duration_days": 30, "daily_limit": 5}), "price"),
        (json!({"name": "x", "price": 30, "duration_days": 0, "daily_limit": 5}), "duration_days"),
        (json!({"name": "x", "price": 30, "duration_days": 30, "daily_limit": -1}), "daily_limit"),
        (json!({"price": 30, "duration_days": 30, "daily_limit": 5}), "name"),
        (json!({"name": "x", "price": 30, "duration_days": 30, "daily_limit": 5, "stock": -2}), "stock"),
        (seed_package(), "name"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/admin/packages", &admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }

    let updated = app.put(&format!("/api/admin/packages/{id}"), &admin, json!({"price": "25.5", "stock": 3})).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["price"], "25.50");
    assert_eq!(updated.body["stock"], 3);
    assert_eq!(updated.body["name"], "基础套餐");
    let unlimited = app.put(&format!("/api/admin/packages/{id}"), &admin, json!({"stock": null})).await;
    assert_eq!(unlimited.body["stock"], Value::Null);
    let shown = app.get(&format!("/api/admin/packages/{id}"), &admin).await;
    assert_eq!(shown.body["price"], "25.50");
    assert_eq!(app.get("/api/admin/packages/999", &admin).await.status, StatusCode::NOT_FOUND);

    let (_, user) = app.register_and_login("u@example.com").await;
    assert_eq!(app.post("/api/admin/packages", &user, seed_package()).await.status, StatusCode::FORBIDDEN);
    let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE action LIKE 'package.%'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audits, 3);
}

async fn users_see_enabled_packages_by_sort_order_and_deleting_only_disables(app: TestApp) {
    let admin = app.admin_token().await;
    let late = app
        .create_package(
            &admin,
            json!({"name": "B", "price": 10, "duration_days": 7, "daily_limit": 1, "sort_order": 5, "stock": 2}),
        )
        .await;
    let early = app
        .create_package(
            &admin,
            json!({"name": "A", "price": 30, "duration_days": 30, "daily_limit": 5, "sort_order": 1}),
        )
        .await;
    let hidden = app
        .create_package(
            &admin,
            json!({"name": "C", "price": 1, "duration_days": 1, "daily_limit": 1, "enabled": false}),
        )
        .await;
    let (_, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    let list = app.get("/api/packages", &user).await;
    let ids: Vec<i64> = list.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![early, late]);
    assert_eq!(list.body["items"][1]["stock"], 2);
    assert_eq!(list.body["items"][1]["sold_out"], false);
    assert_eq!(buy_with_balance(&app, &user, hidden).await.status, StatusCode::NOT_FOUND);

    assert_eq!(buy_with_balance(&app, &user, early).await.status, StatusCode::CREATED);
    let deleted = app.delete(&format!("/api/admin/packages/{early}"), &admin).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body["enabled"], false);
    let list = app.get("/api/packages", &user).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let mine = app.get("/api/user/packages", &user).await;
    assert_eq!(mine.body["items"][0]["status"], "active", "holders keep a disabled package");
    assert_eq!(mine.body["items"][0]["current"], true);
    let all = app.get("/api/admin/packages", &admin).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 3);
}

async fn buying_from_the_balance_starts_the_package_and_debits_the_price(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.create_package(&admin, seed_package()).await;
    let (_, poor) = funded_user(&app, &admin, "poor@example.com", "29.99").await;
    let refused = buy_with_balance(&app, &poor, id).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "insufficient_balance");
    assert_eq!(app.balance(&poor).await, "29.99");
    assert_eq!(app.get("/api/user/packages", &poor).await.body["items"].as_array().unwrap().len(), 0);
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_orders").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(orders, 0, "a refused purchase leaves no order behind");

    let (user_id, user) = funded_user(&app, &admin, "rich@example.com", "100").await;
    let bought = buy_with_balance(&app, &user, id).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
    assert_eq!(bought.body["effect"], "started");
    assert_eq!(bought.body["order"]["status"], "fulfilled");
    assert_eq!(bought.body["order"]["pay_method"], "balance");
    assert_eq!(app.balance(&user).await, "70.00");
    let mine = app.get("/api/user/packages", &user).await;
    let row = &mine.body["items"][0];
    assert_eq!(row["status"], "active");
    assert_eq!(row["daily_limit"], "5.00");
    assert_eq!(row["starts_at"], "2026-01-15T12:00:00+08:00");
    assert_eq!(row["ends_at"], "2026-02-14T12:00:00+08:00");
    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["items"][0]["kind"], "package_purchase");
    assert_eq!(ledger.body["items"][0]["amount"], "-30.00");
    let sold = app.get(&format!("/api/admin/packages/{id}"), &admin).await;
    assert_eq!(sold.body["sold"], 1);
    let orders = app.get("/api/user/orders", &user).await;
    assert_eq!(orders.body["total"], 1);
    app.assert_money_invariants().await;
}

async fn buying_the_same_package_again_extends_it(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.create_package(&admin, seed_package()).await;
    let (_, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    assert_eq!(buy_with_balance(&app, &user, id).await.status, StatusCode::CREATED);
    app.clock.advance(Duration::days(3));
    let again = buy_with_balance(&app, &user, id).await;
    assert_eq!(again.body["effect"], "extended");
    let mine = app.get("/api/user/packages", &user).await;
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "renewal extends the same row");
    assert_eq!(items[0]["starts_at"], "2026-01-15T12:00:00+08:00");
    assert_eq!(items[0]["ends_at"], "2026-03-16T12:00:00+08:00");
    assert_eq!(items[0]["duration_days"], 60);
    assert_eq!(items[0]["paid_amount"], "60.00");
    assert_eq!(app.balance(&user).await, "40.00");
    app.assert_money_invariants().await;
}

async fn a_different_package_is_queued_and_starts_when_the_current_one_ends(app: TestApp) {
    let admin = app.admin_token().await;
    let month = app.create_package(&admin, seed_package()).await;
    let week =
        app.create_package(&admin, json!({"name": "周卡", "price": 10, "duration_days": 7, "daily_limit": 2})).await;
    let (user_id, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    buy_with_balance(&app, &user, month).await;
    let queued = buy_with_balance(&app, &user, week).await;
    assert_eq!(queued.body["effect"], "queued");
    assert_eq!(queued.body["package"]["status"], "queued");
    assert_eq!(queued.body["package"]["starts_at"], "2026-02-14T12:00:00+08:00");
    assert_eq!(queued.body["package"]["ends_at"], "2026-02-21T12:00:00+08:00");
    let now = app.clock.now();
    let current = activation::current(&app.db, user_id, now).await.unwrap().unwrap();
    assert_eq!(current.package_id, month);

    app.clock.set("2026-02-14T04:00:00Z");
    let current = activation::current(&app.db, user_id, app.clock.now()).await.unwrap().unwrap();
    assert_eq!(current.package_id, week, "the queued package applies from the instant the first one ends");
    assert_eq!(current.daily_limit, Some(2_000_000));
    assert_eq!(app.mark_expired().await, 2);
    let user = app.login("u@example.com", "password123").await; // the first session has expired by now
    let mine = app.get("/api/user/packages", &user).await;
    let statuses: Vec<(&str, bool)> = mine.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(statuses, vec![("active", true), ("expired", false)]);
    app.assert_money_invariants().await;
}

async fn a_package_stops_applying_at_the_exact_end_instant(app: TestApp) {
    let admin = app.admin_token().await;
    let day =
        app.create_package(&admin, json!({"name": "日卡", "price": 1, "duration_days": 1, "daily_limit": 1})).await;
    let (user_id, user) = funded_user(&app, &admin, "u@example.com", "10").await;
    buy_with_balance(&app, &user, day).await;
    app.clock.set("2026-01-16T03:59:59.999999Z");
    assert!(activation::current(&app.db, user_id, app.clock.now()).await.unwrap().is_some());
    assert_eq!(app.mark_expired().await, 0);
    app.clock.set("2026-01-16T04:00:00Z");
    assert!(activation::current(&app.db, user_id, app.clock.now()).await.unwrap().is_none());
    assert_eq!(app.mark_expired().await, 1);
    let mine = app.get("/api/user/packages", &user).await;
    assert_eq!(mine.body["items"][0]["status"], "expired");
    assert_eq!(mine.body["items"][0]["current"], false);
    let again = buy_with_balance(&app, &user, day).await;
    assert_eq!(again.body["effect"], "started", "an expired package is bought anew, not extended");
}

async fn switch_mode_replaces_the_current_package_and_credits_the_unused_part_once(app: TestApp) {
    let admin = app.admin_token().await;
    let r = app.put("/api/admin/settings", &admin, json!({"package_switch_mode": "switch"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let month = app.create_package(&admin, seed_package()).await;
    let week =
        app.create_package(&admin, json!({"name": "周卡", "price": 10, "duration_days": 7, "daily_limit": 2})).await;
    let (user_id, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    buy_with_balance(&app, &user, month).await;
    app.clock.advance(Duration::days(10));
    let switched = buy_with_balance(&app, &user, week).await;
    assert_eq!(switched.body["effect"], "switched");
    assert_eq!(switched.body["credited"], "20.00", "20 of 30 days unused, of 30.00 paid");
    assert_eq!(app.balance(&user).await, "80.00");
    let current = activation::current(&app.db, user_id, app.clock.now()).await.unwrap().unwrap();
    assert_eq!(current.package_id, week);
    let credits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'package_credit'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(credits, 1);
    // Switching again credits the week's unused value only; the ended month is never credited twice.
    app.clock.advance(Duration::days(1));
    let back = buy_with_balance(&app, &user, month).await;
    assert_eq!(back.body["effect"], "switched");
    let credits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'package_credit'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(credits, 2);
    let mine = app.get("/api/user/packages", &user).await;
    let active: Vec<&Value> = mine.body["items"].as_array().unwrap().iter().filter(|r| r["current"] == true).collect();
    assert_eq!(active.len(), 1);
    app.assert_money_invariants().await;
}

async fn the_last_unit_goes_to_exactly_one_of_many_concurrent_buyers(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app
        .create_package(&admin, json!({"name": "限量", "price": 30, "duration_days": 30, "daily_limit": 5, "stock": 1}))
        .await;
    let mut buyers = Vec::new();
    for i in 0..8 {
        buyers.push(funded_user(&app, &admin, &format!("b{i}@example.com"), "50").await.1);
    }
    let attempts = buyers.iter().map(|t| buy_with_balance(&app, t, id));
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let sold_out = answers.iter().filter(|a| a.status == StatusCode::CONFLICT && a.error_code() == "sold_out").count();
    assert_eq!((won, sold_out), (1, 7), "{:?}", answers.iter().map(|a| &a.text).collect::<Vec<_>>());
    let package = app.get(&format!("/api/admin/packages/{id}"), &admin).await;
    assert_eq!(package.body["stock"], 0);
    assert_eq!(package.body["sold"], 1);
    assert_eq!(package.body["sold_out"], true);
    let total: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(balance) AS BIGINT) FROM users").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(total, (8 * 50 - 30) * 1_000_000);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_packages").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(rows, 1);
    app.assert_money_invariants().await;
}

async fn admins_grant_and_end_packages_with_ledger_and_audit_records(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.create_package(&admin, seed_package()).await;
    let (user_id, user) = app.register_and_login("u@example.com").await;
    let granted = app.post(&format!("/api/admin/users/{user_id}/packages"), &admin, json!({"package_id": id})).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    assert_eq!(granted.body["status"], "active");
    assert_eq!(granted.body["source"], "grant");
    assert_eq!(granted.body["paid_amount"], "0.00");
    let up = granted.body["id"].as_i64().unwrap();
    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["items"][0]["kind"], "package_grant");
    assert_eq!(ledger.body["items"][0]["amount"], "0.00");
    let listed = app.get(&format!("/api/admin/users/{user_id}/packages"), &admin).await;
    assert_eq!(listed.body["items"][0]["id"], up);
    assert_eq!(app.get(&format!("/api/admin/users/{user_id}/packages"), &user).await.status, StatusCode::FORBIDDEN);
    let missing = app.post("/api/admin/users/9999/packages", &admin, json!({"package_id": id})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    app.clock.advance(Duration::hours(5));
    let ended = app.post(&format!("/api/admin/users/{user_id}/packages/{up}/end"), &admin, json!({})).await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text);
    assert_eq!(ended.body["status"], "ended");
    assert_eq!(ended.body["ends_at"], "2026-01-15T17:00:00+08:00");
    // Ending the package is an allowance change: it leaves a ledger row (no money moves).
    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["items"][0]["kind"], "package_end", "{}", ledger.text);
    assert_eq!(ledger.body["items"][0]["amount"], "0.00");
    let (ref_text, up_id): (Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT reference, user_package_id FROM ledger_entries WHERE user_id = $1 AND kind = 'package_end'",
    )
    .bind(user_id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(ref_text.as_deref(), Some(format!("user_package:{up}").as_str()));
    assert_eq!(up_id, Some(up));
    let again = app.post(&format!("/api/admin/users/{user_id}/packages/{up}/end"), &admin, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let ends: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'package_end'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(ends, 1, "a refused end writes no row");
    assert!(activation::current(&app.db, user_id, app.clock.now()).await.unwrap().is_none());
    let mine = app.get("/api/user/packages", &user).await;
    assert_eq!(mine.body["items"][0]["status"], "ended");
    let audits: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE action IN ('package.grant', 'package.end')")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(audits, 2);
    app.assert_money_invariants().await;
}

async fn coupons_and_unknown_payment_methods_are_refused_clearly(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app.create_package(&admin, seed_package()).await;
    let (_, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    let path = format!("/api/packages/{id}/purchase");
    let coupon = app.post(&path, &user, json!({"pay_with": "balance", "coupon": "SAVE10"})).await;
    assert_eq!(coupon.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(coupon.body["error"]["field"], "coupon");
    let bogus = app.post(&path, &user, json!({"pay_with": "gold"})).await;
    assert_eq!(bogus.body["error"]["field"], "pay_with");
    let no_gateway = app.post(&path, &user, json!({})).await;
    assert_eq!(no_gateway.status, StatusCode::CONFLICT, "{}", no_gateway.text);
    assert_eq!(no_gateway.error_code(), "payments_unavailable");
    assert_eq!(app.balance(&user).await, "100.00");
}

async fn a_refunded_balance_purchase_returns_the_money_and_moves_the_queue_up(app: TestApp) {
    let admin = app.admin_token().await;
    let month = app.create_package(&admin, seed_package()).await;
    let week =
        app.create_package(&admin, json!({"name": "周卡", "price": 10, "duration_days": 7, "daily_limit": 2})).await;
    let (user_id, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    let first = buy_with_balance(&app, &user, month).await;
    buy_with_balance(&app, &user, week).await;
    app.clock.advance(Duration::days(2));
    let otn = first.body["order"]["out_trade_no"].as_str().unwrap();
    let refund = app.post(&format!("/api/admin/orders/{otn}/refund"), &admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    assert_eq!(app.balance(&user).await, "90.00");
    let current = activation::current(&app.db, user_id, app.clock.now()).await.unwrap().unwrap();
    assert_eq!(current.package_id, week, "the queued week starts as soon as the refunded month ends");
    let mine = app.get("/api/user/packages", &user).await;
    assert_eq!(mine.body["items"][0]["status"], "active");
    assert_eq!(mine.body["items"][0]["starts_at"], "2026-01-17T12:00:00+08:00");
    assert_eq!(mine.body["items"][1]["status"], "refunded");
    app.assert_money_invariants().await;
}

async fn the_per_user_purchase_limit_is_enforced(app: TestApp) {
    let admin = app.admin_token().await;
    let trial = app
        .create_package(
            &admin,
            json!({"name": "体验", "price": 1, "duration_days": 1, "daily_limit": 1, "per_user_limit": 1}),
        )
        .await;
    let (_, user) = funded_user(&app, &admin, "u@example.com", "10").await;
    assert_eq!(buy_with_balance(&app, &user, trial).await.status, StatusCode::CREATED);
    let second = buy_with_balance(&app, &user, trial).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.error_code(), "purchase_limit_reached");
    assert_eq!(app.balance(&user).await, "9.00");
}

async fn refunding_a_renewal_takes_back_only_its_days(app: TestApp) {
    let admin = app.admin_token().await;
    let month = app.create_package(&admin, seed_package()).await;
    let (_, user) = funded_user(&app, &admin, "u@example.com", "100").await;
    buy_with_balance(&app, &user, month).await;
    let renewal = buy_with_balance(&app, &user, month).await;
    // The catalog changing afterwards does not change what the renewal gave.
    app.put(&format!("/api/admin/packages/{month}"), &admin, json!({"duration_days": 90})).await;
    let otn = renewal.body["order"]["out_trade_no"].as_str().unwrap();
    let refund = app.post(&format!("/api/admin/orders/{otn}/refund"), &admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    let mine = app.get("/api/user/packages", &user).await;
    assert_eq!(mine.body["items"][0]["status"], "active");
    assert_eq!(mine.body["items"][0]["ends_at"], "2026-02-14T12:00:00+08:00");
    assert_eq!(mine.body["items"][0]["paid_amount"], "30.00");
    assert_eq!(app.balance(&user).await, "70.00");
    app.assert_money_invariants().await;
}
