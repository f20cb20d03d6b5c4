//! `/admin/metrics`: admins see this instance's counters and the cluster's database
//! figures move after a /v1 call; users get a 403.

use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, Backend, TestApp};
use crate::on_both_databases;
use crate::proxy::{setup, v1};

on_both_databases!(an_admin_sees_the_figures_move_after_a_v1_call_and_a_user_gets_403);

async fn page(app: &TestApp, session: &str, lang: &str) -> Answer {
    let cookie = format!("cg_session={session}; cg_lang={lang}");
    TestApp::answer(app.client.get(app.url("/admin/metrics")).header(COOKIE, cookie).send().await.unwrap()).await
}

/// The text of the element with `id` (None when the page has no such element).
fn figure(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('<').next()?.trim().to_string())
}

fn count(html: &str, id: &str) -> i64 {
    figure(html, id).map_or(0, |t| t.parse().unwrap())
}

async fn an_admin_sees_the_figures_move_after_a_v1_call_and_a_user_gets_403(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("5.00")).await;
    assert_eq!(page(&app, &s.user_token, "en").await.status, StatusCode::FORBIDDEN);

    let before = page(&app, &s.admin, "en").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    assert!(before.text.contains("This instance") && before.text.contains("href=\"/admin/metrics\""));
    assert_eq!(count(&before.text, "db-usage-today"), 0);
    assert_eq!(count(&before.text, "db-open-holds"), 0);
    let expected_limiter = if app.backend == Backend::Postgres { "postgres" } else { "memory" };
    assert_eq!(figure(&before.text, "limiter-backend").as_deref(), Some(expected_limiter));
    // Metrics are process-wide and other tests run in this process: compare, don't pin.
    let model_before = count(&before.text, "model-gpt-5-200");
    let route_before = count(&before.text, "route-/v1/responses-200");
    let admitted_before = count(&before.text, "admission-admitted");

    let r = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await;
    app.wait_until_settled().await;

    let after = page(&app, &s.admin, "en").await;
    assert_eq!(count(&after.text, "db-usage-today"), 1, "cluster-wide usage rows come from the database");
    assert!(count(&after.text, "model-gpt-5-200") > model_before);
    assert!(count(&after.text, "route-/v1/responses-200") > route_before);
    assert!(count(&after.text, "admission-admitted") > admitted_before);
    let billed = figure(&after.text, "billed-balance").expect("billed from the balance");
    assert!(billed.parse::<f64>().unwrap() > 0.0, "{billed}");
    assert!(after.text.contains(" ms</td>"), "a latency percentile is shown: {}", after.text);

    let zh = page(&app, &s.admin, "zh").await;
    assert_eq!(zh.status, StatusCode::OK);
    assert!(zh.text.contains("本实例") && zh.text.contains("运行指标"));
}
