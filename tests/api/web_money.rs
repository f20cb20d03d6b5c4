//! Issue 20, money on the user's pages: every amount the pages show equals the JSON
//! API's figure to the micro-dollar (no rounding to cents), a negative balance keeps its
//! sign with the debt said plainly, and the chart's y-axis ticks are distinct.

use codex_gateway::foundation::money::Money;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;

pub async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

/// The page's HTML as the signed-in user sees it in Chinese (the `cg_lang` cookie).
pub async fn page_zh(app: &TestApp, path: &str, session: &str) -> String {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}; cg_lang=zh"));
    req.send().await.unwrap().text().await.unwrap()
}

/// Every text between `open` and the next `<` in `html`, in page order.
pub fn all_between<'a>(html: &'a str, open: &str) -> Vec<&'a str> {
    html.match_indices(open)
        .map(|(i, _)| {
            let rest = &html[i + open.len()..];
            &rest[..rest.find('<').unwrap_or(rest.len())]
        })
        .collect()
}

fn money(text: &str) -> Money {
    Money::parse(text.trim()).unwrap_or_else(|e| panic!("`{text}` is not an amount: {e}"))
}

async fn usage_costs_and_dashboard_figures_equal_the_api_to_the_micro_dollar(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "10").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    for (n, cost) in ["0.004025", "0.01", "1.234567"].iter().enumerate() {
        app.spend(id, key, &format!("r{n}"), cost).await;
    }

    let api = app.get("/api/user/usage", &user).await.body;
    let api_costs: Vec<Money> =
        api["items"].as_array().unwrap().iter().map(|r| money(r["cost"].as_str().unwrap())).collect();
    let r = page(&app, "/usage", &user).await;
    assert_eq!(r.status, StatusCode::OK);
    let page_costs = all_between(&r.text, "<span class=\"cost\">");
    assert_eq!(page_costs, ["1.234567", "0.010000", "0.004025"], "all six decimals, newest first");
    assert_eq!(page_costs.iter().map(|c| money(c)).collect::<Vec<_>>(), api_costs);
    assert_eq!(all_between(&r.text, "<span class=\"balance-cost\">")[2], "0.004025");
    assert!(!r.text.contains(">0.00</span>"), "no sub-cent cost reads as zero");

    let api = app.get("/api/user/daily-usage", &user).await.body;
    let r = page(&app, "/dashboard", &user).await;
    let balance = all_between(&r.text, "id=\"balance\">")[0];
    assert_eq!(balance, "8.751408");
    assert_eq!(money(balance), money(api["balance"].as_str().unwrap()));
    assert_eq!(
        money(all_between(&r.text, "id=\"spent-today\">")[0]),
        money(api["spent_today"]["total"].as_str().unwrap())
    );
    assert!(r.text.contains("2026-01-15: 0.00 + 1.248592 USD"), "the chart's hover text is exact");
    assert!(!r.text.contains("id=\"debt\""));
    app.assert_money_invariants().await;
}

async fn a_negative_balance_shows_its_sign_and_the_debt(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "0.01").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    app.spend(id, key, "over", "0.012075").await;
    let api = app.get("/api/user/daily-usage", &user).await.body;
    assert_eq!(api["balance"], "-0.002075");
    let r = page(&app, "/dashboard", &user).await;
    assert!(r.text.contains("id=\"balance\">-0.002075</div>"), "the sign is shown");
    assert!(r.text.contains("value negative"));
    let debt = &r.text[r.text.find("id=\"debt\"").expect("a debt banner")..];
    assert!(debt[..400].contains("You owe 0.002075 USD"), "{}", &debt[..400]);
    assert!(debt[..400].contains("href=\"/account#amount\""), "a way to top up");
    let r = page(&app, "/account", &user).await;
    assert!(r.text.contains("-0.002075"), "the account page shows the same figure");
}

async fn the_chart_ticks_are_distinct_readable_values(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    app.fund(&admin, id, "10").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "laptop"})).await.body["id"].as_i64().unwrap();
    app.spend(id, key, "a", "0.0125").await;
    let r = page(&app, "/dashboard", &user).await;
    let ticks: Vec<&str> = all_between(&r.text, "fill=\"#5f6b7a\">");
    assert!(ticks.starts_with(&["0.02", "0.01"]), "top and half: {ticks:?}");
    let r = page(&app, "/dashboard", &user).await;
    assert!(r.text.contains("0.0125 USD"), "the 30-day total is exact");
}

async fn the_403_page_keeps_the_signed_in_header_the_favicon_is_served_and_badges_agree(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let r = page(&app, "/admin", &user).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("user@example.com") && r.text.contains("id=\"logout\""), "signed-in header: {}", r.text);
    assert!(r.text.contains("href=\"/dashboard\""));
    let icon = app.client.get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(icon.headers()[reqwest::header::CONTENT_TYPE], "image/svg+xml");
    assert!(icon.text().await.unwrap().starts_with("<svg"));

    let admin = app.admin_token().await;
    let package = app
        .create_package(&admin, json!({"name": "Basic", "price": "10.00", "duration_days": 30, "daily_limit": "5"}))
        .await;
    let r = app.post(&format!("/api/admin/users/{id}/packages"), &admin, json!({"package_id": package})).await;
    assert!(r.status.is_success(), "{}", r.text);
    for path in ["/dashboard", "/packages"] {
        let zh = page_zh(&app, path, &user).await;
        assert!(zh.contains("badge ok\">使用中</span>"), "{path} says 使用中");
        assert!(!zh.contains("badge ok\">正常</span>"), "{path}");
    }
}

on_both_databases!(
    the_403_page_keeps_the_signed_in_header_the_favicon_is_served_and_badges_agree,
    usage_costs_and_dashboard_figures_equal_the_api_to_the_micro_dollar,
    a_negative_balance_shows_its_sign_and_the_debt,
    the_chart_ticks_are_distinct_readable_values,
);
