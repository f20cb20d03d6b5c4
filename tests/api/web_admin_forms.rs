//! The admin forms over HTTP: every error at once, buttons that say what they do,
//! Credit refused when switched on without its merchant fields, and the sandbox's
//! gateway address offered when the sandbox is on.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::{on_both_databases, on_both_databases_with_sandbox};

async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

/// The settings form as the page sends it with the default settings, with `changes`.
fn settings_fields<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("max_keys_per_user", "5"),
        ("markup", "1"),
        ("package_switch_mode", "queue"),
        ("credit_gateway_url", "https://credit.linux.do/epay"),
        ("credit_pid", ""),
        ("credit_key", ""),
        ("credit_pay_type", "epay"),
        ("credit_order_ttl_minutes", "15"),
        ("credit_flavour", "linuxdo"),
        ("credit_topup_min", "1.00"),
        ("credit_topup_max", "1000.00"),
        ("credit_topup_rate", "1"),
    ];
    for (name, value) in changes {
        fields.retain(|(n, _)| n != name);
        fields.push((name, value));
    }
    fields
}

async fn the_pricing_form_says_what_it_saves_and_shows_every_error_at_once(app: TestApp) {
    let admin = app.admin_token().await;
    let shown = page(&app, "/admin/pricing", &admin).await;
    assert!(shown.text.contains("Save price") && !shown.text.contains("Save settings"));
    let r = form(&app, "/admin/pricing", &admin, &[("model", ""), ("input", "x"), ("output", "-1")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["model", "input", "output"] {
        assert!(r.text.contains(&format!("id=\"{field}-error\"")), "{field} shows its error: {}", r.text);
    }
    let r = form(&app, "/admin/pricing", &admin, &[("model", "m"), ("input", "1"), ("output", "-1")]).await;
    assert!(r.text.contains("id=\"output-error\"") && !r.text.contains("id=\"input-error\""));
    assert_eq!(app.get("/api/admin/prices/m", &admin).await.status, StatusCode::NOT_FOUND, "nothing saved");
}

async fn settings_show_every_error_and_refuse_credit_switched_on_without_pid_or_key(app: TestApp) {
    let admin = app.admin_token().await;
    let wrong = settings_fields(&[("markup", "lots"), ("max_keys_per_user", "many"), ("credit_topup_rate", "x")]);
    let r = form(&app, "/admin/settings", &admin, &wrong).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["markup", "max_keys_per_user", "credit.topup_rate"] {
        assert!(r.text.contains(&format!("id=\"{field}-error\"")), "{field} shows its error");
    }

    let r = form(&app, "/admin/settings", &admin, &settings_fields(&[("credit_enabled", "on")])).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!r.text.contains("id=\"saved\""), "not \"Settings saved\"");
    assert!(r.text.contains("id=\"credit.pid-error\"") && r.text.contains("id=\"credit.key-error\""), "{}", r.text);
    assert!(r.text.contains("Is required to switch payments on"));
    assert!(!app.state.settings.get().await.unwrap().credit.enabled);
    let api = app.put("/api/admin/settings", &admin, json!({"credit": {"enabled": true}})).await;
    assert_eq!(api.status, StatusCode::UNPROCESSABLE_ENTITY, "the API keeps the same rule");
    assert_eq!(api.body["error"]["field"], "credit.pid", "{}", api.text);

    let ready = settings_fields(&[("credit_enabled", "on"), ("credit_pid", "1001"), ("credit_key", "merchant-key")]);
    let r = form(&app, "/admin/settings", &admin, &ready).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("id=\"saved\"") && !r.text.contains("merchant-key"));
    assert!(app.state.settings.get().await.unwrap().credit.is_usable());
    assert!(!r.text.contains("id=\"sandbox-gateway\""), "no sandbox, no sandbox address");
}

async fn with_the_sandbox_on_the_gateway_url_field_offers_its_address(app: TestApp) {
    let admin = app.admin_token().await;
    let shown = page(&app, "/admin/settings", &admin).await;
    let sandbox = app.state.config.public_url.trim_end_matches('/').to_string() + "/sandbox/epay";
    assert!(shown.text.contains("id=\"sandbox-gateway\"") && shown.text.contains("list=\"gateway-urls\""));
    assert!(shown.text.contains(&format!("<option value=\"{sandbox}\">")), "{}", shown.text);
}

on_both_databases!(
    the_pricing_form_says_what_it_saves_and_shows_every_error_at_once,
    settings_show_every_error_and_refuse_credit_switched_on_without_pid_or_key,
);
on_both_databases_with_sandbox!(with_the_sandbox_on_the_gateway_url_field_offers_its_address);
