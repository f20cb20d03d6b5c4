//! End-to-end tests in headless Chromium (through chromedriver): the pages as a user
//! sees them, with a screenshot of each in `test-artifacts/screenshots/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (installed by `.ci/run`).
//! Without chromedriver the test fails when `CI` is set and is skipped loudly otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

/// The coupon, redemption code, announcement and audit steps of the flow.
#[path = "browser/community.rs"]
mod community;

/// The operator's tools: upstream edit and test, ending a package, codes, admin pages on a phone.
#[path = "browser/admin.rs"]
mod admin;

/// Every page with a table at 390 px, and the copy button.
#[path = "browser/phone.rs"]
mod phone;

/// A payment cancelled at the cashier, then expired.
#[path = "browser/cancelled.rs"]
mod cancelled;

/// What a buyer sees: the shortfall, what each order did, the queue on the dashboard.
#[path = "browser/packages.rs"]
mod packages;

/// Sub-cent costs and a negative balance, read off every page against the API.
#[path = "browser/money.rs"]
mod money;

/// Failure reasons, per-model reserve lines, and the operator's forms and top tables.
#[path = "browser/operator.rs"]
mod operator;

use std::path::PathBuf;
use std::time::Duration;

use codex_gateway::domain::proxy::mock::{serve_mock, MockHandle, MockOptions, MockUsage};
use codex_gateway::foundation::clock::Clock;
use fantoccini::{Client, ClientBuilder, Locator};
use helpers::{spawn_app_with, Backend, TestApp};
use serde_json::json;

/// A chromedriver process, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    port: u16,
}

fn find_binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

async fn start_driver(chromedriver: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    // Waiting for another process to listen is the one place a test has to poll.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Driver { _child: child, port };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start listening on port {port}");
}

