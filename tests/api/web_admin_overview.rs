//! The admin overview's top spenders and top models over HTTP: per period, exact to the
//! micro-dollar, and linked to each user's page.

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;
use crate::web_usage::spend;

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

/// The text of the table with `id`, tags and all.
fn table<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<table id=\"{id}\"")).unwrap();
    &html[start..start + html[start..].find("</table>").unwrap()]
}

async fn the_overview_ranks_spenders_and_models_of_the_period_to_the_micro_dollar(app: TestApp) {
    let admin = app.admin_token().await;
    let (small, small_token) = app.register_and_login("small@example.com").await;
    let (big, big_token) = app.register_and_login("big@example.com").await;
    app.fund(&admin, small, "1").await;
    app.fund(&admin, big, "10").await;
    let small_key = app.post("/api/user/keys", &small_token, json!({"name": "a"})).await.body["id"].as_i64().unwrap();
    let big_key = app.post("/api/user/keys", &big_token, json!({"name": "b"})).await.body["id"].as_i64().unwrap();
    spend(&app, small, small_key, "s1", "gpt-5", "0.004025").await;
    spend(&app, small, small_key, "s2", "gpt-5", "0.000001").await;
    spend(&app, big, big_key, "b1", "gpt-5-mini", "1.5").await;

    let r = page(&app, "/admin", &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    let spenders = table(&r.text, "top-spenders");
    let (first, second) = (spenders.find("big@example.com").unwrap(), spenders.find("small@example.com").unwrap());
    assert!(first < second, "most first: {spenders}");
    assert!(spenders.contains(&format!("href=\"/admin/users/{small}\"")));
    assert!(spenders.contains("<td class=\"num nowrap\">0.004026</td><td class=\"num\">2</td>"), "{spenders}");
    assert!(spenders.contains("<td class=\"num nowrap\">1.50</td><td class=\"num\">1</td>"), "{spenders}");
    let models = table(&r.text, "top-models");
    assert!(models.find("gpt-5-mini").unwrap() < models.find("<code>gpt-5</code>").unwrap(), "{models}");
    assert!(models.contains("0.004026"));

    app.clock.advance(chrono::Duration::days(2));
    let today = page(&app, "/admin?days=1", &admin).await;
    assert!(table(&today.text, "top-spenders").contains("No requests in this period."));
    assert!(today.text.contains("href=\"/admin?days=1#top\" class=\"active\""));
    let week = page(&app, "/admin?days=7", &admin).await;
    assert!(table(&week.text, "top-spenders").contains("0.004026"), "two days ago is within 7 days");
    let odd = page(&app, "/admin?days=abc", &admin).await;
    assert!(odd.text.contains("href=\"/admin?days=7#top\" class=\"active\""), "an unknown period falls back to 7 days");
}

on_both_databases!(the_overview_ranks_spenders_and_models_of_the_period_to_the_micro_dollar);
