//! The package, order and payment pages over HTTP, with the payment sandbox mounted.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::{COOKIE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases_with_sandbox;

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

fn package_fields<'a>(name: &'a str, price: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("price", price),
        ("duration_days", "30"),
        ("daily_limit", "5"),
        ("stock", "10"),
        ("sort_order", "1"),
        ("description", "For daily coding"),
        ("enabled", "on"),
    ]
}

async fn admins_manage_packages_and_users_buy_them_from_the_balance(app: TestApp) {
    let admin = app.admin_token().await;
    let r = form(&app, "/admin/packages", &admin, &package_fields("Basic", "30.001")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"price-error\""));
    let r = form(&app, "/admin/packages", &admin, &package_fields("Basic", "30.00")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let list = page(&app, "/admin/packages", &admin).await;
    assert!(list.text.contains("<td>Basic</td>"));
    let id = app.get("/api/admin/packages", &admin).await.body["items"][0]["id"].as_i64().unwrap();

    let (user_id, user) = app.register_and_login("buyer@example.com").await;
    let shop = page(&app, "/packages", &user).await;
    assert_eq!(shop.status, StatusCode::OK);
    assert!(shop.text.contains("Basic") && shop.text.contains("30.00"));
    assert!(!shop.text.contains("buy-credit"), "no Credit button while payments are off");
    let r = form(&app, &format!("/packages/{id}/buy"), &user, &[("pay_with", "balance")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "too poor");
    assert!(r.text.contains("30.00 USD short of this package"), "the shortfall is said");
    app.fund(&admin, user_id, "40").await;
    let r = form(&app, &format!("/packages/{id}/buy"), &user, &[("pay_with", "balance")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let back = r.headers[LOCATION].to_str().unwrap().to_string();
    assert!(back.starts_with("/packages?out_trade_no="));
    let r = page(&app, &back, &user).await;
    assert!(r.text.contains("data-status=\"fulfilled\""));
    assert!(r.text.contains("In use"));
    let dash = page(&app, "/dashboard", &user).await;
    assert!(dash.text.contains("id=\"package-name\">Basic</strong>"));
    assert!(page(&app, "/orders", &user).await.text.contains("Completed"));

    // Admin: holders count, take off sale, refund.
    let list = page(&app, "/admin/packages", &admin).await;
    assert!(list.text.contains("<td class=\"num\">1</td>"), "one holder, one sold");
    let r = form(&app, &format!("/admin/packages/{id}/toggle"), &admin, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!page(&app, "/packages", &user).await.text.contains("For daily coding"));
    let otn = back.split('=').nth(1).unwrap().to_string();
    let orders = page(&app, "/admin/orders?user=buyer%40example.com", &admin).await;
    assert!(orders.text.contains(&otn));
    let r = form(&app, &format!("/admin/orders/{otn}/refund"), &admin, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("id=\"notice\""));
    assert_eq!(app.balance(&user).await, "40.00", "the balance purchase was refunded");
    app.assert_money_invariants().await;
}

async fn credit_purchases_go_through_the_pay_page_and_the_settings_check_reaches_the_gateway(app: TestApp) {
    let admin = app.admin_token().await;
    let id = app
        .create_package(&admin, json!({"name": "Pro", "price": "10.00", "duration_days": 30, "daily_limit": "3"}))
        .await;
    app.configure_credit(&admin).await;
    let r = form(&app, "/admin/settings/check", &admin, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("id=\"check-result\""));
    assert!(r.text.contains("alert ok"), "the sandbox answered: {}", r.text);

    let (_, user) = app.register_and_login("buyer@example.com").await;
    assert!(page(&app, "/packages", &user).await.text.contains("buy-credit"));
    let r = form(&app, &format!("/packages/{id}/buy"), &user, &[("pay_with", "credit")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let pay = r.headers[LOCATION].to_str().unwrap().to_string();
    assert!(pay.starts_with("/pay/"));
    let otn = pay.trim_start_matches("/pay/").to_string();
    let r = page(&app, &pay, &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("/sandbox/epay/") && r.text.contains("submit.php"), "{}", r.text);
    let r = page(&app, &format!("/orders/{otn}/status"), &user).await;
    assert!(r.text.contains("hx-trigger=\"every 2s\""), "a pending order polls");
    let r = page(&app, &format!("/packages?out_trade_no={otn}"), &user).await;
    assert!(r.text.contains("data-status=\"pending\""));
    let r = form(&app, &format!("/admin/orders/{otn}/check"), &admin, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("the gateway has no such trade") && r.text.contains("data-tone=\"bad\""), "{}", r.text);

    // Someone else's order is not shown.
    let (other_id, other) = app.register_and_login("other@example.com").await;
    let r = form(&app, &format!("/admin/users/{other_id}/packages"), &admin, &[("package_id", &id.to_string())]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Package granted."));
    assert!(page(&app, "/dashboard", &other).await.text.contains("id=\"package-name\">Pro</strong>"));
    assert_eq!(page(&app, &format!("/orders/{otn}/status"), &other).await.status, StatusCode::NOT_FOUND);
    assert!(!page(&app, &format!("/packages?out_trade_no={otn}"), &other).await.text.contains("order-status"));
}

async fn the_account_page_starts_a_top_up_and_checks_its_bounds(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let account = page(&app, "/account", &user).await;
    assert!(account.text.contains("id=\"topup\""));
    let r = form(&app, "/account/topup", &user, &[("amount", "0.5")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"amount-error\""));
    let r = form(&app, "/account/topup", &user, &[("amount", "12.00")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[LOCATION].to_str().unwrap().starts_with("/pay/"));
}

async fn users_redeem_codes_and_see_announcements(app: TestApp) {
    let admin = app.admin_token().await;
    let batch = app.post("/api/admin/redemption-codes", &admin, json!({"count": 1, "amount": "7"})).await;
    let code = batch.body["codes"][0].as_str().unwrap().to_string();
    let news = json!({"title": "Maintenance <tonight>", "body": "**Short** break at 23:00"});
    assert_eq!(app.post("/api/admin/announcements", &admin, news).await.status, StatusCode::CREATED);
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let dash = page(&app, "/dashboard", &user).await;
    assert!(dash.text.contains("Maintenance &#60;tonight&#62;"));
    assert!(dash.text.contains("<strong>Short</strong>"), "announcement markdown is rendered");
    let r = form(&app, "/account/redeem", &user, &[("code", "NOPE-NOPE")]).await;
    assert!(r.text.contains("id=\"code-error\""));
    let r = form(&app, "/account/redeem", &user, &[("code", &code)]).await;
    assert!(r.text.contains("id=\"redeemed\""));
    assert!(r.text.contains("7.00 USD"), "the new balance shows at once");
    let r = form(&app, "/account/redeem", &user, &[("code", &code)]).await;
    assert!(r.text.contains("already been redeemed"));
}

on_both_databases_with_sandbox!(
    users_redeem_codes_and_see_announcements,
    admins_manage_packages_and_users_buy_them_from_the_balance,
    credit_purchases_go_through_the_pay_page_and_the_settings_check_reaches_the_gateway,
    the_account_page_starts_a_top_up_and_checks_its_bounds,
);