async fn connect(driver: &Driver, chromium: Option<PathBuf>, profile: &std::path::Path) -> Client {
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,1400", "--lang=en-US", "--accept-lang=en-US,en",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Some(binary) = chromium {
        options["binary"] = json!(binary.display().to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connect to chromedriver")
}

/// The browser, the app, and where screenshots go.
struct Session {
    c: Client,
    app: TestApp,
    shots: PathBuf,
    /// The API key the user created, for later steps.
    secret: std::sync::Mutex<String>,
    /// A redemption code the admin generated on /admin/codes.
    code: std::sync::Mutex<String>,
    /// The fake OpenAI upstream the proxy forwards to.
    mock: MockHandle,
}

impl Session {
    async fn go(&self, path: &str) {
        self.c.goto(&self.app.url(path)).await.unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.c.wait().for_element(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c.wait().for_element(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.c.wait().for_element(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// Waits until the element's text contains `needle` (a form that posts back to the
    /// same path cannot be awaited by its path; the old page may still be showing).
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        for _ in 0..50 {
            if let Ok(element) = self.c.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never showed {needle:?}");
    }

    /// Waits until the browser is on `path` (after a form post and redirect).
    async fn wait_path(&self, path: &str) {
        for _ in 0..50 {
            if self.path().await == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected to reach {path}, still on {}", self.path().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_settings_a_package_bought_through_the_cashier_and_usage_work_in_a_real_browser() {
    let Some(chromedriver) = find_binary("CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
    else {
        if std::env::var_os("CI").is_some() {
            panic!("chromedriver is missing: install the Debian packages chromium and chromium-driver");
        }
        eprintln!("\n!!!!! SKIPPING the browser test: chromedriver not found (apt-get install chromium chromium-driver) !!!!!\n");
        return;
    };
    let chromium = find_binary("CHROME_BIN", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let driver = start_driver(&chromedriver).await;
    let profile = std::env::temp_dir().join(format!("cg-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let c = connect(&driver, chromium, &profile).await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    // 400k input + 50k output tokens of gpt-5 = 1.00 USD at list price; the flow sets a 1.25 markup.
    let usage = MockUsage { input: 400_000, cached: 0, output: 50_000, reasoning: 0 };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions { usage, ..Default::default() }).await.unwrap();
    let s = Session {
        c,
        mock,
        secret: std::sync::Mutex::new(String::new()),
        code: std::sync::Mutex::new(String::new()),
        app: spawn_app_with(Backend::Sqlite, &[("GATEWAY_PAY_SANDBOX", "true")]).await,
        shots,
    };

    // Close the browser even when an assertion fails, then report the failure.
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(flow(&s))).await;
    s.c.clone().close().await.ok();
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn flow(s: &Session) {
    admin_first_run(s).await;
    admin_adds_the_mock_upstream(s).await;
    admin_creates_a_package(s).await;
    community::admin_creates_a_coupon_codes_and_an_announcement(s).await;
    user_signs_up_and_creates_a_key(s).await;
    community::user_redeems_a_code_on_the_account_page(s).await;
    user_buys_the_package_through_the_sandbox_cashier(s).await;
    usage_moves_the_dashboard(s).await;
    packages::orders_say_what_they_did_and_the_dashboard_lists_the_queue(s).await;
    user_revokes_the_key(s).await;
    switches_language_and_uses_a_phone(s).await;
    admin_sees_orders_and_usage(s).await;
    community::admin_sees_the_community_trail(s).await;
    admin::admin_tools_on_desktop_and_phone(s).await;
    cancelled::a_cancelled_payment_expires_honestly(s).await;
    money::sub_cent_costs_and_a_debt_read_exactly_everywhere(s).await;
    operator::failures_reserve_lines_and_the_operators_forms(s).await;
}

async fn admin_first_run(s: &Session) {
    // A fresh install sends everyone to the first-run setup.
    s.go("/").await;
    s.wait_path("/setup").await;
    s.shot("01-setup").await;
    s.fill("#email", "boss@example.com").await;
    s.fill("#password", "short").await;
    s.click("#submit").await;
    assert!(s.text("#password-error").await.contains("8"), "a short password is refused next to the field");
    s.shot("02-setup-field-error").await;
    s.fill("#password", "correct horse battery").await;
    s.click("#submit").await;
    s.wait_path("/admin/settings").await;
    s.shot("03-admin-settings").await;

    // A wrong value is shown next to its field and nothing is saved.
    s.fill("#markup", "lots").await;
    s.click("#save-settings").await;
    assert!(!s.text("#markup-error").await.is_empty());
    s.shot("04-admin-settings-error").await;
    s.fill("#markup", "1.25").await;
    s.fill("#max_keys_per_user", "3").await;
    s.fill("#credit_gateway_url", &s.app.url("/sandbox/epay")).await;
    s.fill("#credit_pid", "1001").await;
    s.fill("#credit_key", "merchant-secret").await;
    s.fill("#credit_notify_url", &s.app.url("/api/payment/credit/notify")).await;
    s.fill("#credit_return_url", &s.app.url("/packages")).await;
    s.click("#credit_enabled").await;
    s.click("#save-settings").await;
    s.text("#saved").await;
    s.click("#check-credit").await;
    let check = s.c.wait().for_element(Locator::Css("#check-result")).await.unwrap();
    assert!(check.attr("class").await.unwrap().unwrap_or_default().contains("ok"), "the sandbox gateway answers");
    s.shot("04b-admin-settings-checked").await;
    let settings = s.app.state.settings.get().await.unwrap();
    assert_eq!(settings.markup.to_string(), "1.25");
    assert_eq!(settings.max_keys_per_user, 3);
    assert_eq!(settings.credit.key, "merchant-secret");
    assert!(settings.credit.enabled);
    let key_field = s.c.find(Locator::Css("#credit_key")).await.unwrap();
    assert_eq!(key_field.prop("value").await.unwrap().unwrap_or_default(), "", "the merchant key is write-only");

    // LINUX DO sign-in: the client secret is write-only too (a fresh page: no old "saved" notice).
    s.go("/admin/settings").await;
    s.fill("#oauth_client_id", "gateway-client").await;
    s.fill("#oauth_client_secret", "oauth-secret").await;
    s.fill("#oauth_min_trust_level", "1").await;
    s.click("#oauth_enabled").await;
    s.click("#save-settings").await;
    s.text("#saved").await;
    s.c.execute("document.getElementById('oauth').scrollIntoView()", vec![]).await.unwrap();
    s.shot("04c-admin-settings-oauth").await;
    let settings = s.app.state.settings.get().await.unwrap();
    assert_eq!(
        (settings.oauth.client_id.as_str(), settings.oauth.client_secret.as_str()),
        ("gateway-client", "oauth-secret")
    );
    assert!(settings.oauth.enabled && settings.oauth.is_usable());
    assert_eq!(settings.oauth.min_trust_level, 1);
    let secret_field = s.c.find(Locator::Css("#oauth_client_secret")).await.unwrap();
    assert_eq!(secret_field.prop("value").await.unwrap().unwrap_or_default(), "", "the client secret is write-only");

    s.go("/admin").await;
    assert_eq!(s.text("#users-total").await, "1");
    s.shot("05-admin-overview").await;
    s.go("/admin/users").await;
    s.text("#users-table").await;
    s.shot("06-admin-users").await;
}

async fn admin_adds_the_mock_upstream(s: &Session) {
    s.go("/admin/upstreams").await;
    s.fill("#name", "mock").await;
    s.fill("#base_url", &s.mock.base_url()).await;
    s.fill("#api_key", "sk-upstream-secret").await;
    s.click("#create-upstream").await;
    s.wait_path("/admin/upstreams").await;
    assert!(s.text("#upstreams-table").await.contains("mock"));
    s.shot("06c-admin-upstreams").await;
    s.go("/admin/pricing").await;
    assert!(s.text("#prices-table").await.contains("gpt-5"), "default prices are seeded");
    s.shot("06d-admin-pricing").await;
}

async fn admin_creates_a_package(s: &Session) {
    s.go("/admin/packages").await;
    s.fill("#name", "Starter").await;
    s.fill("#price", "9.90").await;
    s.fill("#duration_days", "30").await;
    s.fill("#daily_limit", "2").await;
    s.fill("#stock", "5").await;
    s.fill("#description", "Two dollars of API usage every day").await;
    s.click("#create-package").await;
    s.wait_path("/admin/packages").await;
    s.wait_text("#packages-table", "Starter").await;
    s.shot("06b-admin-packages").await;
}

async fn user_signs_up_and_creates_a_key(s: &Session) {
    s.click("a.cta").await;
    s.wait_path("/register").await;
    s.text("#oauth-linuxdo").await;
    s.shot("07-register").await;
    s.fill("#email", "dev@example.com").await;
    s.fill("#password", "a good password").await;
    s.click("#submit").await;
    s.wait_path("/dashboard").await;
    assert_eq!(s.text("#balance").await, "0.00");
    s.shot("08-dashboard").await;

    s.click("a[href='/keys']").await;
    s.wait_path("/keys").await;
    s.fill("#name", "laptop").await;
    s.click("#create-key").await;
    let secret = s.text("#secret-value").await;
    assert!(secret.starts_with("sk-"), "the new key is shown once: {secret}");
    let config = s.text("#codex-config").await;
    assert!(config.contains("[model_providers.codexgw]"));
    assert!(config.contains("wire_api = \"responses\""));
    assert!(config.contains("env_key = \"CODEXGW_API_KEY\""));
    assert!(config.contains("/v1\""));
    assert!(s.text("#openai-env").await.contains("OPENAI_BASE_URL"));
    s.shot("09-keys-created").await;
    let now = s.app.clock.now();
    let owner = codex_gateway::domain::auth::api_keys::authenticate(&s.app.db, &secret, now).await.unwrap();
    assert!(owner.is_ok(), "the key shown in the page authenticates");
    *s.secret.lock().unwrap() = secret.clone();

    // Reloading never shows the secret again.
    s.go("/keys").await;
    assert!(s.c.find(Locator::Css("#secret-value")).await.is_err());
}

async fn user_revokes_the_key(s: &Session) {
    s.go("/keys").await;
    let secret = s.secret.lock().unwrap().clone();
    let now = s.app.clock.now();
    // Revoke through htmx (after the confirmation dialog): the row updates in place.
    s.click("#keys-table button.danger").await;
    s.c.accept_alert().await.unwrap();
    s.c.wait().for_element(Locator::Css("#keys-table .badge:not(.ok)")).await.unwrap();
    assert_eq!(s.path().await, "/keys");
    s.shot("10g-keys-revoked").await;
    let after = codex_gateway::domain::auth::api_keys::authenticate(&s.app.db, &secret, now).await.unwrap();
    assert!(after.is_err(), "a revoked key no longer authenticates");
}

async fn user_buys_the_package_through_the_sandbox_cashier(s: &Session) {
    s.click("a[href='/packages']").await;
    s.wait_path("/packages").await;
    packages::a_balance_too_low_says_what_is_missing(s).await;
    s.go("/packages").await;
    s.shot("10a-packages").await;
    // The coupon is priced with htmx while typing, before anything is paid.
    s.fill(".package-card .coupon-input", "nope").await;
    s.c.wait().for_element(Locator::Css(".coupon-quote .quote-error")).await.unwrap();
    s.fill(".package-card .coupon-input", "welcome10").await;
    let price = s.c.wait().for_element(Locator::Css(".coupon-quote .quote-price")).await.unwrap();
    assert_eq!(price.text().await.unwrap(), "8.91", "10% off 9.90");
    s.shot("10a2-packages-coupon-quoted").await;
    s.click(".buy-credit").await;
    // /pay/{order} signs the order and sends the browser on to the gateway's cashier.
    for _ in 0..50 {
        if s.path().await.starts_with("/sandbox/epay/cashier/") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.text("#sandbox-money").await, "8.91", "the cashier asks for the discounted price");
    s.shot("10b-sandbox-cashier").await;
    s.click("#sandbox-pay").await;
    s.wait_path("/packages").await;
    let query = s.c.current_url().await.unwrap().query().unwrap_or_default().to_string();
    assert!(
        query.starts_with("out_trade_no=") && !query.contains("sign"),
        "the signed return query is dropped: {query}"
    );
    let status = s.c.wait().for_element(Locator::Css("#order-status[data-status='fulfilled']")).await.unwrap();
    assert!(status.text().await.unwrap().contains("Starter"));
    let said = s.text("#order-outcome").await;
    assert!(said.starts_with("Payment received: Starter is active until "), "says what happened: {said}");
    assert!(s.text("#my-packages").await.contains("Starter"));
    s.shot("10c-packages-paid").await;
    s.go("/dashboard").await;
    assert_eq!(s.text("#package-name").await, "Starter");
    assert_eq!(s.text("#package-remaining").await, "2.00");
}

/// A request with the user's key goes through the proxy to the mock upstream and is billed.
async fn usage_moves_the_dashboard(s: &Session) {
    let secret = s.secret.lock().unwrap().clone();
    let response = reqwest::Client::new()
        .post(s.app.url("/v1/responses"))
        .bearer_auth(&secret)
        .json(&json!({"model": "gpt-5", "input": "Say hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the proxy answered");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.to_string().contains("Hello from the mock upstream"));
    // Settlement runs in a tracked task after the response; wait for the dashboard to show it.
    for _ in 0..50 {
        s.go("/dashboard").await;
        if s.text("#spent-today").await != "0.00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.text("#spent-today").await, "1.25");
    assert_eq!(s.text("#package-used").await, "1.25");
    assert_eq!(s.text("#package-remaining").await, "0.75");
    s.shot("10d-dashboard-usage").await;
    s.click("a[href='/usage']").await;
    s.wait_path("/usage").await;
    assert!(s.text("#usage-table").await.contains("gpt-5"));
    s.shot("10e-usage").await;
    s.go("/orders").await;
    assert!(s.text("#orders-table").await.contains("Starter"));
    s.shot("10f-orders").await;
}

async fn admin_sees_orders_and_usage(s: &Session) {
    s.click("#logout").await;
    s.wait_path("/login").await;
    assert!(s.text("#oauth-linuxdo").await.contains("LINUX DO"), "LINUX DO sign-in is offered");
    s.shot("16b-login-linuxdo").await;
    s.fill("#email", "boss@example.com").await;
    s.fill("#password", "correct horse battery").await;
    s.click("#submit").await;
    s.wait_path("/dashboard").await;
    s.go("/admin").await;
    // Paid at the cashier: Starter with the coupon 8.91, the top-up 5.00, the renewal 9.90
    // (Weekly was paid from the balance, already counted when it was topped up).
    assert_eq!(s.text("#revenue-today").await, "23.81");
    assert_eq!(s.text("#requests-today").await, "1");
    assert_eq!(s.text("#spend-today").await, "1.25");
    s.shot("16c-admin-overview-busy").await;
    s.go("/admin/orders").await;
    assert!(s.text("#orders-table").await.contains("dev@example.com"));
    s.shot("17-admin-orders").await;
    s.go("/admin/usage").await;
    assert!(s.text("#usage-table").await.contains("gpt-5"));
    s.shot("18-admin-usage").await;
    s.go("/admin/packages").await;
    s.shot("19-admin-packages-sold").await;
}

/// Table cells (of the user's card tables, wherever they sit) whose right edge is past the
/// viewport, or whose text overflows the cell: what a phone user could not read.
const CELLS_CUT: &str = r#"
const width = document.documentElement.clientWidth;
const cut = [];
for (const cell of document.querySelectorAll('table.cards-sm td, table.cards-sm th')) {
  if (cell.offsetParent === null) continue;
  const box = cell.getBoundingClientRect();
  if (box.right > width + 1 || cell.scrollWidth > cell.clientWidth + 1) cut.push(cell.textContent.trim().slice(0, 40));
}
return cut;
"#;

async fn switches_language_and_uses_a_phone(s: &Session) {
    s.click("#lang-switch").await;
    s.wait_path("/keys").await;
    assert_eq!(s.text("h1").await, "API 密钥");
    let lang = s.c.find(Locator::Css("html")).await.unwrap().attr("lang").await.unwrap();
    assert_eq!(lang.as_deref(), Some("zh-CN"));
    s.shot("11-keys-zh").await;
    s.go("/dashboard").await;
    assert_eq!(s.text("h1").await, "概览");
    let package = s.text("#package-status").await;
    assert!(
        package.contains("使用中") && package.contains("排队中的套餐"),
        "the badge /packages uses, the queue: {package}"
    );
    assert!(!package.contains("正常"), "{package}");
    s.shot("12-dashboard-zh").await;
    // Stored order items are translated: the top-up reads 余额充值 5.00, not "Balance top-up".
    s.go("/orders").await;
    let orders = s.text("#orders-table").await;
    assert!(orders.contains("余额充值 5.00") && !orders.contains("Balance top-up"), "{orders}");
    s.shot("12b-orders-zh").await;
    s.go("/account").await;
    s.shot("13-account-zh").await;
    phone::every_table_fits_the_desktop(s, &phone::USER_PAGES, "desktop-user-zh").await;
    s.go("/admin").await;
    assert!(s.text("h1").await.contains("无权访问"), "a user gets the 403 page on admin pages");
    assert_eq!(s.text("header .who").await, "dev@example.com", "the 403 page keeps the signed-in header");
    s.c.find(Locator::Css("#logout")).await.expect("and its log-out button");
    // The favicon every page links to is served (the browser's default /favicon.ico too).
    let icons = s
        .c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             const href = document.querySelector('link[rel=icon]').getAttribute('href'); \
             Promise.all([href, '/favicon.ico'].map(u => fetch(u).then(r => u + ' ' + r.status + ' ' + r.headers.get('content-type')))) \
               .then(done, e => done('failed: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(icons, json!(["/static/favicon.svg 200 image/svg+xml", "/favicon.ico 200 image/svg+xml"]));
    s.shot("14-admin-forbidden-zh").await;

    s.c.set_window_size(390, 844).await.unwrap();
    s.go("/keys").await;
    s.shot("15-phone-keys").await;
    s.go("/packages").await;
    s.fill(".package-card .coupon-input", "nope").await;
    s.c.wait().for_element(Locator::Css(".coupon-quote .quote-error")).await.unwrap();
    s.shot("15b-phone-packages-coupon-zh").await;
    // Issue 20: the user's tables turn into labelled cards at 390 px; no cell is cut.
    for (path, shot) in
        [("/usage", "15c-phone-usage-zh"), ("/ledger", "15d-phone-ledger-zh"), ("/dashboard", "15e-phone-dashboard-zh")]
    {
        s.go(path).await;
        s.text("h1").await;
        let cut: serde_json::Value = s.c.execute(CELLS_CUT, vec![]).await.unwrap();
        assert_eq!(cut, json!([]), "{path} at 390 px: cells cut off");
        s.shot(shot).await;
    }
    // Issue 20: every user page with a table (and the chart), in Chinese here and in English below.
    phone::every_table_fits(s, &phone::USER_PAGES, "40-phone-zh").await;
    s.c.set_window_size(390, 844).await.unwrap();
    s.go("/keys").await;
    s.click(".nav-burger").await;
    s.text("#logout").await;
    s.shot("16-phone-menu").await;
    s.c.set_window_size(1280, 1400).await.unwrap();
    s.click("#lang-switch").await;
    s.wait_path("/keys").await;
    assert_eq!(s.text("h1").await, "API keys");
    phone::every_table_fits(s, &phone::USER_PAGES, "41-phone-en").await;
    phone::every_table_fits_the_desktop(s, &phone::USER_PAGES, "desktop-user-en").await;
}
