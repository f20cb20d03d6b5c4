use std::collections::HashMap;

use chrono::Duration;
use codex_gateway::domain::orders::jobs;
use codex_gateway::domain::payment::epay::{self, Params};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{signed_notify, TestApp, TEST_KEY, TEST_PID};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    a_signed_notify_fulfils_a_package_order_once_and_replays_change_nothing,
    tampered_notifies_change_nothing_and_every_attempt_is_logged,
    twenty_concurrent_notifies_fulfil_a_top_up_exactly_once,
    top_ups_respect_the_bounds_and_credit_at_the_rate,
    a_payment_after_expiry_is_still_fulfilled_and_flagged,
    a_package_sold_out_before_payment_is_paid_back_to_the_balance,
    a_purchase_clicks_through_the_sandbox_and_is_refunded,
    an_online_package_purchase_and_its_refund_each_leave_a_ledger_row,
    notify_racing_reconciliation_fulfils_exactly_once,
    an_admin_check_fulfils_a_paid_order_whose_notify_was_lost,
    a_refund_the_gateway_refuses_changes_nothing,
    order_lists_filter_by_user_status_and_date,
    a_cancelled_sandbox_payment_leaves_the_order_pending,
);

struct Shop {
    admin: String,
    user: String,
    user_id: i64,
    package_id: i64,
}

