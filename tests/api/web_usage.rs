//! The dashboard's package status and chart, and the usage pages, over HTTP.

use codex_gateway::domain::billing::{self, AdmissionRequest, UsageRecord};
use codex_gateway::foundation::clock::to_micros;
use codex_gateway::foundation::money::Money;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{parse_time, Answer, TestApp};
use crate::on_both_databases;

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

/// Puts an active package in the tables (as the billing tests do until packages are sold).
async fn give_package(app: &TestApp, user_id: i64, name: &str, daily_limit: &str) {
    let now = to_micros(app.state.now());
    let limit = Money::parse(daily_limit).unwrap().micros();
    let package_id: i64 = sqlx::query_scalar(
        "INSERT INTO packages (name, description, price, duration_days, daily_limit, sort_order, enabled, created_at, updated_at) \
         VALUES ($1, '', 30000000, 30, $2, 1, 1, $3, $3) RETURNING id",
    )
    .bind(name)
    .bind(limit)
    .bind(now)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_packages (user_id, package_id, name, daily_limit, duration_days, paid_amount, source, status, \
           starts_at, ends_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 30, 30000000, 'grant', 'active', $5, $6, $5, $5)",
    )
    .bind(user_id)
    .bind(package_id)
    .bind(name)
    .bind(limit)
    .bind(to_micros(parse_time("2026-01-01T00:00:00Z")))
    .bind(to_micros(parse_time("2026-02-01T00:00:00Z")))
    .execute(app.db.pool())
    .await
    .unwrap();
}

pub(crate) async fn spend(app: &TestApp, user_id: i64, key_id: i64, request_id: &str, model: &str, cost: &str) {
    let request =
        AdmissionRequest { request_id: None, user_id, api_key_id: key_id, hold: Money::parse("0.01").unwrap() };
    let hold = billing::admit(app.state.env(), &request).await.unwrap();
    let record = UsageRecord {
        request_id: request_id.into(),
        endpoint: "/v1/responses".into(),
        model: model.into(),
        status_code: 200,
        input_tokens: 1200,
        output_tokens: 300,
        cost: Money::parse(cost).unwrap(),
        ..Default::default()
    };
    billing::settle(app.state.env(), &hold, &record).await.unwrap();
}

async fn the_dashboard_shows_the_package_allowance_and_a_30_day_chart(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "10").await;
    let empty = page(&app, "/dashboard", &user).await;
    assert!(empty.text.contains("id=\"no-package\""));
    give_package(&app, id, "Basic <Pro>", "5").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    spend(&app, id, key, "r1", "gpt-5", "4.00").await;
    spend(&app, id, key, "r2", "gpt-5", "1.50").await;
    let r = page(&app, "/dashboard", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("id=\"package-name\">Basic &#60;Pro&#62;</strong>"));
    assert!(r.text.contains("id=\"package-used\">5.00</span>"), "the allowance is used up");
    assert!(r.text.contains("id=\"package-remaining\">0.00</strong>"));
    assert!(r.text.contains("progress bad"));
    assert!(r.text.contains("id=\"spent-today\">5.50</div>"));
    assert!(r.text.contains("id=\"balance\">9.50</div>"), "the overflow came from the balance");
    assert_eq!(r.text.matches("<title>").count(), 1 + 30, "one hover title per day of the chart");
    assert!(r.text.contains("2026-01-15: 5.00 + 0.50 USD"));
    app.assert_money_invariants().await;
}

async fn the_usage_pages_list_filter_and_page_requests(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let (other_id, other) = app.register_and_login("other@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "100").await;
    app.fund(&admin, other_id, "100").await;
    let laptop = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    let ci = app.post("/api/user/keys", &user, json!({"name": "ci"})).await.body["id"].as_i64().unwrap();
    let theirs = app.post("/api/user/keys", &other, json!({"name": "x"})).await.body["id"].as_i64().unwrap();
    for i in 0..55 {
        spend(&app, id, laptop, &format!("a{i}"), "gpt-5", "0.01").await;
    }
    spend(&app, id, ci, "b1", "gpt-5-mini", "0.02").await;
    spend(&app, other_id, theirs, "c1", "gpt-5", "0.03").await;

    let r = page(&app, "/usage", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("1–50 of 56"), "{}", r.text);
    assert!(r.text.contains("page=2"));
    assert!(!r.text.contains("other@example.com"));
    let r = page(&app, "/usage?model=gpt-5-mini", &user).await;
    assert!(r.text.contains("1–1 of 1"));
    assert!(r.text.contains("data-label=\"Key\">ci</td>"));
    let r = page(&app, &format!("/usage?key={laptop}&page=2"), &user).await;
    assert!(r.text.contains("51–55 of 55"));
    let r = page(&app, "/usage?from=2026-01-16", &user).await;
    assert!(r.text.contains("No requests match."));
    let r = page(&app, "/usage?from=yesterday", &user).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"from-error\""));

    assert_eq!(page(&app, "/admin/usage", &user).await.status, StatusCode::FORBIDDEN);
    let r = page(&app, "/admin/usage?user=other%40example.com", &admin).await;
    assert!(r.text.contains("1–1 of 1"));
    assert!(r.text.contains("other@example.com"));
    let r = page(&app, "/admin/usage?user=nobody%40example.com", &admin).await;
    assert!(r.text.contains("No requests match."));
    let r = page(&app, "/admin/usage", &admin).await;
    assert!(r.text.contains("1–50 of 57"));
    let r = page(&app, "/admin", &admin).await;
    let title = &r.text[r.text.find("<title>").unwrap() + 7..r.text.find("</title>").unwrap()];
    assert!(!title.contains('<'), "the title holds only text: {title}");
    assert!(r.text.contains("id=\"requests-today\">57</div>"), "{}", r.text);
    assert!(r.text.contains("id=\"spend-today\">0.60</div>"));
    assert!(r.text.contains("id=\"revenue-today\">0.00</div>"), "balance top-ups by admins are not payments");
}

on_both_databases!(
    the_dashboard_shows_the_package_allowance_and_a_30_day_chart,
    the_usage_pages_list_filter_and_page_requests,
);
