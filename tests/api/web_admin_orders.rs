//! The admin's order list and re-check over HTTP: a cancelled or expired trade is shown
//! as what it is (amber, the order's state named), never as a green "not paid (succ)".

use codex_gateway::domain::auth::extract::csrf_token;
use codex_gateway::domain::orders::jobs;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases_with_sandbox;
use crate::payments::submit_to_sandbox;

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&[("_csrf", csrf)]);
    TestApp::answer(req.send().await.unwrap()).await
}

async fn a_recheck_of_a_cancelled_then_expired_trade_says_so_in_amber(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let package = app
        .create_package(&admin, json!({"name": "Pro", "price": "10.00", "duration_days": 30, "daily_limit": 3}))
        .await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    let purchase =
        app.post(&format!("/api/packages/{package}/purchase"), &user, json!({"pay_with": "credit"})).await.body;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();

    let unknown = form(&app, &format!("/admin/orders/{otn}/check"), &admin).await;
    assert!(unknown.text.contains("data-tone=\"bad\"") && unknown.text.contains("the gateway has no such trade"));

    let trade_no = submit_to_sandbox(&app, &purchase).await;
    let cancel = app.client.post(app.url(&format!("/sandbox/epay/cashier/{trade_no}/cancel"))).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::SEE_OTHER);
    let r = form(&app, &format!("/admin/orders/{otn}/check"), &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("data-tone=\"warn\""), "amber, not green: {}", r.text);
    assert!(r.text.contains(&format!("{otn}: not paid at the gateway · order: Awaiting payment")), "{}", r.text);
    assert!(!r.text.contains("(succ)"), "the query's own \"succ\" says nothing about the trade");

    app.clock.advance(chrono::Duration::minutes(16));
    // Past its time to pay, before the job marks it: the notice names the state the badge shows.
    let r = form(&app, &format!("/admin/orders/{otn}/check"), &admin).await;
    assert!(r.text.contains(&format!("{otn}: not paid at the gateway · order: Expired")), "{}", r.text);
    assert!(!r.text.contains("order: Awaiting payment"), "the badge says Expired, so does the notice");
    assert_eq!(jobs::expire_once(app.state.env()).await.unwrap(), 1);
    let r = form(&app, &format!("/admin/orders/{otn}/check"), &admin).await;
    assert!(r.text.contains("data-tone=\"warn\"") && r.text.contains("order: Expired"), "{}", r.text);
    let expired = page(&app, "/admin/orders?status=expired", &admin).await;
    assert!(expired.text.contains(&otn) && expired.text.contains("badge warn"), "the list filters expired orders");
    assert!(!page(&app, "/admin/orders?status=pending", &admin).await.text.contains(&otn));
}

on_both_databases_with_sandbox!(a_recheck_of_a_cancelled_then_expired_trade_says_so_in_amber);
