//! The hardening of issue 16 over HTTP: the self-only Content-Security-Policy and the pages
//! that obey it (no inline script, style or event handler anywhere).

use std::collections::HashMap;

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(every_answer_carries_a_self_only_csp_and_no_page_needs_inline_code,);

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

/// The headers every answer carries, on pages, the JSON API, /v1 and errors alike.
fn assert_hardened(answer: &Answer, what: &str) {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(header("content-security-policy"), codex_gateway::routes::CONTENT_SECURITY_POLICY, "{what}");
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
