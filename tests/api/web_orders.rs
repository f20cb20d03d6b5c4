//! Issue 20, the buyer's side of orders: the packages page says what an order did
//! (active until …, queued from …, balance credited …), how much balance is missing
//! (with a top-up link), drops the gateway's signed query, and an order past its time to
//! pay reads "Expired" without a dead "Pay now". The dashboard lists queued packages
//! with their start, the days left and the countdown to the reset in the named zone.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::{COOKIE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{signed_notify, Answer, TestApp};
use crate::on_both_databases_with_sandbox;
use crate::web_money::{page, page_zh};

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

async fn buy_from_balance(app: &TestApp, user: &str, id: i64) -> Answer {
    form(app, &format!("/packages/{id}/buy"), user, &[("pay_with", "balance")]).await
}

async fn buying_says_what_happened_and_what_is_missing(app: TestApp) {
    let admin = app.admin_token().await;
    let basic = app
        .create_package(&admin, json!({"name": "Basic", "price": "10.00", "duration_days": 30, "daily_limit": "5"}))
        .await;
    let pro = app
        .create_package(&admin, json!({"name": "Pro", "price": "20.00", "duration_days": 7, "daily_limit": "9"}))
        .await;
    let (id, user) = app.register_and_login("buyer@example.com").await;
    app.fund(&admin, id, "15").await;

    let r = buy_from_balance(&app, &user, pro).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let shortfall = &r.text[r.text.find("id=\"shortfall\"").expect("the shortfall is said")..];
    assert!(shortfall.contains("5.00 USD short of this package (balance 15.00 USD)"), "{}", &shortfall[..300]);
    assert!(shortfall.contains("href=\"/account#amount\""), "a way to top up");

    let r = buy_from_balance(&app, &user, basic).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = page(&app, r.headers[LOCATION].to_str().unwrap(), &user).await;
    assert!(r.text.contains("Payment received: Basic is active until 2026-02-14 12:00."), "{}", r.text);

    let shop = page(&app, "/packages", &user).await;
    assert!(
        shop.text.contains(&format!("action=\"/packages/{basic}/buy\" class=\"renew\"")),
        "Renew on the held package"
    );
    app.fund(&admin, id, "20").await;
    let r = buy_from_balance(&app, &user, pro).await;
    let r = page(&app, r.headers[LOCATION].to_str().unwrap(), &user).await;
    assert!(
        r.text.contains(
            "Pro is queued behind your current package; it starts 2026-02-14 12:00 and runs until 2026-02-21 12:00."
        ),
        "not \"your package is active\": {}",
        r.text
    );
    assert!(!r.text.contains("your package is active"));

    let api = app.get("/api/user/packages", &user).await.body;
    let queued =
        api.as_array().or_else(|| api["items"].as_array()).unwrap().iter().find(|p| p["status"] == "queued").cloned();
    assert_eq!(queued.unwrap()["starts_at"], "2026-02-14T12:00:00+08:00");
    let dash = page(&app, "/dashboard", &user).await;
    let list = &dash.text[dash.text.find("id=\"queued-packages\"").expect("queued packages are listed")..];
    assert!(list.contains("<strong>Pro</strong> · 7 days · 9.00 USD/day"), "{}", &list[..400]);
    assert!(list.contains("<span class=\"queued-start\">2026-02-14 12:00</span>"));
    assert!(dash.text.contains("id=\"days-left\">30 days left</span>"));
    assert!(dash.text.contains("2026-01-16 00:00 (Asia/Shanghai)"), "the reset names its zone");
    assert!(dash.text.contains("id=\"countdown\">in 12 h 0 min</span>"));
    let zh = page_zh(&app, "/dashboard", &user).await;
    assert!(zh.contains("12 小时 0 分钟后") && zh.contains("排队中的套餐") && zh.contains("剩余 30 天"));
    app.assert_money_invariants().await;
}

async fn a_top_up_return_drops_the_signed_query_and_says_what_was_credited(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let r = form(&app, "/account/topup", &user, &[("amount", "12.00")]).await;
    let otn = r.headers[LOCATION].to_str().unwrap().trim_start_matches("/pay/").to_string();
    let orders = page(&app, "/orders", &user).await;
    assert!(orders.text.contains("class=\"pay-now\""), "a pending order can be paid");
    assert!(orders.text.contains("pay by 2026-01-15 12:15"));

    let notify = signed_notify(&otn, "T-1", "12.00", &[]);
    assert_eq!(app.send_notify(&notify).await, (StatusCode::OK, "success".to_string()));
    let query = serde_urlencoded::to_string(&notify).unwrap();
    let r = page(&app, &format!("/packages?{query}"), &user).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the gateway's return is redirected");
    let clean = r.headers[LOCATION].to_str().unwrap();
    assert_eq!(clean, format!("/packages?out_trade_no={otn}"), "no signature left in the address");
    let r = page(&app, clean, &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("Payment received: 12.00 USD credited to your balance, which is now 12.00 USD."),
        "{}",
        r.text
    );
    assert_eq!(app.balance(&user).await, "12.00");
}

async fn an_order_past_its_time_to_pay_reads_expired_without_pay_now(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let r = form(&app, "/account/topup", &user, &[("amount", "5.00")]).await;
    let otn = r.headers[LOCATION].to_str().unwrap().trim_start_matches("/pay/").to_string();
    app.clock.advance(chrono::Duration::minutes(16));
    let orders = page(&app, "/orders", &user).await;
    assert!(!orders.text.contains("class=\"pay-now\""), "no dead Pay now: {}", orders.text);
    assert!(orders.text.contains("badge warn\">Expired"), "{}", orders.text);
    assert!(!orders.text.contains("Awaiting payment"));
    let r = page(&app, &format!("/packages?out_trade_no={otn}"), &user).await;
    assert!(r.text.contains("data-status=\"expired\""));
    assert!(!r.text.contains("every 2s"), "an expired order is not polled");
}

on_both_databases_with_sandbox!(
    buying_says_what_happened_and_what_is_missing,
    a_top_up_return_drops_the_signed_query_and_says_what_was_credited,
    an_order_past_its_time_to_pay_reads_expired_without_pay_now,
);
