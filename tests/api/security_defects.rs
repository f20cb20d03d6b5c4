//! Regression tests for the defects of issue 16, each written to fail before its fix:
//! secrets in gateway errors, notify storage growth, per-user purchase limits (racing and
//! paid later), refunds of extended packages, open redirects, multibyte upstream keys and
//! the client address behind a trusted proxy.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{signed_notify, spawn_app_with, Answer, Backend, TestApp, TEST_KEY};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    an_unreachable_gateway_never_shows_the_merchant_key,
    an_upstream_key_with_multibyte_characters_is_listed_shown_and_deleted,
    next_parameters_never_redirect_off_site,
    thirty_concurrent_balance_purchases_respect_a_limit_of_one,
    orders_paid_later_respect_the_per_user_limit,
    a_refund_removes_only_what_its_order_bought,
    notifies_are_stored_bounded_capped_and_rate_limited,
    moving_an_upstream_to_another_host_needs_its_key_typed_again,
    an_upstream_that_echoes_its_key_in_an_error_never_shows_it_to_the_user,
);

/// A signed-in form post (session cookie and its CSRF token added).
async fn form_post(app: &TestApp, session: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

/// A base URL on which nothing listens (the port was bound, then released).
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/epay")
}

/// Starts a top-up through Credit and fulfils it with a signed notify; returns its number.
async fn paid_top_up(app: &TestApp, user: &str, amount: &str) -> String {
    let topup = app.post("/api/user/topup", user, json!({"amount": amount})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let (status, body) = app.send_notify(&signed_notify(&otn, "G-sec-1", amount, &[])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));
    otn
}

async fn an_unreachable_gateway_never_shows_the_merchant_key(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("sec1@example.com").await;
    let paid = paid_top_up(&app, &user, "3.00").await;
    let pending = app.post("/api/user/topup", &user, json!({"amount": "4.00"})).await;
    let pending = pending.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": dead_url().await}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let check = app.post(&format!("/api/admin/orders/{pending}/check"), &admin, json!({})).await;
    assert_eq!(check.status, StatusCode::BAD_GATEWAY, "{}", check.text);
    assert!(!check.text.contains(TEST_KEY), "the check answer carries the key: {}", check.text);
    let refund = app.post(&format!("/api/admin/orders/{paid}/refund"), &admin, json!({})).await;
    assert_eq!(refund.status, StatusCode::BAD_GATEWAY, "{}", refund.text);
    assert!(!refund.text.contains(TEST_KEY), "the refund answer carries the key: {}", refund.text);
    assert_eq!(app.balance(&user).await, "3.00", "a refund the gateway never answered changes nothing");

    // The reconcile job formats the same error into its WARN line.
    let order = codex_gateway::domain::orders::find(&app.db, &pending).await.unwrap().unwrap();
    let credit = app.state.settings.get().await.unwrap().credit.clone();
    let err =
        codex_gateway::domain::orders::jobs::check_with_gateway(app.state.env(), &credit, &order).await.unwrap_err();
    assert!(!err.to_string().contains(TEST_KEY), "{err}");
    let report = codex_gateway::domain::orders::jobs::reconcile_once(app.state.env()).await.unwrap();
    assert_eq!(report.errors, 1);

    // The settings page's "check configuration" shows the same text.
    let page = form_post(&app, &admin, "/admin/settings/check", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains(TEST_KEY), "the settings page shows the key");
    app.assert_all_invariants().await;
}

