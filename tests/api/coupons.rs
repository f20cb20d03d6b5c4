use codex_gateway::domain::payment::epay::{self, Params};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TEST_KEY, TEST_PID};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    admins_manage_coupons_with_an_audit_trail,
    a_coupon_discounts_a_balance_purchase_within_its_rules,
    a_gateway_order_counts_its_coupon_only_when_paid_and_the_last_use_only_once,
    a_top_up_coupon_lowers_the_price_but_not_the_credit,
    ten_buyers_racing_for_the_last_use_get_one_discount,
);

fn spring(extra: Value) -> Value {
    let mut body = json!({"code": "spring", "percent_off": 25, "max_uses_per_user": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn coupon_used(app: &TestApp, code: &str) -> i64 {
    sqlx::query_scalar("SELECT used FROM coupons WHERE code = $1").bind(code).fetch_one(app.db.pool()).await.unwrap()
}

async fn admins_manage_coupons_with_an_audit_trail(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("u@example.com").await;
    let created = app.post("/api/admin/coupons", &admin, spring(json!({"package_ids": [2, 1]}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let coupon = &created.body["coupon"];
    assert_eq!(coupon["code"], "SPRING");
    assert_eq!(coupon["percent_off"], "25.00");
    assert_eq!(coupon["package_ids"], json!([1, 2]));
    assert_eq!(coupon["used"], 0);
    assert_eq!(coupon["enabled"], true);
    let id = coupon["id"].as_i64().unwrap();
    let duplicate = app.post("/api/admin/coupons", &admin, spring(json!({"code": "Spring"}))).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.error_code(), "code_taken");
    for (body, field) in [
        (json!({"code": "X1Y", "percent_off": 10, "amount_off": 1}), "percent_off"),
        (json!({"code": "X1Y"}), "percent_off"),
        (json!({"code": "X1Y", "amount_off": "0.001"}), "amount_off"),
        (json!({"code": "X1Y", "percent_off": 150}), "percent_off"),
        (json!({"code": "no spaces", "percent_off": 5}), "code"),
        (json!({"code": "X1Y", "percent_off": 5, "valid_from": "soon"}), "valid_from"),
        (json!({"code": "X1Y", "percent_off": 5, "max_uses": 0}), "max_uses"),
    ] {
        let r = app.post("/api/admin/coupons", &admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
    let replaced =
        app.put(&format!("/api/admin/coupons/{id}"), &admin, json!({"code": "SPRING", "amount_off": "5"})).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert!(replaced.body["coupon"]["percent_off"].is_null());
    assert_eq!(replaced.body["coupon"]["amount_off"], "5.00");
    assert!(replaced.body["coupon"]["package_ids"].is_null(), "PUT replaces: now every package");
    let off = app.delete(&format!("/api/admin/coupons/{id}"), &admin).await;
    assert_eq!(off.body["coupon"]["enabled"], false);
    assert_eq!(app.delete("/api/admin/coupons/999", &admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/admin/coupons", &admin).await.body["total"], 1);
    assert_eq!(app.get("/api/admin/coupons", &user).await.status, StatusCode::FORBIDDEN);
    let audit = app.get("/api/admin/audit?action=coupon.", &admin).await;
    let actions: Vec<_> = audit.body["items"].as_array().unwrap().iter().map(|i| i["action"].clone()).collect();
    assert_eq!(actions, vec!["coupon.disable", "coupon.update", "coupon.create"]);
    assert_eq!(audit.body["items"][1]["before"]["percent_off"], "25.00");
    assert_eq!(audit.body["items"][1]["after"]["amount_off"], "5.00");
}

async fn a_coupon_discounts_a_balance_purchase_within_its_rules(app: TestApp) {
    let admin = app.admin_token().await;
    let month = app
        .create_package(&admin, json!({"name": "Month", "price": "30.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    let week = app
        .create_package(&admin, json!({"name": "Week", "price": "9.00", "duration_days": 7, "daily_limit": 5}))
        .await;
    let (user_id, user) = app.register_and_login("buyer@example.com").await;
    app.fund(&admin, user_id, "100").await;
    app.post("/api/admin/coupons", &admin, spring(json!({"package_ids": [month]}))).await;

    let quoted = app.get(&format!("/api/packages/{month}/quote?coupon=spring"), &user).await;
    assert_eq!(quoted.status, StatusCode::OK, "{}", quoted.text);
    assert_eq!((quoted.body["list_price"].as_str(), quoted.body["price"].as_str()), (Some("30.00"), Some("22.50")));
    assert_eq!(quoted.body["discount"], "7.50");
    let not_here = app.get(&format!("/api/packages/{week}/quote?coupon=spring"), &user).await;
    assert_eq!(not_here.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(coupon_used(&app, "SPRING").await, 0, "a quote reserves nothing");
    let bought = buy(&app, &user, month, " spring ").await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
    assert_eq!(bought.body["order"]["amount"], "22.50");
    assert_eq!(bought.body["order"]["list_amount"], "30.00");
    assert_eq!(app.balance(&user).await, "77.50");
    assert_eq!(coupon_used(&app, "SPRING").await, 1);
    let again = buy(&app, &user, month, "SPRING").await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY, "one use per user");
    assert_eq!(again.body["error"]["field"], "coupon");
    let other_package = buy(&app, &user, week, "SPRING").await;
    assert_eq!(other_package.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(other_package.text.contains("does not apply"), "{}", other_package.text);
    assert_eq!(buy(&app, &user, week, "NOPE").await.status, StatusCode::UNPROCESSABLE_ENTITY);

    app.post("/api/admin/coupons", &admin, json!({"code": "HUGE", "amount_off": "50"})).await;
    let floor = buy(&app, &user, week, "HUGE").await;
    assert_eq!(floor.status, StatusCode::CREATED, "{}", floor.text);
    assert_eq!(floor.body["order"]["amount"], "0.01", "never below the minimum price, never negative");
    assert_eq!(app.balance(&user).await, "77.49");

    app.post(
        "/api/admin/coupons",
        &admin,
        json!({"code": "LATER", "percent_off": 10, "valid_from": "2026-02-01T00:00:00+08:00"}),
    )
    .await;
    assert_eq!(buy(&app, &user, week, "LATER").await.status, StatusCode::UNPROCESSABLE_ENTITY, "not valid yet");
    let plain = buy(&app, &user, week, "").await;
    assert_eq!(plain.body["order"]["amount"], "9.00", "an empty coupon is no coupon");
    let redemptions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM coupon_redemptions").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(redemptions, 2);
    app.assert_money_invariants().await;
}

async fn buy(app: &TestApp, user: &str, package: i64, coupon: &str) -> crate::helpers::Answer {
    let path = format!("/api/packages/{package}/purchase");
    app.post(&path, user, json!({"pay_with": "balance", "coupon": coupon})).await
}

fn notify(out_trade_no: &str, money: &str) -> Params {
    let p: Params = [
        ("pid", TEST_PID),
        ("trade_no", "G20260115000009"),
        ("out_trade_no", out_trade_no),
        ("type", "epay"),
        ("name", "Month"),
        ("money", money),
        ("trade_status", "TRADE_SUCCESS"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    epay::signed(p, TEST_KEY)
}

async fn a_gateway_order_counts_its_coupon_only_when_paid_and_the_last_use_only_once(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let month = app
        .create_package(&admin, json!({"name": "Month", "price": "30.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    app.post("/api/admin/coupons", &admin, json!({"code": "LAST", "percent_off": 20, "max_uses": 1})).await;
    let mut orders = Vec::new();
    for email in ["a@example.com", "b@example.com"] {
        let (_, token) = app.register_and_login(email).await;
        let r = app
            .post(&format!("/api/packages/{month}/purchase"), &token, json!({"pay_with": "credit", "coupon": "last"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["order"]["amount"], "24.00");
        assert_eq!(r.body["order"]["list_amount"], "30.00");
        orders.push(r.body["order"]["out_trade_no"].as_str().unwrap().to_string());
    }
    assert_eq!(coupon_used(&app, "LAST").await, 0, "nothing counts before payment");

    // The gateway repeats the first notify concurrently: one count.
    let first = notify(&orders[0], "24.00");
    let repeats = (0..10).map(|_| {
        let request = app.client.get(app.url("/api/payment/credit/notify")).query(&first);
        async move { request.send().await.unwrap().text().await.unwrap() }
    });
    let answers = futures::future::join_all(repeats).await;
    assert!(answers.iter().all(|a| a == "success"), "{answers:?}");
    assert_eq!(coupon_used(&app, "LAST").await, 1);

    let second =
        app.client.get(app.url("/api/payment/credit/notify")).query(&notify(&orders[1], "24.00")).send().await.unwrap();
    assert_eq!(second.text().await.unwrap(), "success", "a paid order is always served");
    assert_eq!(coupon_used(&app, "LAST").await, 1, "the last use is not taken twice");
    let list = app.get("/api/admin/orders?per_page=200", &admin).await;
    let late = list.body["items"].as_array().unwrap().iter().find(|o| o["out_trade_no"] == orders[1].as_str()).unwrap();
    assert_eq!(late["status"], "fulfilled");
    assert!(late["flags"].as_array().unwrap().contains(&json!("coupon_exhausted")), "{late}");
    let redemptions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM coupon_redemptions").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(redemptions, 1);

    let (_, third) = app.register_and_login("c@example.com").await;
    let used_up = app
        .post(&format!("/api/packages/{month}/purchase"), &third, json!({"pay_with": "credit", "coupon": "LAST"}))
        .await;
    assert_eq!(used_up.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(used_up.text.contains("used up"), "{}", used_up.text);
    app.assert_money_invariants().await;
}

async fn a_top_up_coupon_lowers_the_price_but_not_the_credit(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    app.post("/api/admin/coupons", &admin, json!({"code": "PKGONLY", "amount_off": "1"})).await;
    app.post("/api/admin/coupons", &admin, json!({"code": "TOPUP10", "percent_off": 10, "applies_to_topup": true}))
        .await;
    let (_, user) = app.register_and_login("t@example.com").await;
    let refused = app.post("/api/user/topup", &user, json!({"amount": "20", "coupon": "PKGONLY"})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "package coupons do not apply to top-ups");
    let order = app.post("/api/user/topup", &user, json!({"amount": "20", "coupon": "topup10"})).await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text);
    assert_eq!(order.body["order"]["amount"], "18.00");
    assert_eq!(order.body["order"]["list_amount"], "20.00");
    let otn = order.body["order"]["out_trade_no"].as_str().unwrap();
    let paid = app.client.get(app.url("/api/payment/credit/notify")).query(&notify(otn, "18.00")).send().await.unwrap();
    assert_eq!(paid.text().await.unwrap(), "success");
    assert_eq!(app.balance(&user).await, "20.00", "the full top-up is credited");
    assert_eq!(coupon_used(&app, "TOPUP10").await, 1);
    app.assert_money_invariants().await;
}

async fn ten_buyers_racing_for_the_last_use_get_one_discount(app: TestApp) {
    let admin = app.admin_token().await;
    let month = app
        .create_package(&admin, json!({"name": "Month", "price": "30.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    app.post("/api/admin/coupons", &admin, json!({"code": "ONCE", "amount_off": "10", "max_uses": 1})).await;
    let mut buyers = Vec::new();
    for i in 0..10 {
        let (id, token) = app.register_and_login(&format!("racer{i}@example.com")).await;
        app.fund(&admin, id, "30").await;
        buyers.push(token);
    }
    let attempts = buyers.iter().map(|token| buy(&app, token, month, "ONCE"));
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let refused = answers
        .iter()
        .filter(|a| a.status == StatusCode::CONFLICT || a.status == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!((won, refused), (1, 9), "{:?}", answers.iter().map(|a| a.text.clone()).collect::<Vec<_>>());
    let lost_the_race = answers.iter().filter(|a| a.error_code() == "coupon_used_up").count();
    eprintln!("{:?}: {lost_the_race} of 9 refusals came from the claim, the rest from the quote", app.backend);
    let winner = answers.iter().find(|a| a.status == StatusCode::CREATED).unwrap();
    assert_eq!(winner.body["order"]["amount"], "20.00");
    assert_eq!(coupon_used(&app, "ONCE").await, 1);
    let debited: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM users")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(debited, 280_000_000, "ten funded with 30, one paid 20");
    app.assert_money_invariants().await;
}
