//! Issue 20, money (items 1-3) in the browser: a user whose requests cost fractions of a
//! cent and whose balance went below zero. Every figure read off the rendered page —
//! per-request costs with all six decimals, the period total, the ledger, the signed
//! balance and the debt, the chart's total — equals the JSON API's to the micro-dollar,
//! in both languages, at 1280 px and at 390 px; the chart's y-axis ticks are distinct;
//! and the operator's /admin/usage and user page show the same figures.

use codex_gateway::foundation::money::Money;
use fantoccini::Locator;
use serde_json::{json, Value};

use super::Session;

const EMAIL: &str = "cents@example.com";

pub(crate) fn money(text: &str) -> Money {
    Money::parse(text.trim()).unwrap_or_else(|e| panic!("`{text}` is not an amount: {e}"))
}

/// The texts of every element matching `css`, in page order.
pub(crate) async fn texts(s: &Session, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in s.c.find_all(Locator::Css(css)).await.unwrap() {
        out.push(element.text().await.unwrap().trim().to_string());
    }
    out
}

/// The API's figures for the user, as the pages must show them.
struct Figures {
    balance: Money,
    usage_costs: Vec<Money>,
    /// As the API writes them (`Money`'s Display, as the ledger pages do).
    ledger_amounts: Vec<String>,
    spent_today: Money,
}

