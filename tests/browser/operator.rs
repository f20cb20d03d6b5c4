//! Issue 20's last items in the browser, in both languages, at 1280 px and at 390 px:
//! a user's failed requests say why on /usage (a 502 and a stream that died on a green
//! "200"), a package restricted to one model shows one "next request may use" line per
//! model with the figures the API gives, and the operator's forms: granting an off-sale
//! (trial) package (with three windows, each on the dashboard as the API has it), the pricing form's own button and every error at once, the settings
//! form's every error at once, Credit refused when switched on without its merchant id,
//! the sandbox's gateway address offered, and the overview's top spenders and top models
//! equal to the API's usage rows to the micro-dollar.

use std::collections::BTreeMap;

use codex_gateway::foundation::money::Money;
use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::money::{log_in, money, shot_at, texts};
use super::Session;

const EMAIL: &str = "fails@example.com";
const ADMIN: (&str, &str) = ("boss@example.com", "correct horse battery");

/// Runs signed in as the admin (the end of the flow) and leaves the admin signed in.
pub async fn failures_reserve_lines_and_the_operators_forms(s: &Session) {
    let admin = s.app.login(ADMIN.0, ADMIN.1).await;
    let (user_id, token) = s.app.register_and_login(EMAIL).await;
    s.app.fund(&admin, user_id, "5.00").await;
    let key =
        s.app.post("/api/user/keys", &token, json!({"name": "fails"})).await.body["key"].as_str().unwrap().to_string();
    let trial = s
        .app
        .create_package(
            &admin,
            json!({"name": "Codex trial", "price": "1", "duration_days": 3, "five_hour_limit": "0.004",
                   "daily_limit": "0.005", "weekly_limit": "0.02", "models": ["gpt-5-codex"], "enabled": false}),
        )
        .await;
    grants_the_off_sale_trial_package(s, user_id, trial, &admin).await;
    failed_requests(s, &key).await;

    s.click("#logout").await;
    s.wait_path("/login").await;
    log_in(s, EMAIL, "password123").await;
    failures_and_reserve_lines_read_as_the_api_says(s, &token, "70-user-en").await;
    s.click("#lang-switch").await;
    s.wait_text("h1", "概览").await;
    failures_and_reserve_lines_read_as_the_api_says(s, &token, "71-user-zh").await;
    s.click("#lang-switch").await;
    s.wait_text("h1", "Dashboard").await;

    s.click("#logout").await;
    s.wait_path("/login").await;
    log_in(s, ADMIN.0, ADMIN.1).await;
    pricing_form(s, &admin, "Save price", "72-pricing-en").await;
    settings_form(s, "Is required to switch payments on", "73-settings-en").await;
    top_tables_equal_the_api(s, &admin, "74-top-en").await;
    s.go("/admin/pricing").await;
    s.click("#lang-switch").await;
    s.wait_text("#save-price", "保存价格").await;
    pricing_form(s, &admin, "保存价格", "75-pricing-zh").await;
    settings_form(s, "开启支付前必须填写", "76-settings-zh").await;
    top_tables_equal_the_api(s, &admin, "77-top-zh").await;
    s.go("/admin").await;
    s.click("#lang-switch").await;
    s.wait_text("h1", "Administration").await;
}

/// The grant list of the user's admin page offers the off-sale package (marked so), and
/// granting it makes it the user's active package, as the API then says.
async fn grants_the_off_sale_trial_package(s: &Session, user_id: i64, trial: i64, admin: &str) {
    s.go(&format!("/admin/users/{user_id}")).await;
    let option = s.text(&format!("#package_id option[value='{trial}']")).await;
    assert_eq!(option, "Codex trial (Off sale)", "an off-sale package can be granted and says it is off sale");
    let select = s.c.find(Locator::Css("#package_id")).await.unwrap();
    select.select_by_value(&trial.to_string()).await.unwrap();
    s.click("#grant").await;
    s.wait_text("#notice", "Package granted.").await;
    assert!(s.text("#user-packages").await.contains("Codex trial"));
    let held = s.app.get(&format!("/api/admin/users/{user_id}/packages"), admin).await.body;
    assert_eq!(
        (held["items"][0]["package_id"].as_i64(), held["items"][0]["status"].as_str()),
        (Some(trial), Some("active"))
    );
    shot_at(s, "#user-packages", "69-admin-granted-trial").await;
}