async fn an_upstream_key_with_multibyte_characters_is_listed_shown_and_deleted(app: TestApp) {
    let admin = app.admin_token().await;
    // Byte 3 falls inside the first character, byte len-4 inside the last ones.
    for (i, key) in ["密钥密钥密钥密钥密钥密钥密钥", "é-é", "sk-ab€"].iter().enumerate() {
        let created = app
            .post(
                "/api/admin/upstreams",
                &admin,
                json!({"name": format!("mb{i}"), "base_url": "http://127.0.0.1:9/v1", "api_key": key}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = created.body["id"].as_i64().unwrap();
        let list = app.get("/api/admin/upstreams", &admin).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        assert!(!list.text.contains(key), "the full key is listed");
        let show = app.get(&format!("/api/admin/upstreams/{id}"), &admin).await;
        assert_eq!(show.status, StatusCode::OK, "{}", show.text);
        let page = app
            .client
            .get(app.url("/admin/upstreams"))
            .header(COOKIE, format!("cg_session={admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let delete = app.delete(&format!("/api/admin/upstreams/{id}"), &admin).await;
        assert!(delete.status.is_success(), "{}", delete.text);
    }
    let long = app.get("/api/admin/upstreams", &admin).await;
    assert_eq!(long.body["items"].as_array().unwrap().len(), 0);
}

/// `next=` values browsers would follow off the site (or that broke the redirect).
const HOSTILE_NEXT: &[&str] = &[
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\nSet-Cookie: x=1",
    "/\u{0}/evil.example",
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "/\u{7f}/evil.example",
    " //evil.example",
    "\t//evil.example",
    "javascript:alert(1)",
];

/// A redirect target browsers keep on this site.
fn is_local(location: &str) -> bool {
    location.starts_with('/')
        && !location[1..].starts_with(['/', '\\'])
        && !location.chars().any(|c| c.is_control() || c == '\\')
}

async fn next_parameters_never_redirect_off_site(app: TestApp) {
    let (_, user) = app.register_and_login("sec6@example.com").await;
    for (i, next) in HOSTILE_NEXT.iter().enumerate() {
        // One account each: the per-account login throttle allows a burst of 10.
        let email = format!("sec6-{i}@example.com");
        app.register_and_login(&email).await;
        let query = serde_urlencoded::to_string([("next", next)]).unwrap();
        let lang = app.client.get(app.url(&format!("/lang/en?{query}"))).send().await.unwrap();
        assert_eq!(lang.status(), StatusCode::SEE_OTHER, "/lang with next={next:?}");
        let location = lang.headers()["location"].to_str().unwrap().to_string();
        assert!(is_local(&location), "/lang next={next:?} -> {location:?}");

        let signed_in = app
            .client
            .get(app.url(&format!("/login?{query}")))
            .header(COOKIE, format!("cg_session={user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER, "/login (signed in) with next={next:?}");
        let location = signed_in.headers()["location"].to_str().unwrap().to_string();
        assert!(is_local(&location), "/login next={next:?} -> {location:?}");

        let pre = "a-pre-session-value-of-some-length";
        let csrf = csrf_token(app.state.config.secret_bytes(), &format!("pre:{pre}"));
        let login = app
            .client
            .post(app.url("/login"))
            .header(COOKIE, format!("cg_pre={pre}"))
            .form(&[("_csrf", csrf.as_str()), ("email", email.as_str()), ("password", "password123"), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::SEE_OTHER, "POST /login with next={next:?}");
        let location = login.headers()["location"].to_str().unwrap().to_string();
        assert!(is_local(&location), "POST /login next={next:?} -> {location:?}");
    }
    let fine = app.client.get(app.url("/lang/zh?next=%2Fkeys%3Fpage%3D2")).send().await.unwrap();
    assert_eq!(fine.headers()["location"], "/keys?page=2", "a local path is still followed");
}

async fn thirty_concurrent_balance_purchases_respect_a_limit_of_one(app: TestApp) {
    let admin = app.admin_token().await;
    let mut bought_total = 0;
    for trial in 0..3 {
        let package = app
            .create_package(
                &admin,
                json!({"name": format!("limited {trial}"), "price": "1.00", "duration_days": 1, "daily_limit": 1, "per_user_limit": 1}),
            )
            .await;
        let (user_id, user) = app.register_and_login(&format!("sec3-{trial}@example.com")).await;
        app.fund(&admin, user_id, "100.00").await;
        let path = format!("/api/packages/{package}/purchase");
        let attempts = (0..30).map(|_| app.post(&path, &user, json!({"pay_with": "balance"})));
        let answers = futures::future::join_all(attempts).await;
        let bought = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
        for a in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
            assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
        }
        let fulfilled = app
            .count(&format!(
                "SELECT COUNT(*) FROM payment_orders WHERE user_id = {user_id} AND package_id = {package} AND status = 'fulfilled'"
            ))
            .await;
        assert_eq!((bought, fulfilled), (1, 1), "trial {trial}: a limit of 1 sold {fulfilled}");
        assert_eq!(app.balance(&user).await, "99.00", "trial {trial}: only one purchase was debited");
        bought_total += bought;
    }
    assert_eq!(bought_total, 3);
    app.assert_all_invariants().await;
}

async fn orders_paid_later_respect_the_per_user_limit(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let package = app
        .create_package(
            &admin,
            json!({"name": "once", "price": "30.00", "duration_days": 30, "daily_limit": 5, "per_user_limit": 1}),
        )
        .await;
    let (user_id, user) = app.register_and_login("sec4@example.com").await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let r = app.post(&format!("/api/packages/{package}/purchase"), &user, json!({"pay_with": "credit"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "pending orders may be opened: {}", r.text);
        orders.push(r.body["order"]["out_trade_no"].as_str().unwrap().to_string());
    }
    for (i, otn) in orders.iter().enumerate() {
        let (status, body) = app.send_notify(&signed_notify(otn, &format!("G-sec4-{i}"), "30.00", &[])).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "success"), "a paid order is always acknowledged");
        // A repeat changes nothing.
        let (_, again) = app.send_notify(&signed_notify(otn, &format!("G-sec4-{i}"), "30.00", &[])).await;
        assert_eq!(again, "success");
    }
    let rows = app.count(&format!("SELECT COUNT(*) FROM user_packages WHERE user_id = {user_id}")).await;
    let days = app
        .count(&format!("SELECT CAST(SUM(duration_days) AS BIGINT) FROM user_packages WHERE user_id = {user_id}"))
        .await;
    assert_eq!((rows, days), (1, 30), "one package of 30 days, not 3 x the days");
    let flagged = app
        .count("SELECT COUNT(*) FROM payment_orders WHERE flags LIKE '%over_limit_credited%' AND status = 'fulfilled'")
        .await;
    assert_eq!(flagged, 2, "the orders over the limit are credited and flagged");
    let stock_sold = app.count(&format!("SELECT sold FROM packages WHERE id = {package}")).await;
    assert_eq!(stock_sold, 1, "only the package delivered counts as sold");
    // The two over the limit were paid back to the balance at the top-up rate.
    let credited = app
        .count(&format!(
            "SELECT CAST(SUM(amount) AS BIGINT) FROM ledger_entries WHERE user_id = {user_id} AND kind = 'refund'"
        ))
        .await;
    let rate = app.state.settings.get().await.unwrap().credit.topup_rate;
    let per_order = codex_gateway::domain::orders::to_balance(codex_gateway::foundation::money::Money::units(30), rate);
    assert_eq!(credited, 2 * per_order.micros(), "each order over the limit is credited its value");
    assert_eq!(app.balance(&user).await, codex_gateway::foundation::money::Money::from_micros(credited).format_2dp());
    app.assert_all_invariants().await;
}

async fn a_refund_removes_only_what_its_order_bought(app: TestApp) {
    let admin = app.admin_token().await;
    let package = app
        .create_package(&admin, json!({"name": "monthly", "price": "10.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    let (user_id, user) = app.register_and_login("sec5@example.com").await;
    app.fund(&admin, user_id, "20.00").await;
    let mut orders = Vec::new();
    for _ in 0..2 {
        let r = app.post(&format!("/api/packages/{package}/purchase"), &user, json!({"pay_with": "balance"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        orders.push(r.body["order"]["out_trade_no"].as_str().unwrap().to_string());
    }
    let (a, b) = (&orders[0], &orders[1]);
    let active = format!(
        "SELECT CAST(COALESCE(SUM(duration_days), 0) AS BIGINT) FROM user_packages WHERE user_id = {user_id} AND status = 'active'"
    );
    assert_eq!(app.count(&active).await, 60, "A started the package, B extended it");

    // A started what B extends: refunding A first would take B's days with it.
    let refused = app.post(&format!("/api/admin/orders/{a}/refund"), &admin, json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.error_code(), "later_extensions_first");
    assert!(refused.text.contains(b.as_str()), "the error names the order to refund first: {}", refused.text);
    assert_eq!(app.count(&active).await, 60, "a refused refund changes nothing");
    assert_eq!(app.balance(&user).await, "0.00");

    let refund_b = app.post(&format!("/api/admin/orders/{b}/refund"), &admin, json!({})).await;
    assert_eq!(refund_b.status, StatusCode::OK, "{}", refund_b.text);
    assert_eq!(app.count(&active).await, 30, "B's refund removed B's 30 days only");
    assert_eq!(app.balance(&user).await, "10.00");

    let refund_a = app.post(&format!("/api/admin/orders/{a}/refund"), &admin, json!({})).await;
    assert_eq!(refund_a.status, StatusCode::OK, "{}", refund_a.text);
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM user_packages WHERE user_id = {user_id} AND status = 'active'")).await,
        0
    );
    assert_eq!(app.balance(&user).await, "20.00", "each refund returned its own order's amount");
    app.assert_all_invariants().await;
}

/// A failed login from `client` as seen behind a proxy that sets `X-Forwarded-For`.
async fn bad_login_from(app: &TestApp, client: &str, email: &str) -> StatusCode {
    let r = app
        .client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    r.status()
}

async fn behind_a_trusted_proxy_each_client_has_its_own_login_budget(backend: Backend) {
    let app = spawn_app_with(backend, &[("GATEWAY_TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    app.register_and_login("victim@example.com").await;
    let mut refused = 0;
    let attempts: usize = 60;
    let started = std::time::Instant::now();
    for i in 0..attempts {
        refused += usize::from(
            bad_login_from(&app, "203.0.113.7", &format!("spray{i}@example.com")).await
                == StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let expected = refusals_expected(attempts, started);
    assert!(refused >= expected, "the attacker's address is throttled ({refused} refused, {expected} expected)");
    // Another client behind the same proxy still signs in.
    let ok = app
        .client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", "198.51.100.2")
        .json(&json!({"email": "victim@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "one client's bad logins lock out everyone behind the proxy");
    // Audit rows carry the forwarded client address.
    let admin = app.admin_token().await;
    let (user_id, _) = app.register_and_login("audited@example.com").await;
    let r = app
        .client
        .post(app.url(&format!("/api/admin/users/{user_id}/balance")))
        .bearer_auth(&admin)
        .header("x-forwarded-for", "192.0.2.44")
        .json(&json!({"amount": "1.00", "reason": "audit ip"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ips: Vec<Option<String>> =
        sqlx::query_scalar("SELECT ip FROM audit_logs").fetch_all(app.db.pool()).await.unwrap();
    assert!(ips.contains(&Some("192.0.2.44".into())), "audit ips: {ips:?}");
}

/// Attempts past the per-address budget, a burst of 40 refilled at 20 a minute: one every
/// 3 s of the real time the attempts took (password hashing is slow on a loaded machine).
fn refusals_expected(attempts: usize, started: std::time::Instant) -> usize {
    let refilled = started.elapsed().as_secs() as usize / 3 + 1;
    attempts.saturating_sub(40 + refilled).max(1)
}

async fn without_trusted_proxies_forwarded_headers_are_ignored(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let mut refused = 0;
    let attempts: usize = 60;
    let started = std::time::Instant::now();
    // A spoofed X-Forwarded-For per attempt gains nothing: the peer is the client.
    for i in 0..attempts {
        refused += usize::from(
            bad_login_from(&app, &format!("203.0.113.{i}"), &format!("spray{i}@example.com")).await
                == StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let expected = refusals_expected(attempts, started);
    assert!(refused >= expected, "spoofed addresses bypassed the throttle ({refused} refused, {expected} expected)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_budget_sqlite() {
    behind_a_trusted_proxy_each_client_has_its_own_login_budget(Backend::Sqlite).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_budget_postgres() {
    behind_a_trusted_proxy_each_client_has_its_own_login_budget(Backend::Postgres).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_headers_are_ignored_sqlite() {
    without_trusted_proxies_forwarded_headers_are_ignored(Backend::Sqlite).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_headers_are_ignored_postgres() {
    without_trusted_proxies_forwarded_headers_are_ignored(Backend::Postgres).await
}

async fn notifies_are_stored_bounded_capped_and_rate_limited(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let url = app.url("/api/payment/credit/notify");
    // A body over the cap is refused before anything is stored. Twice the cap, not megabytes: a
    // body that fits the socket buffers is sent whole before the 413 comes back, so the client
    // never races the server closing the connection mid-upload (a flaky reset, seen in CI).
    let cap = codex_gateway::domain::orders::notify::MAX_NOTIFY_BYTES;
    let big = format!("pid=1001&junk={}", "x".repeat(2 * cap));
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies").await, 0, "the oversized notify was stored");
    // Within the cap, only the known fields are kept, truncated.
    let mut fields: Vec<(String, String)> = (0..30).map(|i| (format!("extra{i}"), "y".repeat(50))).collect();
    fields.push(("out_trade_no".into(), "T".repeat(1000)));
    fields.push(("name".into(), "名".repeat(300)));
    let r = app.client.post(&url).form(&fields).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let stored: String =
        sqlx::query_scalar("SELECT params FROM payment_notifies").fetch_one(app.db.pool()).await.unwrap();
    assert!(stored.chars().count() < 1024, "stored {} characters: {stored}", stored.chars().count());
    assert!(!stored.contains("extra1"), "unknown fields are not stored: {stored}");
    // A forger sending many notifies from one address is slowed down.
    let forged = signed_notify("T-none", "G-x", "1.00", &[("sign", "0".repeat(32).as_str())]);
    let mut limited = 0;
    for _ in 0..200 {
        let r = app.client.get(&url).query(&forged).send().await.unwrap();
        limited += usize::from(r.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(limited > 0, "200 forged notifies in a row were all processed");
    let rows = app.count("SELECT COUNT(*) FROM payment_notifies").await;
    assert!(rows <= 200 - limited as i64 + 1, "refused notifies are not stored ({rows} rows)");
    // Raw notifies are kept for a bounded retention.
    app.clock.advance(chrono::Duration::days(91));
    let pruned = codex_gateway::domain::orders::notify::prune_once(app.state.env()).await.unwrap();
    assert_eq!(pruned as i64, rows);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies").await, 0);
}

/// A server that answers the model list and keeps every `Authorization` header it was sent,
/// to see which key reached it.
async fn recording_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let models = move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
            record.lock().unwrap().push(auth.to_string());
            axum::Json(json!({"object": "list", "data": [{"id": "gpt-5", "object": "model"}]}))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/v1/models", axum::routing::get(models));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/v1"), seen)
}

/// The stored key is write-only; without this rule an admin session (or a stolen one) could
/// move the address to its own server, keep the key, press "Test connection" and read the key
/// from the request. Moving to another host needs the key typed again, on the API and the page.
async fn moving_an_upstream_to_another_host_needs_its_key_typed_again(app: TestApp) {
    const KEY: &str = "sk-upstream-secret-1234";
    let admin = app.admin_token().await;
    let (home, home_seen) = recording_upstream().await;
    let (elsewhere, elsewhere_seen) = recording_upstream().await;
    let body = json!({"name": "main", "base_url": home, "api_key": KEY});
    let created = app.post("/api/admin/upstreams", &admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().unwrap();
    let path = format!("/api/admin/upstreams/{id}");

    let moved = app.put(&path, &admin, json!({"base_url": elsewhere})).await;
    assert_eq!(moved.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", moved.text);
    assert_eq!(
        (moved.body["error"]["code"].as_str(), moved.body["error"]["field"].as_str()),
        (Some("validation_failed"), Some("api_key"))
    );
    let page = format!("/admin/upstreams/{id}");
    let fields =
        [("name", "main"), ("base_url", elsewhere.as_str()), ("api_key", ""), ("priority", "0"), ("weight", "1")];
    let refused = form_post(&app, &admin, &page, &fields).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.text.contains("id=\"api_key-error\""), "the key field says why");
    assert_eq!(app.get(&path, &admin).await.body["base_url"], home.as_str(), "nothing was changed");
    let tested = form_post(&app, &admin, &format!("{page}/test"), &[]).await;
    assert_eq!(tested.status, StatusCode::OK);
    assert_eq!(home_seen.lock().unwrap().as_slice(), [format!("Bearer {KEY}")], "the test went to the stored host");

    let same_host = app.put(&path, &admin, json!({"base_url": home.replace("/v1", "/v1/")})).await;
    assert_eq!(same_host.status, StatusCode::OK, "the same host keeps the key: {}", same_host.text);
    let own = app.put(&path, &admin, json!({"base_url": elsewhere, "api_key": "sk-its-own-key"})).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    form_post(&app, &admin, &format!("{page}/test"), &[]).await;
    assert_eq!(elsewhere_seen.lock().unwrap().as_slice(), ["Bearer sk-its-own-key".to_string()]);
    assert!(
        !elsewhere_seen.lock().unwrap().iter().any(|auth| auth.contains(KEY)),
        "the stored key never left for the new host"
    );
}

/// An upstream that refuses the gateway's credential and echoes it in its error body (some
/// OpenAI-compatible providers do: "invalid api key sk-…"). The body reaches the client's
/// 502 message, the usage row and the /usage page: the key is scrubbed from all three.
async fn an_upstream_that_echoes_its_key_in_an_error_never_shows_it_to_the_user(app: TestApp) {
    const KEY: &str = "sk-upstream-echoed-5f4e3d2c1b";
    let echo = |headers: axum::http::HeaderMap| async move {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = json!({"error": {"message": format!("Incorrect API key provided: {}", auth.trim_start_matches("Bearer "))}});
        (StatusCode::UNAUTHORIZED, axum::Json(body))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/v1/responses", axum::routing::post(echo));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let admin = app.admin_token().await;
    let upstream = json!({"name": "echo", "base_url": format!("http://{addr}/v1"), "api_key": KEY});
    assert_eq!(app.post("/api/admin/upstreams", &admin, upstream).await.status, StatusCode::CREATED);
    let (user_id, token) = app.register_and_login("echoed@example.com").await;
    app.fund(&admin, user_id, "5").await;
    let key = app.post("/api/user/keys", &token, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_string();

    let r = app.client.post(app.url("/v1/responses")).bearer_auth(&key).json(&json!({"model": "gpt-5", "input": "hi"}));
    let answer = TestApp::answer(r.send().await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Incorrect API key provided: [redacted]"), "the reason stays readable: {message}");
    assert!(!answer.text.contains(KEY), "{}", answer.text);
    app.wait_until_settled().await;
    let usage = app.get("/api/user/usage", &token).await;
    assert!(usage.text.contains("[redacted]") && !usage.text.contains(KEY), "{}", usage.text);
    let page = app.client.get(app.url("/usage")).header(COOKIE, format!("cg_session={token}"));
    let page = TestApp::answer(page.send().await.unwrap()).await;
    assert!(page.text.contains("[redacted]") && !page.text.contains(KEY), "{}", page.text);
}
