//! Buying with a coupon on `/packages`: the htmx quote shows the discounted price before
//! paying, and both purchase buttons send the coupon along.

use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases_with_sandbox;
use crate::web_community::{form, page};

async fn coupon(app: &TestApp, admin: &str, body: serde_json::Value) -> i64 {
    let r = app.post("/api/admin/coupons", admin, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["coupon"]["id"].as_i64().unwrap()
}

async fn the_purchase_page_quotes_a_coupon_and_the_balance_purchase_uses_it(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app
        .create_package(&admin, json!({"name": "Pro", "price": "10.00", "duration_days": 30, "daily_limit": "3"}))
        .await;
    let other = app
        .create_package(&admin, json!({"name": "Lite", "price": "4.00", "duration_days": 30, "daily_limit": "1"}))
        .await;
    let coupon_id = coupon(
        &app,
        &admin,
        json!({"code": "SAVE20", "percent_off": "20", "package_ids": [id], "max_uses": 5, "max_uses_per_user": 1}),
    )
    .await;
    let (user_id, user) = app.register_and_login("buyer@example.com").await;
    app.fund(&admin, user_id, "20").await;

    let shop = page(&app, "/packages", &user).await;
    assert!(shop.text.contains(&format!("hx-get=\"/packages/{id}/quote\"")), "the coupon field asks for a quote");
    assert!(shop.text.contains("name=\"coupon\""));
    let quote = page(&app, &format!("/packages/{id}/quote?coupon=save20"), &user).await;
    assert_eq!(quote.status, StatusCode::OK);
    assert!(quote.text.contains("<strong class=\"quote-price\">8.00</strong>"), "{}", quote.text);
    assert!(quote.text.contains("10.00") && quote.text.contains("2.00"), "list price and saving");
    let api = app.get(&format!("/api/packages/{id}/quote?coupon=SAVE20"), &user).await;
    assert_eq!(api.body["price"], "8.00", "the page and the API quote alike");
    let wrong = page(&app, &format!("/packages/{other}/quote?coupon=SAVE20"), &user).await;
    assert_eq!(wrong.status, StatusCode::OK, "htmx swaps refusals in too");
    assert!(wrong.text.contains("quote-error") && wrong.text.contains("does not apply"));
    let unknown = app
        .client
        .get(app.url(&format!("/packages/{id}/quote?coupon=NOPE")))
        .header(COOKIE, format!("cg_session={user}"))
        .header(ACCEPT_LANGUAGE, "zh-CN")
        .send()
        .await
        .unwrap();
    assert!(TestApp::answer(unknown).await.text.contains("优惠码不存在"), "refusals are translated");
    assert!(page(&app, &format!("/packages/{id}/quote?coupon="), &user).await.text.trim().is_empty());

    let r =
        form(&app, &format!("/packages/{other}/buy"), &user, &[("pay_with", "balance"), ("coupon", "SAVE20")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"coupon-error\""), "a coupon that does not apply is shown, nothing bought");
    assert_eq!(app.balance(&user).await, "20.00");
    let r = form(&app, &format!("/packages/{id}/buy"), &user, &[("pay_with", "balance"), ("coupon", " save20 ")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(r.headers[LOCATION].to_str().unwrap().starts_with("/packages?out_trade_no="));
    assert_eq!(app.balance(&user).await, "12.00", "8.00 debited instead of 10.00");
    assert_eq!(app.count("SELECT used FROM coupons").await, 1);
    let again = page(&app, &format!("/packages/{id}/quote?coupon=SAVE20"), &user).await;
    assert!(again.text.contains("as often as allowed"), "one use per user");

    // A coupon that priced an order can only be switched off.
    let r = form(&app, &format!("/admin/coupons/{coupon_id}/delete"), &admin, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text.contains("disable it instead"));
    assert!(page(&app, "/admin/coupons", &admin).await.text.contains("1 / 5"));
    app.assert_money_invariants().await;
}

async fn a_credit_purchase_with_a_coupon_asks_the_gateway_for_the_discounted_price(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app
        .create_package(&admin, json!({"name": "Pro", "price": "10.00", "duration_days": 30, "daily_limit": "3"}))
        .await;
    app.configure_credit(&admin).await;
    coupon(&app, &admin, json!({"code": "MINUS3", "amount_off": "3"})).await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let quote = page(&app, &format!("/packages/{id}/quote?coupon=minus3"), &user).await;
    assert!(quote.text.contains("<strong class=\"quote-price\">7.00</strong>"));
    let r = form(&app, &format!("/packages/{id}/buy"), &user, &[("pay_with", "credit"), ("coupon", "MINUS3")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let pay = r.headers[LOCATION].to_str().unwrap().to_string();
    let otn = pay.trim_start_matches("/pay/").to_string();
    let pay_page = page(&app, &pay, &user).await;
    assert!(pay_page.text.contains("7.00"), "the payment form asks for the discounted price");
    let order = app.get("/api/user/orders", &user).await.body;
    let row = order["items"].as_array().unwrap().iter().find(|o| o["out_trade_no"] == otn.as_str()).unwrap().clone();
    assert_eq!(row["amount"], "7.00");
    assert_eq!(app.count("SELECT used FROM coupons").await, 0, "counted only when paid");
}

async fn the_top_up_form_takes_a_top_up_coupon(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    coupon(&app, &admin, json!({"code": "PACKONLY", "amount_off": "1"})).await;
    coupon(&app, &admin, json!({"code": "TOPUP2", "amount_off": "2", "package_ids": [], "applies_to_topup": true}))
        .await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    assert!(page(&app, "/account", &user).await.text.contains("id=\"topup_coupon\""));
    let r = form(&app, "/account/topup", &user, &[("amount", "12.00"), ("coupon", "PACKONLY")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"coupon-error\"") && r.text.contains("does not apply"), "{}", r.text);
    let r = form(&app, "/account/topup", &user, &[("amount", "12.00"), ("coupon", "topup2")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let orders = app.get("/api/user/orders", &user).await.body;
    let order = &orders["items"][0];
    assert_eq!(order["amount"], "10.00", "12.00 of balance for 10.00 paid");
}

on_both_databases_with_sandbox!(
    the_top_up_form_takes_a_top_up_coupon,
    the_purchase_page_quotes_a_coupon_and_the_balance_purchase_uses_it,
    a_credit_purchase_with_a_coupon_asks_the_gateway_for_the_discounted_price,
);
