//! The hardening of issue 16 over HTTP: the self-only Content-Security-Policy and the pages
//! that obey it (no inline script, style or event handler anywhere); admin JSON bodies that
//! refuse unknown fields.

use std::collections::HashMap;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    every_answer_carries_a_self_only_csp_and_no_page_needs_inline_code,
    admin_bodies_with_an_unknown_field_are_refused_naming_it,
    cookies_are_not_marked_secure_on_a_plain_http_public_url,
    a_refund_whose_answer_was_lost_is_settled_by_asking_the_gateway_once,
);

/// Each scenario on both databases, with an https public URL (as behind TLS in production).
macro_rules! on_both_databases_over_https {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                const HTTPS: &[(&str, &str)] = &[("GATEWAY_PUBLIC_URL", "https://gateway.example")];
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, HTTPS).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, HTTPS).await).await
                }
            }
        )*
    };
}

on_both_databases_over_https!(every_cookie_is_secure_on_an_https_public_url);

async fn page(app: &TestApp, path: &str, session: Option<&str>) -> Answer {
    let mut req = app.client.get(app.url(path));
    if let Some(token) = session {
        req = req.header(COOKIE, format!("cg_session={token}"));
    }
    TestApp::answer(req.send().await.unwrap()).await
}

/// What a self-only CSP would block in a page: inline `<script>` bodies, `style=` attributes,
/// `<style>` blocks and `on…=` event handler attributes. Returns the offending snippets.
fn inline_code(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let snippet = |at: usize| html[at..].chars().take(80).collect::<String>();
    for (at, _) in lower.match_indices("<script") {
        let tag_end = lower[at..].find('>').map(|e| at + e).unwrap_or(lower.len());
        if !lower[at..tag_end].contains(" src=") {
            found.push(snippet(at));
        }
    }
    for needle in ["<style", " style="] {
        found.extend(lower.match_indices(needle).map(|(at, _)| snippet(at)));
    }
    // ` onclick=`, ` onsubmit=` …: a space, "on", letters, "=".
    let bytes = lower.as_bytes();
    for (at, _) in lower.match_indices(" on") {
        let rest = &bytes[at + 3..];
        let letters = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
        if letters > 0 && rest.get(letters) == Some(&b'=') {
            found.push(snippet(at));
        }
    }
    found
}

