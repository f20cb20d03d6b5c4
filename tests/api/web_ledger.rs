//! Issue 20: the user's balance history page (`/ledger`) and the usage page's period
//! total, per-model breakdown, CSV export, request-id search and failure reasons; the
//! Chinese pages translate ledger kinds, notes and order items.

use codex_gateway::domain::billing::{self, AdmissionRequest, UsageRecord};
use codex_gateway::foundation::money::Money;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{signed_notify, TestApp};
use crate::on_both_databases_with_sandbox;
use crate::web_money::{all_between, page, page_zh};

/// A request the upstream failed: nothing charged, the reason recorded.
async fn failed(app: &TestApp, user_id: i64, key_id: i64, request_id: &str) {
    let request =
        AdmissionRequest { request_id: None, user_id, api_key_id: key_id, hold: Money::parse("0.01").unwrap() };
    let hold = billing::admit(app.state.env(), &request).await.unwrap();
    let record = UsageRecord {
        request_id: request_id.into(),
        endpoint: "/v1/responses".into(),
        model: "gpt-5-mini".into(),
        status_code: 502,
        error: Some("upstream answered 502 Bad Gateway".into()),
        ..Default::default()
    };
    billing::settle(app.state.env(), &hold, &record).await.unwrap();
}

async fn the_usage_page_totals_breaks_down_exports_and_finds_a_request(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "10").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    app.spend(id, key, "req_one", "0.004025").await;
    app.spend(id, key, "req_two", "1.2").await;
    failed(&app, id, key, "req_bad").await;

    let r = page(&app, "/usage", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    let api: Money = app.get("/api/user/usage", &user).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| Money::parse(row["cost"].as_str().unwrap()).unwrap())
        .fold(Money::ZERO, |a, b| a.saturating_add(b));
    assert_eq!(all_between(&r.text, "id=\"period-total\">"), [api.to_string().as_str()], "the total is the API's sum");
    assert_eq!(api.to_string(), "1.204025");
    assert!(r.text.contains("id=\"period-requests\">3</span>"));
    let breakdown = &r.text[r.text.find("id=\"model-breakdown\"").expect("a per-model breakdown")..];
    assert_eq!(all_between(breakdown, "class=\"num model-cost\" data-label=\"Cost\">")[..2], ["1.204025", "0.00"]);
    assert!(r.text.contains("<code>req_one</code>"), "the request id is shown");
    assert!(r.text.contains("class=\"small failure\">upstream answered 502 Bad Gateway</div>"), "the failure reason");

    let r = page(&app, "/usage?request=req_one", &user).await;
    assert!(r.text.contains("1–1 of 1"), "found by its id");
    assert_eq!(all_between(&r.text, "<span class=\"cost\">"), ["0.004025"]);
    let csv_link = &r.text[r.text.find("id=\"usage-csv\" href=\"").unwrap() + 21..];
    assert!(csv_link.starts_with("/usage.csv?") && csv_link[..120].contains("request=req_one"), "{}", &csv_link[..120]);

    let csv = app
        .client
        .get(app.url("/usage.csv?model=gpt-5"))
        .header(COOKIE, format!("cg_session={user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "header and the two gpt-5 rows: {text}");
    assert!(lines[0].starts_with("time,request_id,"));
    assert!(lines[1].contains(",req_two,") && lines[1].contains(",1.200000,"));
    assert!(lines[2].contains(",req_one,") && lines[2].contains(",0.004025,"));
    let (_, other) = app.register_and_login("other@example.com").await;
    let theirs =
        app.client.get(app.url("/usage.csv")).header(COOKIE, format!("cg_session={other}")).send().await.unwrap();
    assert_eq!(theirs.text().await.unwrap().lines().count(), 1, "only one's own rows");
    app.assert_money_invariants().await;
}

async fn the_ledger_page_lists_the_balance_history_in_both_languages(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    app.fund(&admin, id, "10").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    app.spend(id, key, "req_one", "0.004025").await;
    let topup = app.post("/api/user/topup", &user, json!({"amount": "3.00"})).await;
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    assert_eq!(app.send_notify(&signed_notify(&otn, "T-9", "3.00", &[])).await.1, "success");

    let dash = page(&app, "/dashboard", &user).await;
    assert!(dash.text.contains("href=\"/ledger\""), "linked in the navigation");
    let r = page(&app, "/ledger", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    let api = app.get("/api/user/ledger", &user).await.body;
    let api_amounts: Vec<Money> =
        api["items"].as_array().unwrap().iter().map(|e| Money::parse(e["amount"].as_str().unwrap()).unwrap()).collect();
    let amounts = all_between(&r.text, "class=\"num ledger-amount\" data-label=\"Amount\">");
    assert_eq!(amounts, ["+3.00", "-0.004025", "+10.00"]);
    assert_eq!(amounts.iter().map(|a| Money::parse(a).unwrap()).collect::<Vec<_>>(), api_amounts);
    assert_eq!(all_between(&r.text, "data-label=\"Balance after\">")[0], "12.995975");
    assert!(r.text.contains(">Top-up</span>") && r.text.contains(">Request charge</span>"));
    assert!(r.text.contains("Adjustment by an operator"));

    let r = page(&app, "/ledger?show=-usage", &user).await;
    assert!(!r.text.contains("data-kind=\"usage\""), "money movements only");
    assert!(r.text.contains("data-kind=\"topup\""));
    let r = page(&app, "/ledger?show=usage", &user).await;
    assert_eq!(r.text.matches("data-kind=").count(), 1);

    let zh = page_zh(&app, "/ledger", &user).await;
    assert!(zh.contains(">充值</span>") && zh.contains(">请求扣费</span>") && zh.contains("管理员调整"), "{zh}");
    assert!(zh.contains("余额充值 3.00"), "the note is translated");
    assert!(!zh.contains(">topup<") && !zh.contains("Balance top-up"));
    let orders = page_zh(&app, "/orders", &user).await;
    assert!(orders.contains("余额充值 3.00") && !orders.contains("Balance top-up"), "order items in Chinese");
    app.assert_money_invariants().await;
}

on_both_databases_with_sandbox!(
    the_usage_page_totals_breaks_down_exports_and_finds_a_request,
    the_ledger_page_lists_the_balance_history_in_both_languages,
);
