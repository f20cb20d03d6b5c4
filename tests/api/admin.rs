use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    admin_routes_refuse_users_and_guests,
    admins_search_and_page_through_users,
    balance_adjustments_need_a_reason_and_leave_ledger_rows,
    settings_hide_the_merchant_key,
    an_admin_cannot_lock_themselves_out,
);

async fn admin_routes_refuse_users_and_guests(app: TestApp) {
    let (_, user) = app.register_and_login("u@example.com").await;
    for path in ["/api/admin/users", "/api/admin/settings", "/api/admin/ledger"] {
        let r = app.get(path, &user).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(r.error_code(), "admin_only");
        let guest = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(guest.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

async fn admins_search_and_page_through_users(app: TestApp) {
    let admin = app.admin_token().await;
    for i in 0..5 {
        app.register_and_login(&format!("person{i}@example.com")).await;
    }
    let page = app.get("/api/admin/users?q=person&per_page=2&page=2", &admin).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.body["total"], 5);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["page"], 2);
    let admins = app.get("/api/admin/users?role=admin", &admin).await;
    assert_eq!(admins.body["total"], 1);
    let bad = app.get("/api/admin/users?role=king", &admin).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_page = app.get("/api/admin/users?page=x", &admin).await;
    assert_eq!(bad_page.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_page.error_code(), "invalid_query");
}

async fn balance_adjustments_need_a_reason_and_leave_ledger_rows(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("b@example.com").await;
    let path = format!("/api/admin/users/{user_id}/balance");
    let no_reason = app.post(&path, &admin, json!({"amount": "10", "reason": " "})).await;
    assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
    let float_trap = app.post(&path, &admin, json!({"amount": 0.1, "reason": "gift"})).await;
    assert_eq!(float_trap.body["balance"], "0.10");
    let credit = app.post(&path, &admin, json!({"amount": "29.90", "reason": "gift"})).await;
    assert_eq!(credit.status, StatusCode::OK);
    assert_eq!(credit.body["balance"], "30.00");
    let too_much = app.post(&path, &admin, json!({"amount": "-30.01", "reason": "oops"})).await;
    assert_eq!(too_much.status, StatusCode::CONFLICT);
    assert_eq!(too_much.error_code(), "insufficient_balance");
    let debit = app.post(&path, &admin, json!({"amount": "-0.000001", "reason": "fee"})).await;
    assert_eq!(debit.body["balance"], "29.999999");
    let too_precise = app.post(&path, &admin, json!({"amount": "0.0000001", "reason": "x"})).await;
    assert_eq!(too_precise.status, StatusCode::BAD_REQUEST);

    let me = app.get("/api/user/me", &user).await;
    assert_eq!(me.body["balance"], "29.999999");
    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["total"], 3);
    assert_eq!(ledger.body["items"][0]["kind"], "admin_adjust");
    assert_eq!(ledger.body["items"][0]["balance_after"], "29.999999");
    let missing = app.post("/api/admin/users/99999/balance", &admin, json!({"amount": "1", "reason": "x"})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE action = 'user.balance_adjust'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audits, 3);
    app.assert_money_invariants().await;
}

async fn settings_hide_the_merchant_key(app: TestApp) {
    let admin = app.admin_token().await;
    let r = app
        .put("/api/admin/settings", &admin, json!({"credit": {"pid": "1001", "key": "TOPSECRET", "enabled": true}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("TOPSECRET"));
    assert_eq!(r.body["credit"]["key_set"], true);
    assert_eq!(r.body["credit"]["usable"], true);
    let read = app.get("/api/admin/settings", &admin).await;
    assert!(!read.text.contains("TOPSECRET"));
    assert_eq!(read.body["credit"]["pid"], "1001");
    assert!(read.body["credit"]["effective_notify_url"].as_str().unwrap().ends_with("/api/payment/credit/notify"));
    let bad = app.put("/api/admin/settings", &admin, json!({"credit": {"order_ttl_minutes": 0}})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["error"]["field"], "credit.order_ttl_minutes");
}

async fn an_admin_cannot_lock_themselves_out(app: TestApp) {
    let admin = app.admin_token().await;
    let me = app.get("/api/user/me", &admin).await;
    let id = me.body["id"].as_i64().unwrap();
    let r = app.patch(&format!("/api/admin/users/{id}"), &admin, json!({"status": "suspended"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "cannot_demote_self");
}
