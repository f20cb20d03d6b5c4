//! The invariant checker itself can fail: each kind of corruption written straight
//! into the database is reported (a checker that never fires proves nothing).

use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{report, TestApp};
use crate::on_both_databases;
use crate::proxy::{setup, v1};

on_both_databases!(the_invariant_checker_reports_every_kind_of_corruption);

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sql).execute(app.db.pool()).await.unwrap();
}

/// Applies `corrupt`, expects a violation naming `expected`, then applies `repair`.
async fn expect_caught(app: &TestApp, corrupt: &str, expected: &str, repair: &str) {
    exec(app, corrupt).await;
    let violations = app.invariant_violations().await;
    assert!(violations.iter().any(|v| v.contains(expected)), "`{corrupt}` not caught as `{expected}`: {violations:?}");
    exec(app, repair).await;
    assert!(app.invariant_violations().await.is_empty(), "repair of `{corrupt}` incomplete");
}

async fn the_invariant_checker_reports_every_kind_of_corruption(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10.00")).await;
    let r = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();
    app.assert_all_invariants().await;
    let u = s.user_id;
    let cases = [
        (
            format!("UPDATE users SET balance = balance + 1 WHERE id = {u}"),
            "balance = sum(ledger.amount)",
            format!("UPDATE users SET balance = balance - 1 WHERE id = {u}"),
        ),
        (
            format!("UPDATE users SET held = held + 5 WHERE id = {u}"),
            "users.held = sum of open holds",
            format!("UPDATE users SET held = held - 5 WHERE id = {u}"),
        ),
        (
            format!("UPDATE daily_usage SET package_used = package_used + 7 WHERE user_id = {u}"),
            "daily_usage.package_used",
            format!("UPDATE daily_usage SET package_used = package_used - 7 WHERE user_id = {u}"),
        ),
        (
            "UPDATE ledger_entries SET reference = 'usage:gone' WHERE kind = 'usage'".to_string(),
            "exactly one ledger entry usage:<request_id>",
            "UPDATE ledger_entries SET reference = 'usage:' || (SELECT request_id FROM usage_logs) WHERE kind = 'usage'"
                .to_string(),
        ),
        (
            "UPDATE usage_logs SET balance_cost = balance_cost + 1".to_string(),
            "package_cost + balance_cost = cost",
            "UPDATE usage_logs SET balance_cost = balance_cost - 1".to_string(),
        ),
    ];
    for (corrupt, expected, repair) in &cases {
        expect_caught(&app, corrupt, expected, repair).await;
    }
    // A top-up credited without being fulfilled.
    app.configure_credit(&s.admin).await;
    let topup = app.post("/api/user/topup", &s.user_token, json!({"amount": "5.00"})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    expect_caught(
        &app,
        &format!(
            "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, reference, created_at) \
             VALUES ({u}, 'topup', 0, 0, '{otn}', 0)"
        ),
        "top-up was credited exactly once",
        &format!("DELETE FROM ledger_entries WHERE reference = '{otn}'"),
    )
    .await;
    // A package bought from the balance and refunded, whose refund row goes missing
    // (what a refund of an online-paid package once left: no row at all).
    let package = app
        .create_package(&s.admin, json!({"name": "p", "price": "1.00", "duration_days": 30, "daily_limit": 1}))
        .await;
    let bought =
        app.post(&format!("/api/packages/{package}/purchase"), &s.user_token, json!({"pay_with": "balance"})).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
    let potn = bought.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let refund = app.post(&format!("/api/admin/orders/{potn}/refund"), &s.admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.text);
    app.assert_all_invariants().await;
    expect_caught(
        &app,
        &format!("UPDATE ledger_entries SET kind = 'admin_adjust' WHERE reference = '{potn}' AND kind = 'refund'"),
        "a refunded package order left a refund ledger row",
        &format!("UPDATE ledger_entries SET kind = 'refund' WHERE reference = '{potn}' AND kind = 'admin_adjust'"),
    )
    .await;
    expect_caught(
        &app,
        &format!(
            "UPDATE ledger_entries SET kind = 'admin_adjust' WHERE reference = '{potn}' AND kind = 'package_purchase'"
        ),
        "a delivered package order left a package_purchase ledger row",
        &format!(
            "UPDATE ledger_entries SET kind = 'package_purchase' WHERE reference = '{potn}' AND kind = 'admin_adjust'"
        ),
    )
    .await;
    app.assert_all_invariants().await;
    report("invariant_checker_self_test", app.backend, &[("corruptions_caught", cases.len() as u64 + 3)], 0);
}