async fn shop(app: &TestApp) -> Shop {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let package_id = app
        .create_package(&admin, json!({"name": "月度会员", "price": "30.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    let (user_id, user) = app.register_and_login("buyer@example.com").await;
    Shop { admin, user, user_id, package_id }
}

/// Starts a gateway purchase; returns the purchase answer.
async fn order_package(app: &TestApp, token: &str, package_id: i64) -> Value {
    let r = app.post(&format!("/api/packages/{package_id}/purchase"), token, json!({"pay_with": "credit"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body
}

/// A notify as the gateway would sign it, with optional overrides (applied before signing).
fn notify(out_trade_no: &str, money: &str, overrides: &[(&str, &str)]) -> Params {
    signed_notify(out_trade_no, "G20260115000001", money, overrides)
}

async fn order_of(app: &TestApp, admin: &str, otn: &str) -> Value {
    let list = app.get("/api/admin/orders?per_page=200", admin).await;
    list.body["items"].as_array().unwrap().iter().find(|o| o["out_trade_no"] == otn).cloned().unwrap()
}

/// Submits an order's signed form to the sandbox; returns the sandbox trade number.
pub(crate) async fn submit_to_sandbox(app: &TestApp, purchase: &Value) -> String {
    let params: HashMap<String, String> = serde_json::from_value(purchase["gateway"]["params"].clone()).unwrap();
    let url = purchase["gateway"]["url"].as_str().unwrap();
    let r = app.client.post(url).form(&params).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    location.rsplit('/').next().unwrap().to_string()
}

/// The hidden fields and action of the auto-submitting form on `/pay/{out_trade_no}`, as a
/// browser would read them (HTML entities decoded).
async fn pay_page_form(app: &TestApp, out_trade_no: &str) -> (String, Vec<(String, String)>) {
    let page = app.client.get(app.url(&format!("/pay/{out_trade_no}"))).send().await.unwrap().text().await.unwrap();
    // Only the payment form: the site layout around it has inputs of its own.
    let start = page.find("<form id=\"pay\"").unwrap();
    let html = &page[start..start + page[start..].find("</form>").unwrap()];
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#x27;", "'")
            .replace("&#x2f;", "/")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        unescape(&tag[start..start + tag[start..].find('"').unwrap()])
    };
    let form_tag = &html[html.find("<form").unwrap()..];
    let action = attr(&form_tag[..form_tag.find('>').unwrap()], "action");
    let fields = html
        .split("<input ")
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').unwrap()];
            (attr(tag, "name"), attr(tag, "value"))
        })
        .collect();
    (action, fields)
}

async fn sandbox_pay(app: &TestApp, trade_no: &str, deliver_notify: bool) -> reqwest::Response {
    let notify = if deliver_notify { "yes" } else { "no" };
    app.client
        .post(app.url(&format!("/sandbox/epay/cashier/{trade_no}/pay")))
        .form(&[("notify", notify)])
        .send()
        .await
        .unwrap()
}

async fn a_signed_notify_fulfils_a_package_order_once_and_replays_change_nothing(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();
    assert!(otn.len() <= 32 && otn.is_ascii());
    assert_eq!(purchase["order"]["status"], "pending");
    assert_eq!(purchase["order"]["amount"], "30.00");
    assert!(purchase["pay_url"].as_str().unwrap().ends_with(&format!("/pay/{otn}")));
    let page = app.client.get(app.url(&format!("/pay/{otn}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/sandbox/epay/pay/submit.php"), "{page}");
    assert!(page.contains(r#"name="sign""#) && page.contains("30.00") && page.contains("<button"));
    assert!(!page.contains(TEST_KEY), "the key never reaches the browser");
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 0, "nothing before payment");

    let params = notify(&otn, "30.00", &[]);
    assert_eq!(app.send_notify(&params).await, (StatusCode::OK, "success".to_string()));
    let order = order_of(&app, &s.admin, &otn).await;
    assert_eq!(order["status"], "fulfilled");
    assert_eq!(order["trade_no"], "G20260115000001");
    assert_eq!(order["fulfilment"], "started");
    for _ in 0..3 {
        assert_eq!(app.send_notify(&params).await.1, "success", "repeats are acknowledged");
    }
    let mine = app.get("/api/user/packages", &s.user).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine.body["items"][0]["ends_at"], "2026-02-14T12:00:00+08:00", "replays do not extend");
    assert_eq!(app.get(&format!("/api/admin/packages/{}", s.package_id), &s.admin).await.body["sold"], 1);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM payment_notifies ORDER BY id").fetch_all(app.db.pool()).await.unwrap();
    assert_eq!(outcomes, vec!["fulfilled", "duplicate", "duplicate", "duplicate"]);
    // POST form notifies are accepted too.
    let post = app.client.post(app.url("/api/payment/credit/notify")).form(&params).send().await.unwrap();
    assert_eq!(post.text().await.unwrap(), "success");
    let paid_page = app.client.get(app.url(&format!("/pay/{otn}"))).send().await.unwrap();
    assert_eq!(paid_page.status(), StatusCode::CONFLICT);
    app.assert_money_invariants().await;
}

async fn tampered_notifies_change_nothing_and_every_attempt_is_logged(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap();
    let mut forged_amount = notify(otn, "30.00", &[]);
    forged_amount.insert("money".into(), "0.01".into());
    let mut bad_sign = notify(otn, "30.00", &[]);
    bad_sign.insert("sign".into(), "0".repeat(32));
    let attempts = [
        (forged_amount, "bad_signature"),
        (bad_sign, "bad_signature"),
        (notify(otn, "0.01", &[]), "amount_mismatch"),
        (notify(otn, "30.00", &[("pid", "9999")]), "wrong_pid"),
        (notify(otn, "30.00", &[("trade_status", "TRADE_CLOSED")]), "not_success:TRADE_CLOSED"),
        (notify("P20260115000000NOPE0000", "30.00", &[]), "unknown_order"),
        (epay::signed(notify(otn, "30.00", &[]), "wrong-key"), "bad_signature"),
    ];
    for (params, expected) in &attempts {
        let (status, body) = app.send_notify(params).await;
        assert_ne!(body, "success", "{expected}");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{expected}");
    }
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM payment_notifies ORDER BY id").fetch_all(app.db.pool()).await.unwrap();
    assert_eq!(outcomes, attempts.iter().map(|(_, o)| o.to_string()).collect::<Vec<_>>());
    assert_eq!(order_of(&app, &s.admin, otn).await["status"], "pending");
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries").await, 0);
}

async fn twenty_concurrent_notifies_fulfil_a_top_up_exactly_once(app: TestApp) {
    let s = shop(&app).await;
    let r = app.post("/api/user/topup", &s.user, json!({"amount": "10.00"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let params = notify(&otn, "10.00", &[]);
    let answers = futures::future::join_all((0..20).map(|_| app.send_notify(&params))).await;
    assert!(answers.iter().all(|(_, body)| body == "success"), "{answers:?}");
    assert_eq!(app.balance(&s.user).await, "10.00");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'topup'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies WHERE outcome = 'fulfilled'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies WHERE outcome = 'duplicate'").await, 19);
    app.assert_money_invariants().await;
}

async fn top_ups_respect_the_bounds_and_credit_at_the_rate(app: TestApp) {
    let s = shop(&app).await;
    for (amount, field) in [("0.50", "amount"), ("1000.01", "amount"), ("10.001", "amount")] {
        let r = app.post("/api/user/topup", &s.user, json!({"amount": amount})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{amount}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field);
    }
    let r = app.put("/api/admin/settings", &s.admin, json!({"credit": {"topup_rate": "2"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.post("/api/user/topup", &s.user, json!({"amount": 12.5})).await;
    assert_eq!(r.body["order"]["amount"], "12.50");
    assert_eq!(r.body["order"]["credit_amount"], "25.00");
    assert_eq!(r.body["gateway"]["params"]["money"], "12.50");
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap();
    assert_eq!(app.send_notify(&notify(otn, "12.50", &[])).await.1, "success");
    assert_eq!(app.balance(&s.user).await, "25.00");
    let r = app.put("/api/admin/settings", &s.admin, json!({"credit": {"topup_enabled": false}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let off = app.post("/api/user/topup", &s.user, json!({"amount": "10"})).await;
    assert_eq!(off.error_code(), "topup_disabled");
    app.assert_money_invariants().await;
}

async fn a_payment_after_expiry_is_still_fulfilled_and_flagged(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap();
    app.clock.advance(Duration::minutes(14));
    assert_eq!(jobs::expire_once(app.state.env()).await.unwrap(), 0);
    app.clock.advance(Duration::minutes(1));
    assert_eq!(jobs::expire_once(app.state.env()).await.unwrap(), 1);
    assert_eq!(order_of(&app, &s.admin, otn).await["status"], "expired");
    let page = app.client.get(app.url(&format!("/pay/{otn}"))).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::CONFLICT, "an expired order cannot be paid from our page");

    assert_eq!(app.send_notify(&notify(otn, "30.00", &[])).await.1, "success");
    let order = order_of(&app, &s.admin, otn).await;
    assert_eq!(order["status"], "fulfilled");
    assert_eq!(order["flags"], json!(["late_payment"]));
    let outcome = app.count("SELECT COUNT(*) FROM payment_notifies WHERE outcome = 'fulfilled_late'").await;
    assert_eq!(outcome, 1);
    let mine = app.get("/api/user/packages", &s.user).await;
    assert_eq!(mine.body["items"][0]["starts_at"], "2026-01-15T12:15:00+08:00", "starts at payment confirmation");
}

async fn a_package_sold_out_before_payment_is_paid_back_to_the_balance(app: TestApp) {
    let s = shop(&app).await;
    app.put(&format!("/api/admin/packages/{}", s.package_id), &s.admin, json!({"stock": 1})).await;
    let first = order_package(&app, &s.user, s.package_id).await;
    let (_, other) = app.register_and_login("other@example.com").await;
    let second = order_package(&app, &other, s.package_id).await;
    let first_otn = first["order"]["out_trade_no"].as_str().unwrap();
    let second_otn = second["order"]["out_trade_no"].as_str().unwrap();
    assert_eq!(app.send_notify(&notify(second_otn, "30.00", &[])).await.1, "success");
    assert_eq!(app.send_notify(&notify(first_otn, "30.00", &[])).await.1, "success");
    let paid_back = order_of(&app, &s.admin, first_otn).await;
    assert_eq!(paid_back["status"], "fulfilled");
    assert_eq!(paid_back["fulfilment"], "sold_out_credit");
    assert_eq!(paid_back["flags"], json!(["sold_out_credited"]));
    assert_eq!(app.balance(&s.user).await, "30.00");
    assert_eq!(app.get("/api/user/packages", &other).await.body["items"][0]["status"], "active");
    assert_eq!(app.get(&format!("/api/admin/packages/{}", s.package_id), &s.admin).await.body["stock"], 0);
    // Refunding the paid-back order takes the credit back (the sandbox never saw it: refused).
    let refund = app.post(&format!("/api/admin/orders/{first_otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(refund.error_code(), "refund_refused");
    assert_eq!(app.balance(&s.user).await, "30.00");
    app.assert_money_invariants().await;
}

async fn a_purchase_clicks_through_the_sandbox_and_is_refunded(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();
    let mut forged: HashMap<String, String> = serde_json::from_value(purchase["gateway"]["params"].clone()).unwrap();
    forged.insert("money".into(), "0.01".into());
    let refused = app.client.post(app.url("/sandbox/epay/pay/submit.php")).form(&forged).send().await.unwrap();
    let refused: Value = refused.json().await.unwrap();
    assert!(refused["error_msg"].as_str().unwrap().contains("bad signature"), "{refused}");
    // Submit exactly what the browser would post from our /pay page.
    let (action, fields) = pay_page_form(&app, &otn).await;
    assert_eq!(action, app.url("/sandbox/epay/pay/submit.php"));
    assert!(fields.iter().any(|(k, v)| k == "name" && v == "月度会员"));
    assert!(fields.iter().any(|(k, v)| k == "notify_url" && v == &app.url("/api/payment/credit/notify")));
    let submitted = app.client.post(&action).form(&fields).send().await.unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let location = submitted.headers()["location"].to_str().unwrap().to_string();
    let trade_no = location.rsplit('/').next().unwrap().to_string();
    let cashier = app.client.get(app.url(&format!("/sandbox/epay/cashier/{trade_no}"))).send().await.unwrap();
    let html = cashier.text().await.unwrap();
    assert!(html.contains("SANDBOX") && html.contains("月度会员") && html.contains("30.00"), "{html}");

    let paid = sandbox_pay(&app, &trade_no, true).await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let back = paid.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&app.url("/packages?")) && back.contains("trade_status=TRADE_SUCCESS"), "{back}");
    let order = order_of(&app, &s.admin, &otn).await;
    assert_eq!(order["status"], "fulfilled");
    assert_eq!(order["trade_no"], trade_no.as_str());
    assert_eq!(app.get("/api/user/packages", &s.user).await.body["items"][0]["status"], "active");
    let notified = app.count("SELECT COUNT(*) FROM sandbox_trades WHERE notified = 1 AND notify_attempts = 1").await;
    assert_eq!(notified, 1);
    // Paying twice at the cashier does not pay twice.
    let again = sandbox_pay(&app, &trade_no, true).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 1);

    let refund = app.post(&format!("/api/admin/orders/{otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    assert_eq!(refund.body["order"]["status"], "refunded");
    let mine = app.get("/api/user/packages", &s.user).await;
    assert_eq!(mine.body["items"][0]["status"], "refunded");
    assert_eq!(mine.body["items"][0]["current"], false);
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_trades WHERE status = 'refunded'").await, 1);
    assert_eq!(app.get(&format!("/api/admin/packages/{}", s.package_id), &s.admin).await.body["sold"], 0);
    let twice = app.post(&format!("/api/admin/orders/{otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(twice.error_code(), "not_refundable");
    app.assert_money_invariants().await;
}

/// Every allowance change leaves a ledger row (issue 22): a package paid through the
/// gateway moves no balance, yet its delivery and its refund each leave one, naming the
/// order and the user package (before, neither did: the user's history showed nothing).
async fn an_online_package_purchase_and_its_refund_each_leave_a_ledger_row(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();
    let trade_no = submit_to_sandbox(&app, &purchase).await;
    assert_eq!(sandbox_pay(&app, &trade_no, true).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(order_of(&app, &s.admin, &otn).await["status"], "fulfilled");
    let refund = app.post(&format!("/api/admin/orders/{otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    assert_eq!(refund.body["order"]["status"], "refunded");
    let ledger = app.get("/api/user/ledger", &s.user).await;
    assert_eq!(ledger.status, StatusCode::OK, "{}", ledger.text);
    let rows: Vec<(String, String)> = ledger.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reference"] == otn.as_str())
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["amount"].as_str().unwrap().to_string()))
        .collect();
    assert!(rows.contains(&("package_purchase".to_string(), "0.00".to_string())), "delivery row: {rows:?}");
    assert!(rows.contains(&("refund".to_string(), "0.00".to_string())), "refund row: {rows:?}");
    assert_eq!(rows.len(), 2, "one row each: {rows:?}");
    let up_id = app.count("SELECT id FROM user_packages").await;
    let named = app
        .count(&format!("SELECT COUNT(*) FROM ledger_entries WHERE reference = '{otn}' AND user_package_id = {up_id}"))
        .await;
    assert_eq!(named, 2, "both rows name the user package");
    assert_eq!(app.balance(&s.user).await, "0.00");
    app.assert_all_invariants().await;
}

async fn notify_racing_reconciliation_fulfils_exactly_once(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();
    let trade_no = submit_to_sandbox(&app, &purchase).await;
    let unpaid = jobs::reconcile_once(app.state.env()).await.unwrap();
    assert_eq!((unpaid.checked, unpaid.unpaid, unpaid.fulfilled), (1, 1, 0));
    assert_eq!(sandbox_pay(&app, &trade_no, false).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(order_of(&app, &s.admin, &otn).await["status"], "pending", "the notify was lost");

    let params = notify(&otn, "30.00", &[("trade_no", &trade_no)]);
    let notifies = futures::future::join_all((0..10).map(|_| app.send_notify(&params)));
    let reconciles = futures::future::join_all((0..3).map(|_| jobs::reconcile_once(app.state.env())));
    let (answers, reports) = tokio::join!(notifies, reconciles);
    assert!(answers.iter().all(|(_, b)| b == "success"), "{answers:?}");
    let by_reconcile: u64 = reports.into_iter().map(|r| r.unwrap().fulfilled).sum();
    let by_notify = app.count("SELECT COUNT(*) FROM payment_notifies WHERE outcome = 'fulfilled'").await;
    assert_eq!(by_reconcile + by_notify as u64, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 1);
    let mine = app.get("/api/user/packages", &s.user).await;
    assert_eq!(mine.body["items"][0]["ends_at"], "2026-02-14T12:00:00+08:00");
    assert_eq!(order_of(&app, &s.admin, &otn).await["status"], "fulfilled");
}

async fn an_admin_check_fulfils_a_paid_order_whose_notify_was_lost(app: TestApp) {
    let s = shop(&app).await;
    let r = app.post("/api/user/topup", &s.user, json!({"amount": "5"})).await;
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let trade_no = submit_to_sandbox(&app, &r.body).await;
    let before = app.post(&format!("/api/admin/orders/{otn}/check"), &s.admin, json!({})).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    assert_eq!(before.body["check"]["gateway_paid"], false);
    sandbox_pay(&app, &trade_no, false).await;
    let check = app.post(&format!("/api/admin/orders/{otn}/check"), &s.admin, json!({})).await;
    assert_eq!(check.body["check"]["fulfilled_now"], true, "{}", check.text);
    assert_eq!(check.body["order"]["status"], "fulfilled");
    let again = app.post(&format!("/api/admin/orders/{otn}/check"), &s.admin, json!({})).await;
    assert_eq!(again.body["check"]["fulfilled_now"], false);
    assert_eq!(app.balance(&s.user).await, "5.00");
    let user_check = app.post(&format!("/api/admin/orders/{otn}/check"), &s.user, json!({})).await;
    assert_eq!(user_check.status, StatusCode::FORBIDDEN);
    app.assert_money_invariants().await;
}

async fn a_refund_the_gateway_refuses_changes_nothing(app: TestApp) {
    let s = shop(&app).await;
    // Paid by a notify the sandbox never issued: the sandbox knows no such trade and refuses.
    let r = app.post("/api/user/topup", &s.user, json!({"amount": "10"})).await;
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    app.send_notify(&notify(&otn, "10.00", &[])).await;
    let refused = app.post(&format!("/api/admin/orders/{otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "refund_refused");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("订单不存在"), "{}", refused.text);
    assert_eq!(order_of(&app, &s.admin, &otn).await["status"], "fulfilled");
    assert_eq!(app.balance(&s.user).await, "10.00");

    // The classic flavour (`api.php?act=refund`) refunds a real sandbox trade and takes the top-up back.
    app.put("/api/admin/settings", &s.admin, json!({"credit": {"flavour": "classic"}})).await;
    let r = app.post("/api/user/topup", &s.user, json!({"amount": "3"})).await;
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let trade_no = submit_to_sandbox(&app, &r.body).await;
    sandbox_pay(&app, &trade_no, true).await;
    assert_eq!(app.balance(&s.user).await, "13.00");
    let ok = app.post(&format!("/api/admin/orders/{otn}/refund"), &s.admin, json!({})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(app.balance(&s.user).await, "10.00");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'refund'").await, 1);
    app.assert_money_invariants().await;
}

async fn order_lists_filter_by_user_status_and_date(app: TestApp) {
    let s = shop(&app).await;
    let (_, other) = app.register_and_login("other@example.com").await;
    order_package(&app, &s.user, s.package_id).await;
    app.clock.advance(Duration::days(1));
    let r = app.post("/api/user/topup", &s.user, json!({"amount": "2"})).await;
    let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    app.send_notify(&notify(&otn, "2.00", &[])).await;
    order_package(&app, &other, s.package_id).await;

    let mine = app.get("/api/user/orders", &s.user).await;
    assert_eq!(mine.body["total"], 2);
    let one = app.get(&format!("/api/user/orders/{otn}"), &s.user).await;
    assert_eq!(one.body["status"], "fulfilled");
    assert_eq!(app.get(&format!("/api/user/orders/{otn}"), &other).await.status, StatusCode::NOT_FOUND);
    let all = app.get("/api/admin/orders", &s.admin).await;
    assert_eq!(all.body["total"], 3);
    let by_user = app.get(&format!("/api/admin/orders?user_id={}&status=pending", s.user_id), &s.admin).await;
    assert_eq!(by_user.body["total"], 1);
    let recent = app.get("/api/admin/orders?from=2026-01-16T00:00:00%2B08:00&per_page=1", &s.admin).await;
    assert_eq!(recent.body["total"], 2);
    assert_eq!(recent.body["items"].as_array().unwrap().len(), 1);
    let bad = app.get("/api/admin/orders?from=yesterday", &s.admin).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/api/admin/orders", &s.user).await.status, StatusCode::FORBIDDEN);
}

async fn a_cancelled_sandbox_payment_leaves_the_order_pending(app: TestApp) {
    let s = shop(&app).await;
    let purchase = order_package(&app, &s.user, s.package_id).await;
    let otn = purchase["order"]["out_trade_no"].as_str().unwrap().to_string();
    let trade_no = submit_to_sandbox(&app, &purchase).await;
    assert_eq!(submit_to_sandbox(&app, &purchase).await, trade_no, "re-submitting the same order reuses the trade");
    let cancel = app.client.post(app.url(&format!("/sandbox/epay/cashier/{trade_no}/cancel"))).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::SEE_OTHER);
    let back = format!("/packages?out_trade_no={otn}&cancelled=1");
    assert_eq!(cancel.headers()["location"].to_str().unwrap(), app.url(&back), "back with the order, saying cancelled");
    let late_click = sandbox_pay(&app, &trade_no, true).await;
    assert_eq!(late_click.status(), StatusCode::OK, "a cancelled trade cannot be paid");
    let query = app
        .client
        .get(app.url("/sandbox/epay/api.php"))
        .query(&[("act", "order"), ("pid", TEST_PID), ("key", TEST_KEY), ("out_trade_no", &otn)])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!((query["code"].as_i64(), query["status"].as_i64()), (Some(1), Some(0)), "{query}");
    let wrong_key = app
        .client
        .get(app.url("/sandbox/epay/api.php"))
        .query(&[("act", "order"), ("pid", TEST_PID), ("key", "guess"), ("out_trade_no", &otn)])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(wrong_key["code"], -1);
    assert_eq!(order_of(&app, &s.admin, &otn).await["status"], "pending");
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 0);

    // Back on /packages the box says the payment was cancelled (and stops polling).
    let cookie = format!("cg_session={}", s.user);
    let page = app.client.get(app.url(&back)).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"order-cancelled\"") && html.contains("nothing was charged"), "{html}");
    assert!(!html.contains("hx-get=\"/orders/"), "a cancelled payment is not awaited");
    // "Pay now" after a Cancel opens the same trade again, payable.
    assert_eq!(submit_to_sandbox(&app, &purchase).await, trade_no);
    let cashier = app.client.get(app.url(&format!("/sandbox/epay/cashier/{trade_no}"))).send().await.unwrap();
    assert!(cashier.text().await.unwrap().contains("id=\"sandbox-pay\""), "the cashier offers to pay again");
}