/// Two requests that fail for different reasons: a stream the upstream breaks after its
/// first events (answered 200, charged what it used) and a request every upstream refuses
/// with a 500 (the client gets a 502, nothing is charged; a second model for the top
/// models table). The 500 goes last: it counts as a failure of the flow's only upstream.
async fn failed_requests(s: &Session, key: &str) {
    let client = reqwest::Client::new();
    let died = client
        .post(s.app.url("/v1/responses"))
        .bearer_auth(key)
        .header("x-mock-fault", "die")
        .json(&json!({"model": "gpt-5", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(died.status(), StatusCode::OK);
    let _ = died.bytes().await;
    let refused = client
        .post(s.app.url("/v1/responses"))
        .bearer_auth(key)
        .header("x-mock-fault", "fail-500")
        .json(&json!({"model": "gpt-5-codex", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    s.app.wait_until_settled().await;
}

/// /usage shows each failed row's status and reason as the API has them; the dashboard's
/// per-model lines show the package's room plus the balance for the model it pays for,
/// the balance alone for the others; both at 1280 px and at 390 px.
async fn failures_and_reserve_lines_read_as_the_api_says(s: &Session, token: &str, tag: &str) {
    let usage = s.app.get("/api/user/usage", token).await.body;
    let rows = usage["items"].as_array().unwrap();
    let reasons: Vec<String> = rows.iter().map(|r| r["error"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(rows.iter().map(|r| r["status"].as_i64().unwrap()).collect::<Vec<_>>(), [502, 200], "{usage}");
    assert!(reasons[0].contains("HTTP 500") && !reasons[1].is_empty(), "{reasons:?}");
    for width in [1280, 390] {
        s.c.set_window_size(width, if width == 390 { 844 } else { 1400 }).await.unwrap();
        s.go("/usage").await;
        assert_eq!(texts(s, "#usage-table .badge").await, ["502", "200"], "{tag} at {width} px");
        assert_eq!(texts(s, "#usage-table .badge.bad").await.len(), 2, "both read as failed ({tag})");
        assert_eq!(texts(s, "#usage-table .failure").await, reasons, "the reasons, as the API has them ({tag})");
        shot_at(s, "#usage-table", &format!("{tag}-usage-failures-{width}")).await;

        let day = s.app.get("/api/user/daily-usage", token).await.body;
        // Nothing is running: no reserve is held, the figures are the balance and the room.
        let balance = money(day["balance"].as_str().unwrap());
        let windows = day["windows"].as_array().unwrap();
        let figure = |w: &Value, field: &str| money(w[field].as_str().unwrap());
        let api_windows: Vec<[Money; 3]> =
            windows.iter().map(|w| [figure(w, "used"), figure(w, "limit"), figure(w, "remaining")]).collect();
        assert_eq!(api_windows.len(), 3, "5 h, day and week: {day}");
        s.go("/dashboard").await;
        // Every window of the package, as the API has it (used / limit USD · remaining).
        let shown: Vec<Vec<Money>> = texts(s, "#plan-windows .window-figures")
            .await
            .iter()
            .map(|t| t.split([' ', '/']).filter_map(|w| Money::parse(w).ok()).collect())
            .collect();
        assert_eq!(shown, api_windows.iter().map(|w| w.to_vec()).collect::<Vec<_>>(), "{tag} at {width} px");
        // The package's room is its tightest window's remainder (the 5-hour block here).
        let package_room = api_windows.iter().map(|w| w[2]).min().unwrap();
        assert_eq!(package_room, Money::parse("0.004").unwrap());
        let line = |models: &str| format!("#admits-by-model .admits-line[data-models='{models}'] .admits-figure");
        let codex = money(&s.text(&line("gpt-5-codex")).await);
        let others = money(&s.text(&line("*")).await);
        assert_eq!(codex, package_room.saturating_add(balance), "{tag} at {width} px");
        assert_eq!(others, balance, "{tag} at {width} px");
        shot_at(s, "#admits-card", &format!("{tag}-dashboard-reserve-lines-{width}")).await;
        shot_at(s, "#plan-windows", &format!("{tag}-dashboard-windows-{width}")).await;
    }
    super::phone::every_table_fits(s, &["/usage", "/dashboard"], &format!("{tag}-phone")).await;
}

/// The pricing form's button names what it saves, and a form with three wrong fields
/// shows the three errors at once and saves nothing.
async fn pricing_form(s: &Session, admin: &str, button: &str, tag: &str) {
    let before = s.app.get("/api/admin/prices", admin).await.body;
    s.go("/admin/pricing").await;
    assert_eq!(s.text("#save-price").await, button);
    s.fill("#model", "").await;
    s.fill("#input", "x").await;
    s.fill("#output", "-1").await;
    s.click("#save-price").await;
    for field in ["model", "input", "output"] {
        let shown = s.c.wait().for_element(Locator::Css(&format!("#{field}-error"))).await.unwrap();
        assert!(shown.is_displayed().await.unwrap(), "{field} shows its error ({tag})");
    }
    assert_eq!(s.app.get("/api/admin/prices", admin).await.body, before, "nothing saved ({tag})");
    shot_at(s, "#save-price", tag).await;
}

/// Three wrong fields at once, each with its error and no "saved"; then Credit, on, with
/// its merchant id cleared: refused next to the field, the stored settings unchanged; and
/// with the sandbox on, the gateway address field offers the sandbox's address.
async fn settings_form(s: &Session, pid_error: &str, tag: &str) {
    let stored = s.app.state.settings.get().await.unwrap();
    s.go("/admin/settings").await;
    s.fill("#markup", "lots").await;
    s.fill("#max_keys_per_user", "many").await;
    s.fill("#credit_topup_rate", "x").await;
    s.click("#save-settings").await;
    for id in ["markup-error", "max_keys_per_user-error", "credit.topup_rate-error"] {
        s.c.wait().for_element(Locator::Css(&format!("[id='{id}']"))).await.unwrap();
    }
    assert!(s.c.find(Locator::Css("#saved")).await.is_err(), "not \"saved\" ({tag})");
    s.text("#form-error").await;
    shot_at(s, "#form-error", &format!("{tag}-every-error")).await;

    s.go("/admin/settings").await;
    let enabled = s.c.find(Locator::Css("#credit_enabled")).await.unwrap();
    assert_eq!(enabled.prop("checked").await.unwrap().as_deref(), Some("true"), "Credit is on from the setup");
    s.fill("#credit_pid", "").await;
    s.click("#save-settings").await;
    let error = s.wait_text("[id='credit.pid-error']", pid_error).await;
    assert!(s.c.find(Locator::Css("#saved")).await.is_err(), "{error}: not \"saved\" ({tag})");
    let after = s.app.state.settings.get().await.unwrap();
    assert_eq!((after.credit.pid.as_str(), after.credit.enabled), (stored.credit.pid.as_str(), true), "unchanged");
    assert_eq!(after.markup, stored.markup);
    shot_at(s, "[id='credit.pid-error']", &format!("{tag}-credit-needs-pid")).await;

    s.go("/admin/settings").await;
    let sandbox = s.app.state.config.public_url.trim_end_matches('/').to_string() + "/sandbox/epay";
    assert!(s.text("#sandbox-gateway").await.contains(&sandbox), "the sandbox's address is named ({tag})");
    let field = s.c.find(Locator::Css("#credit_gateway_url")).await.unwrap();
    assert_eq!(field.attr("list").await.unwrap().as_deref(), Some("gateway-urls"));
    let offered =
        s.c.execute("return [...document.querySelectorAll('#gateway-urls option')].map(o => o.value);", vec![])
            .await
            .unwrap();
    assert_eq!(offered, json!([sandbox, "https://credit.linux.do/epay"]), "{tag}");
    shot_at(s, "#sandbox-gateway", &format!("{tag}-sandbox-offered")).await;
}

/// Spent and requests per user and per model over every usage row of the API, most
/// spent first (ties by user id / model name), as the overview ranks them.
fn top_from_the_api(rows: &[Value], emails: &BTreeMap<i64, String>) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut by_user: BTreeMap<i64, (Money, i64)> = BTreeMap::new();
    let mut by_model: BTreeMap<String, (Money, i64)> = BTreeMap::new();
    for r in rows {
        let cost = money(r["cost"].as_str().unwrap());
        let user = by_user.entry(r["user_id"].as_i64().unwrap()).or_insert((Money::ZERO, 0));
        *user = (user.0.saturating_add(cost), user.1 + 1);
        let model = by_model.entry(r["model"].as_str().unwrap().to_string()).or_insert((Money::ZERO, 0));
        *model = (model.0.saturating_add(cost), model.1 + 1);
    }
    let mut users: Vec<(i64, (Money, i64))> = by_user.into_iter().collect();
    users.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    let mut models: Vec<(String, (Money, i64))> = by_model.into_iter().collect();
    models.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    let line = |name: String, (spent, n): (Money, i64)| vec![name, spent.to_string(), n.to_string()];
    (
        users.into_iter().take(10).map(|(id, f)| line(emails[&id].clone(), f)).collect(),
        models.into_iter().take(10).map(|(m, f)| line(m, f)).collect(),
    )
}

/// The overview's top spenders and top models over 30 days equal the API's usage rows.
async fn top_tables_equal_the_api(s: &Session, admin: &str, tag: &str) {
    let usage = s.app.get("/api/admin/usage?per_page=200", admin).await.body;
    let rows = usage["items"].as_array().unwrap();
    assert!(rows.len() < 200 && rows.len() as i64 == usage["total"].as_i64().unwrap(), "one page holds them all");
    let users = s.app.get("/api/admin/users?per_page=200", admin).await.body;
    let emails: BTreeMap<i64, String> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_i64().unwrap(), u["email"].as_str().unwrap().to_string()))
        .collect();
    let (spenders, models) = top_from_the_api(rows, &emails);
    assert!(spenders.len() >= 3 && models.len() >= 2, "{spenders:?} {models:?}");
    s.go("/admin?days=30").await;
    for (table, expected) in [("#top-spenders", &spenders), ("#top-models", &models)] {
        let mut shown = Vec::new();
        for row in s.c.find_all(Locator::Css(&format!("{table} tbody tr"))).await.unwrap() {
            let mut cells = Vec::new();
            for cell in row.find_all(Locator::Css("td")).await.unwrap() {
                cells.push(cell.text().await.unwrap().trim().to_string());
            }
            // The page writes amounts with at least two decimals: compare them as amounts.
            cells[1] = money(&cells[1]).to_string();
            shown.push(cells);
        }
        assert_eq!(&shown, expected, "{table} ({tag})");
    }
    shot_at(s, "#top", tag).await;
}