#[test]
fn the_inline_code_finder_finds_what_the_csp_blocks() {
    assert!(inline_code(r#"<script src="/static/app.js" defer></script><p class="x">on=1</p>"#).is_empty());
    assert_eq!(inline_code(r#"<script>alert(1)</script>"#).len(), 1);
    assert_eq!(inline_code(r#"<p style="color:red">"#).len(), 1);
    assert_eq!(inline_code(r#"<style>p{}</style>"#).len(), 1);
    assert_eq!(inline_code(r#"<form onsubmit="return confirm(1)">"#).len(), 1);
}

/// Every template, partials and htmx fragments included, is free of inline code (pages the
/// HTTP scenario does not visit too). SVG presentation attributes (`fill=`) are not styles.
#[test]
fn no_template_carries_inline_script_style_or_handlers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("html") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let inline = inline_code(&text);
        assert!(inline.is_empty(), "{}: {inline:?}", path.display());
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} templates found in {}", dir.display());
}

/// The headers every answer carries, on pages, the JSON API, /v1 and errors alike.
fn assert_hardened(answer: &Answer, what: &str) {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(header("content-security-policy"), codex_gateway::surface::routes::CONTENT_SECURITY_POLICY, "{what}");
    let csp = header("content-security-policy");
    for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{what}: {csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "strict-origin-when-cross-origin", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
}

async fn every_answer_carries_a_self_only_csp_and_no_page_needs_inline_code(app: TestApp) {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let (_, user) = app.register_and_login("csp@example.com").await;
    let package = app
        .create_package(&admin, json!({"name": "CSP Pro", "price": "9.90", "duration_days": 30, "daily_limit": 5}))
        .await;
    let bought = app.post(&format!("/api/packages/{package}/purchase"), &user, json!({"pay_with": "credit"})).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
    let otn = bought.body["order"]["out_trade_no"].as_str().unwrap().to_string();

    let guest_pages = ["/login", "/register"];
    let user_pages = ["/dashboard", "/packages", "/account", "/keys", "/orders", "/usage"];
    let admin_pages = [
        "/admin",
        "/admin/settings",
        "/admin/users",
        "/admin/upstreams",
        "/admin/packages",
        "/admin/coupons",
        "/admin/codes",
        "/admin/orders",
        "/admin/pricing",
        "/admin/announcements",
        "/admin/audit",
        "/admin/usage",
        "/admin/metrics",
    ];
    let mut pages: Vec<(String, Option<&str>)> = guest_pages.iter().map(|p| (p.to_string(), None)).collect();
    pages.extend(user_pages.iter().map(|p| (p.to_string(), Some(user.as_str()))));
    pages.extend(admin_pages.iter().map(|p| (p.to_string(), Some(admin.as_str()))));
    pages.push((format!("/pay/{otn}"), None));
    for (path, session) in &pages {
        let answer = page(&app, path, *session).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        assert_hardened(&answer, path);
        let inline = inline_code(&answer.text);
        assert!(inline.is_empty(), "{path} has inline code a self-only CSP blocks: {inline:?}");
    }

    // The payment page still submits itself, now from the static script, with a button as fallback.
    let pay = page(&app, &format!("/pay/{otn}"), None).await;
    assert!(pay.text.contains("data-autosubmit"), "{}", pay.text);
    let script = page(&app, "/static/app.js", None).await;
    assert!(script.text.contains("form[data-autosubmit]") && script.text.contains("data-confirm"));

    // The sandbox cashier the payment page leads to obeys the same policy.
    let params: HashMap<String, String> = serde_json::from_value(bought.body["gateway"]["params"].clone()).unwrap();
    let submitted =
        app.client.post(bought.body["gateway"]["url"].as_str().unwrap()).form(&params).send().await.unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let cashier_path = submitted.headers()["location"].to_str().unwrap().to_string();
    let cashier = app.client.get(app.url(&cashier_path)).send().await.unwrap();
    let cashier = TestApp::answer(cashier).await;
    assert_hardened(&cashier, "sandbox cashier");
    assert!(inline_code(&cashier.text).is_empty(), "{}", cashier.text);

    // JSON, /v1, errors and static files carry the headers too.
    for (path, token) in
        [("/api/user/me", Some(user.as_str())), ("/api/nowhere", None), ("/v1/models", None), ("/healthz", None)]
    {
        let answer = page(&app, path, token).await;
        assert_hardened(&answer, path);
    }
    assert_hardened(&page(&app, "/static/app.css", None).await, "/static/app.css");
}

async fn admin_bodies_with_an_unknown_field_are_refused_naming_it(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, _) = app.register_and_login("typo@example.com").await;
    let package = app
        .create_package(&admin, json!({"name": "Typo", "price": "5.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    let before = app.get(&format!("/api/admin/packages/{package}"), &admin).await.text;
    let settings_before = app.get("/api/admin/settings", &admin).await.body;
    let users = format!("/api/admin/users/{user_id}");
    let cases = [
        (
            "POST",
            "/api/admin/packages".to_string(),
            json!({"name": "P", "price": "1.00", "duration_days": 1, "daily_limt": 5}),
            "daily_limt",
        ),
        (
            "PUT",
            format!("/api/admin/packages/{package}"),
            json!({"price": "1.00", "fivehour_limit": "2"}),
            "fivehour_limit",
        ),
        ("PUT", "/api/admin/settings".to_string(), json!({"markup": "2.00", "markupp": "3"}), "markupp"),
        (
            "PUT",
            "/api/admin/settings".to_string(),
            json!({"credit": {"gateway_ulr": "https://pay.example/"}}),
            "credit.gateway_ulr",
        ),
        (
            "POST",
            "/api/admin/upstreams".to_string(),
            json!({"name": "u", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x", "wieght": 2}),
            "wieght",
        ),
        (
            "POST",
            "/api/admin/coupons".to_string(),
            json!({"code": "TYPO", "percent_off": "10", "max_use": 1}),
            "max_use",
        ),
        (
            "POST",
            "/api/admin/redemption-codes".to_string(),
            json!({"count": 1, "amount": "1.00", "notes": "x"}),
            "notes",
        ),
        ("POST", "/api/admin/announcements".to_string(), json!({"title": "t", "body": "b", "enable": true}), "enable"),
        (
            "POST",
            "/api/admin/prices".to_string(),
            json!({"model": "m", "input": "1", "output": "2", "cached": "0.1"}),
            "cached",
        ),
        ("PATCH", users.clone(), json!({"status": "suspended", "daily_capp": "1.00"}), "daily_capp"),
        ("POST", format!("{users}/balance"), json!({"amount": "5.00", "reason": "r", "note": "x"}), "note"),
        ("POST", format!("{users}/packages"), json!({"package_id": package, "days": 90}), "days"),
    ];
    for (method, path, body, field) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app.send(method.clone(), &path, Some(&admin), Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", r.text);
        assert_eq!(r.error_code(), "unknown_field", "{method} {path}: {}", r.text);
        assert_eq!(r.body["error"]["field"], json!(field), "{method} {path}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(field), "{}", r.text);
    }
    // Nothing was created or changed by the refused bodies.
    assert_eq!(app.get(&format!("/api/admin/packages/{package}"), &admin).await.text, before);
    assert_eq!(app.get("/api/admin/settings", &admin).await.body, settings_before);
    assert_eq!(app.count("SELECT COUNT(*) FROM packages").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM upstreams").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM coupons").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM redemption_codes").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM announcements").await, 0);
    let me = app.get(&users, &admin).await;
    assert_eq!(me.body["status"], json!("active"), "{}", me.text);
    // The same bodies without the typo are accepted (the fields are real).
    let ok = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": "https://pay.example/"}})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let ok = app.put(&format!("/api/admin/packages/{package}"), &admin, json!({"five_hour_limit": "2"})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

/// The `Set-Cookie` headers of an answer.
fn set_cookies(answer: &Answer) -> Vec<String> {
    answer.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

fn cookie_named<'a>(cookies: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{name}=");
    cookies.iter().find(|c| c.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

fn is_secure(cookie: &str) -> bool {
    cookie.split(';').skip(1).any(|a| a.trim().eq_ignore_ascii_case("secure"))
}

async fn every_cookie_is_secure_on_an_https_public_url(app: TestApp) {
    app.register_and_login("tls@example.com").await;
    // The pre-session cookie of a guest page.
    let login = page(&app, "/login", None).await;
    let cookies = set_cookies(&login);
    let pre = cookie_named(&cookies, "cg_pre");
    assert!(is_secure(pre), "{pre}");
    let pre_value = pre.split(';').next().unwrap().to_string();
    // The language cookie.
    let lang = page(&app, "/lang/en?next=/login", None).await;
    let cookies = set_cookies(&lang);
    assert!(is_secure(cookie_named(&cookies, "cg_lang")), "{cookies:?}");
    // The session cookie from the login form, and the one logging out clears it with.
    let start = login.text.find("name=\"_csrf\" value=\"").unwrap() + 20;
    let csrf = login.text[start..].split('"').next().unwrap().to_string();
    let fields = [("email", "tls@example.com"), ("password", "password123"), ("_csrf", csrf.as_str())];
    let r = app.client.post(app.url("/login")).header(COOKIE, &pre_value).form(&fields).send().await.unwrap();
    let r = TestApp::answer(r).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let cookies = set_cookies(&r);
    let session = cookie_named(&cookies, "cg_session");
    assert!(is_secure(session), "{session}");
    let token = session.split(';').next().unwrap().trim_start_matches("cg_session=").to_string();
    let csrf = codex_gateway::domain::auth::extract::csrf_token(app.state.config.secret_bytes(), &token);
    let out = app.client.post(app.url("/logout")).header(COOKIE, format!("cg_session={token}"));
    let out = TestApp::answer(out.form(&[("_csrf", csrf.as_str())]).send().await.unwrap()).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    let cookies = set_cookies(&out);
    assert!(is_secure(cookie_named(&cookies, "cg_session")), "{cookies:?}");
    // No cookie of any answer goes without it (each attribute once).
    for answer in [&login, &lang, &r, &out] {
        for cookie in set_cookies(answer) {
            assert_eq!(cookie.to_ascii_lowercase().matches("secure").count(), 1, "{cookie}");
        }
    }
}

async fn cookies_are_not_marked_secure_on_a_plain_http_public_url(app: TestApp) {
    // A plain-http deployment (a local test instance) must still keep its cookies.
    let lang = page(&app, "/lang/en?next=/login", None).await;
    let cookies = set_cookies(&lang);
    assert!(!is_secure(cookie_named(&cookies, "cg_lang")), "{cookies:?}");
    let login = page(&app, "/login", None).await;
    let cookies = set_cookies(&login);
    assert!(!is_secure(cookie_named(&cookies, "cg_pre")), "{cookies:?}");
}

/// A payment gateway whose answers are lost: each request is passed on to the sandbox
/// (which acts on it: a refund is made) and the connection is then dropped unanswered, as
/// a timeout or a cut connection looks to the caller. Returns its base URL.
async fn gateway_losing_answers(app: &TestApp) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/epay", listener.local_addr().unwrap());
    let sandbox = app.url("/sandbox");
    let client = app.client.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head_end, length) = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                raw.extend_from_slice(&buf[..n]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0usize);
                    break (Some(end + 4), length);
                }
            };
            let Some(head_end) = head_end else { continue };
            while raw.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
            let mut line = head.lines().next().unwrap_or("").split(' ');
            let (method, target) = (line.next().unwrap_or("GET").to_string(), line.next().unwrap_or("/").to_string());
            let body = raw[head_end..].to_vec();
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let forwarded = client
                .request(method, format!("{sandbox}{target}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            // The gateway has acted; its answer never reaches the caller.
            drop(forwarded);
            let _ = socket.shutdown().await;
        }
    });
    base
}

/// A top-up paid at the sandbox cashier (so the sandbox holds the trade); its order number.
async fn top_up_through_the_sandbox(app: &TestApp, user: &str, amount: &str) -> String {
    let topup = app.post("/api/user/topup", user, json!({"amount": amount})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let params: HashMap<String, String> = serde_json::from_value(topup.body["gateway"]["params"].clone()).unwrap();
    let submitted = app.client.post(topup.body["gateway"]["url"].as_str().unwrap()).form(&params).send().await.unwrap();
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER);
    let trade_no = submitted.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
    let paid = app.client.post(app.url(&format!("/sandbox/epay/cashier/{trade_no}/pay"))).form(&[("notify", "yes")]);
    assert_eq!(paid.send().await.unwrap().status(), StatusCode::SEE_OTHER);
    otn
}

async fn order_status(app: &TestApp, otn: &str) -> String {
    codex_gateway::domain::orders::find(&app.db, otn).await.unwrap().unwrap().status
}

async fn a_refund_whose_answer_was_lost_is_settled_by_asking_the_gateway_once(app: TestApp) {
    use codex_gateway::domain::orders::refund::{
        reconcile_refunds_once, REFUND_CHECK_AFTER_MINUTES, REFUND_RESTORE_AFTER_MINUTES,
    };
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let sandbox_url = app.url("/sandbox/epay");
    let (user_id, user) = app.register_and_login("lost@example.com").await;
    let lost = top_up_through_the_sandbox(&app, &user, "5.00").await;
    let unsent = top_up_through_the_sandbox(&app, &user, "2.00").await;
    assert_eq!(app.balance(&user).await, "7.00");
    let refunds = format!("SELECT COUNT(*) FROM ledger_entries WHERE user_id = {user_id} AND kind = 'refund'");

    // The gateway refunds the first order, but its answer is lost.
    let losing = gateway_losing_answers(&app).await;
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": losing}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.post(&format!("/api/admin/orders/{lost}/refund"), &admin, json!({})).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_GATEWAY, "refund_unconfirmed"), "{}", r.text);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sandbox_trades WHERE status = 'refunded'").await,
        1,
        "the gateway refunded"
    );
    assert_eq!(order_status(&app, &lost).await, "refunding", "not put back to fulfilled: it may be refunded");
    assert_eq!(app.balance(&user).await, "7.00", "nothing reversed before the gateway confirms");
    let again = app.post(&format!("/api/admin/orders/{lost}/refund"), &admin, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "a second refund cannot start: {}", again.text);

    // The second order's refund never reaches the gateway at all (nothing listens).
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/epay", dead.local_addr().unwrap());
    drop(dead);
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": dead_url}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.post(&format!("/api/admin/orders/{unsent}/refund"), &admin, json!({})).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_GATEWAY, "refund_unconfirmed"), "{}", r.text);
    assert_eq!(order_status(&app, &unsent).await, "refunding");

    // A refund still in flight is left alone; once the gateway answers again, the job asks it.
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": sandbox_url}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(reconcile_refunds_once(app.state.env()).await.unwrap().checked, 0, "too recent to ask about");
    // An admin's re-check applies the same rule at once: the refunded one is reversed, the
    // one the gateway still reports paid (for minutes only) is left undecided, said plainly.
    let r = app.post(&format!("/api/admin/orders/{lost}/check"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["check"]["refund"].as_str(), r.body["order"]["status"].as_str()),
        (Some("reversed"), Some("refunded"))
    );
    let r = app.post(&format!("/api/admin/orders/{unsent}/check"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["check"]["refund"].as_str(), Some("undecided"), "{}", r.text);
    assert_eq!(order_status(&app, &unsent).await, "refunding");
    let again = app.post(&format!("/api/admin/orders/{lost}/check"), &admin, json!({})).await;
    assert!(again.body["check"]["refund"].is_null(), "a refunded order is checked as any other: {}", again.text);
    assert_eq!(app.count(&refunds).await, 1, "reversed once");
    app.clock.advance(chrono::Duration::minutes(REFUND_CHECK_AFTER_MINUTES + 1));
    let report = reconcile_refunds_once(app.state.env()).await.unwrap();
    assert_eq!((report.checked, report.refunded, report.restored, report.undecided), (1, 0, 0, 1), "{report:?}");
    assert_eq!(order_status(&app, &lost).await, "refunded");
    assert_eq!(order_status(&app, &unsent).await, "refunding", "a refund may show late: not believed yet");
    // Still reported paid long after: the gateway did not refund.
    app.clock.advance(chrono::Duration::minutes(REFUND_RESTORE_AFTER_MINUTES));
    let report = reconcile_refunds_once(app.state.env()).await.unwrap();
    assert_eq!((report.checked, report.refunded, report.restored, report.errors), (1, 0, 1, 0), "{report:?}");
    assert_eq!(order_status(&app, &unsent).await, "fulfilled", "the gateway still holds the payment");
    assert_eq!(app.balance(&user).await, "2.00", "the refunded 5.00 taken back once");
    assert_eq!(app.count(&refunds).await, 1);

    // Never twice: another pass finds nothing, and the restored order refunds normally.
    let report = reconcile_refunds_once(app.state.env()).await.unwrap();
    assert_eq!(report.checked, 0, "{report:?}");
    let r = app.post(&format!("/api/admin/orders/{unsent}/refund"), &admin, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.balance(&user).await, "0.00");
    assert_eq!(app.count(&refunds).await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_trades WHERE status = 'refunded'").await, 2);
    app.assert_money_invariants().await;
    let violations = crate::helpers::invariant_violations(&app.db).await.len();
    crate::helpers::report(
        "refund_answer_lost_reconciled",
        app.backend,
        &[("refunds", 3), ("faults", 2), ("reversed", 1), ("restored", 1), ("credited_twice", 0)],
        violations,
    );
}