async fn api_figures(s: &Session, token: &str) -> Figures {
    let day = s.app.get("/api/user/daily-usage", token).await.body;
    let usage = s.app.get("/api/user/usage", token).await.body;
    let ledger = s.app.get("/api/user/ledger", token).await.body;
    let list = |v: &Value, field: &str| -> Vec<Money> {
        v["items"].as_array().unwrap().iter().map(|r| money(r[field].as_str().unwrap())).collect()
    };
    Figures {
        balance: money(day["balance"].as_str().unwrap()),
        usage_costs: list(&usage, "cost"),
        ledger_amounts: ledger["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["amount"].as_str().unwrap().into())
            .collect(),
        spent_today: money(day["spent_today"]["total"].as_str().unwrap()),
    }
}

/// Reads the user's dashboard, /usage and /ledger as rendered at the current width and
/// language and checks every figure against the API's; screenshots each as `{tag}-…`.
async fn pages_show_the_api_figures(s: &Session, api: &Figures, owed: &str, tag: &str) {
    s.go("/dashboard").await;
    let balance = s.text("#balance").await;
    assert_eq!(balance, format!("-{owed}"), "the sign is shown ({tag})");
    assert_eq!(money(&balance), api.balance);
    let debt = s.text("#debt").await;
    assert!(debt.contains(owed), "the debt is said plainly ({tag}): {debt}");
    s.c.find(Locator::Css("#debt a[href='/account#amount']")).await.expect("the debt links to top-up");
    s.c.find(Locator::Css("#no-package a[href='/packages']")).await.expect("no package: a link to buy one");
    s.c.find(Locator::Css("#no-package a[href='/account#amount']")).await.expect("and one to top up");
    assert_eq!(money(&s.text("#spent-today").await), api.spent_today, "{tag}");
    let ticks = texts(s, ".chart svg text[text-anchor='end']").await;
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert!(ticks.len() == 3 && distinct.len() == 3, "distinct y-axis ticks ({tag}): {ticks:?}");
    assert!(ticks.iter().all(|t| Money::parse(t).is_ok()), "readable ticks ({tag}): {ticks:?}");
    let legend = s.text(".legend").await;
    assert!(legend.contains(&api.spent_today.to_string()), "the 30-day total is exact ({tag}): {legend}");
    s.shot(&format!("{tag}-dashboard")).await;

    s.go("/usage").await;
    let costs = texts(s, "#usage-table .cost").await;
    assert_eq!(costs, ["0.018050", "0.004025"], "all six decimals, newest first ({tag})");
    assert_eq!(costs.iter().map(|c| money(c)).collect::<Vec<_>>(), api.usage_costs, "{tag}");
    let total = api.usage_costs.iter().fold(Money::ZERO, |sum, c| sum.saturating_add(*c));
    assert_eq!(money(&s.text("#period-total").await), total, "the period total is exact ({tag})");
    assert_eq!(texts(s, "#model-breakdown .model-cost").await, [total.to_string()], "{tag}");
    shot_at(s, "#usage-summary", &format!("{tag}-usage")).await;

    s.go("/ledger").await;
    assert_eq!(money(&s.text("#ledger-balance").await), api.balance, "{tag}");
    let amounts = texts(s, "#ledger-table .ledger-amount").await;
    // Signed ("+0.02"), otherwise the API's figures as it writes them.
    let unsigned: Vec<&str> = amounts.iter().map(|a| a.trim_start_matches('+')).collect();
    assert_eq!(unsigned, api.ledger_amounts, "{tag}");
    assert!(amounts.contains(&"-0.004025".to_string()), "a sub-cent charge keeps its digits ({tag}): {amounts:?}");
    assert_eq!(texts(s, "#ledger-table .ledger-after").await.first().map(String::as_str), Some(balance.as_str()));
    shot_at(s, "#ledger-table", &format!("{tag}-ledger")).await;
}

/// A screenshot with the element `css` scrolled to the top of the window.
pub(crate) async fn shot_at(s: &Session, css: &str, name: &str) {
    let script = format!("document.querySelector({css:?}).scrollIntoView()");
    s.c.execute(&script, vec![]).await.unwrap();
    s.shot(name).await;
}

pub(crate) async fn log_in(s: &Session, email: &str, password: &str) {
    s.go("/login").await;
    s.fill("#email", email).await;
    s.fill("#password", password).await;
    s.click("#submit").await;
    s.wait_path("/dashboard").await;
}

/// Runs signed in as the admin (the end of the flow) and leaves the admin signed in.
pub async fn sub_cent_costs_and_a_debt_read_exactly_everywhere(s: &Session) {
    let (id, token) = s.app.register_and_login(EMAIL).await;
    // The operator of the flow.
    let admin = s.app.login("boss@example.com", "correct horse battery").await;
    s.app.fund(&admin, id, "0.02").await;
    let created = s.app.post("/api/user/keys", &token, json!({"name": "cents"})).await.body;
    let (key, secret) = (created["id"].as_i64().unwrap(), created["key"].as_str().unwrap().to_string());
    // 0.02 − 0.004025 − 0.018050 = −0.002075: the second request settles past the balance.
    s.app.spend(id, key, "req_cents_1", "0.004025").await;
    s.app.spend(id, key, "req_cents_2", "0.018050").await;
    s.app.wait_until_settled().await;
    let api = api_figures(s, &token).await;
    assert_eq!(api.balance.to_string(), "-0.002075");
    let owed = "0.002075";

    s.click("#logout").await;
    s.wait_path("/login").await;
    log_in(s, EMAIL, "password123").await;
    pages_show_the_api_figures(s, &api, owed, "60-money-en").await;

    // On /usage: the request id finds its row, and the CSV export carries the exact costs.
    s.go("/usage").await;
    s.click("#usage-table tbody tr:last-child a.request-id").await;
    s.wait_text("#usage-table", "req_cents_1").await;
    let query = s.c.current_url().await.unwrap().query().unwrap_or_default().to_string();
    assert_eq!(query, "request=req_cents_1");
    assert_eq!(texts(s, "#usage-table .cost").await, ["0.004025"], "only the request searched for");
    assert_eq!(s.text("#period-total").await, "0.004025");
    let csv = s
        .c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(document.getElementById('usage-csv').getAttribute('href')).then(r => r.text()).then(done, e => done('failed: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    let csv = csv.as_str().unwrap_or_default();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() == 1 && rows[0].contains(",req_cents_1,") && rows[0].contains(",0.004025,"), "{csv}");
    shot_at(s, "#usage-table", "60b-money-en-usage-request").await;

    // Item 6: a request now is refused naming the figure the dashboard shows ("0.00 left").
    let refused = reqwest::Client::new()
        .post(s.app.url("/v1/responses"))
        .bearer_auth(&secret)
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "usage_limit_reached", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let left = message.split("the balance leaves ").nth(1).and_then(|r| r.split(" USD").next());
    s.go("/dashboard").await;
    let admits = s.text("#admits").await;
    assert_eq!(left.map(money), Some(money(&admits)), "the refusal names the page's figure: {message}");
    assert!(message.contains("max_output_tokens") && message.contains("top up"), "says what to do: {message}");
    assert!(s.text("#admits-help").await.contains("max_output_tokens"));
    super::phone::every_table_fits(s, &["/dashboard", "/usage", "/ledger"], "61-phone-money-en").await;
    s.c.set_window_size(390, 844).await.unwrap();
    pages_show_the_api_figures(s, &api, owed, "61-phone-money-en").await;

    s.c.set_window_size(1280, 1400).await.unwrap();
    s.click("#lang-switch").await;
    s.wait_text("h1", "余额明细").await;
    pages_show_the_api_figures(s, &api, owed, "62-money-zh").await;
    // Ledger kinds and notes in Chinese, not topup/usage (on /ledger, where the figures ended).
    assert_eq!(texts(s, "#ledger-table .badge").await, ["请求扣费", "请求扣费", "管理员调整"]);
    super::phone::every_table_fits(s, &["/dashboard", "/usage", "/ledger"], "63-phone-money-zh").await;
    s.c.set_window_size(390, 844).await.unwrap();
    pages_show_the_api_figures(s, &api, owed, "63-phone-money-zh").await;
    s.c.set_window_size(1280, 1400).await.unwrap();
    s.go("/ledger").await;
    s.click("#lang-switch").await;
    s.wait_path("/ledger").await;

    // The operator sees the same figures: /admin/usage and the user's page with its ledger.
    s.click("#logout").await;
    s.wait_path("/login").await;
    log_in(s, "boss@example.com", "correct horse battery").await;
    s.go(&format!("/admin/usage?user={EMAIL}")).await;
    let costs = texts(s, "#usage-table .cost").await;
    assert_eq!(costs, ["0.018050", "0.004025"], "/admin/usage: all six decimals");
    assert_eq!(costs.iter().map(|c| money(c)).collect::<Vec<_>>(), api.usage_costs);
    let admin_usage = s.app.get(&format!("/api/admin/usage?user_id={id}"), &admin).await.body;
    let admin_costs: Vec<Money> = admin_usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["user_id"] == json!(id))
        .map(|r| money(r["cost"].as_str().unwrap()))
        .collect();
    assert_eq!(admin_costs, api.usage_costs, "/api/admin/usage agrees");
    shot_at(s, "#usage-table", "64-admin-usage-sub-cent").await;
    s.go(&format!("/admin/users/{id}")).await;
    assert_eq!(s.text("#user-balance").await, "-0.002075 USD");
    let amounts = texts(s, "#user-ledger .ledger-amount").await;
    assert_eq!(amounts, api.ledger_amounts, "the admin ledger writes the API's figures");
    let admin_ledger = s.app.get(&format!("/api/admin/ledger?user_id={id}"), &admin).await.body;
    let admin_amounts: Vec<&str> =
        admin_ledger["items"].as_array().unwrap().iter().map(|r| r["amount"].as_str().unwrap()).collect();
    assert_eq!(admin_amounts, api.ledger_amounts, "/api/admin/ledger agrees");
    assert!(amounts.contains(&"-0.004025".to_string()), "no sub-cent charge reads as 0.00: {amounts:?}");
    shot_at(s, "#user-ledger", "65-admin-user-ledger-sub-cent").await;
}
