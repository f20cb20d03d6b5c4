//! Access control over the whole route table, read from the router source (so a new
//! admin route is covered the day it is added), IDOR probes between two users, and
//! revoked keys / suspended users / expired sessions refused at once.

use std::path::Path;

use chrono::Duration;
use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{report, TestApp};
use crate::on_both_databases;
use crate::proxy::setup;

on_both_databases!(
    every_admin_route_refuses_a_user_token_and_an_anonymous_caller,
    no_user_can_read_or_touch_another_users_orders_keys_usage_or_packages,
    revoked_keys_suspended_users_and_expired_sessions_are_refused_at_once,
);

/// `(method, path)` of every `.route("...", ...)` registration under `src/`.
pub fn route_table() -> Vec<(Method, String)> {
    let mut files = Vec::new();
    collect_rs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut routes = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        // The mock upstream is a separate server, not part of the gateway's router.
        if file.ends_with("proxy/mock.rs") {
            continue;
        }
        for (i, _) in source.match_indices(".route(") {
            let rest = &source[i + ".route(".len()..];
            let rest = rest.trim_start();
            let Some(rest) = rest.strip_prefix('"') else { continue };
            let path = &rest[..rest.find('"').unwrap()];
            // The handler chain runs until the parenthesis closing `.route(`.
            let after = &rest[path.len() + 1..];
            let mut depth = 1;
            let mut end = after.len();
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let chain = &after[..end];
            for (name, method) in [
                ("get", Method::GET),
                ("post", Method::POST),
                ("put", Method::PUT),
                ("patch", Method::PATCH),
                ("delete", Method::DELETE),
            ] {
                let called = chain.match_indices(&format!("{name}(")).any(|(k, _)| {
                    k == 0 || !chain.as_bytes()[k - 1].is_ascii_alphanumeric() && chain.as_bytes()[k - 1] != b'_'
                });
                if called {
                    routes.push((method, path.to_string()));
                }
            }
        }
    }
    routes.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    routes.dedup();
    routes
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A concrete URL for a route pattern: every `{param}` becomes a plausible value.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap();
        let name = &rest[start + 1..end];
        out.push_str(match name {
            "model" => "gpt-5",
            "out_trade_no" | "trade_no" => "T20260115000000000001",
            _ => "1",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn every_admin_route_refuses_a_user_token_and_an_anonymous_caller(app: TestApp) {
    let routes = route_table();
    let admin_routes: Vec<_> = routes.iter().filter(|(_, p)| p.starts_with("/api/admin")).collect();
    let user_routes: Vec<_> = routes.iter().filter(|(_, p)| p.starts_with("/api/user")).collect();
    // The scan must see the router: a broken scan would pass vacuously.
    assert!(admin_routes.len() >= 25, "only {} admin routes found: {admin_routes:?}", admin_routes.len());
    assert!(user_routes.len() >= 10, "only {} user routes found: {user_routes:?}", user_routes.len());
    assert!(admin_routes.iter().any(|(m, p)| *m == Method::PUT && p == "/api/admin/settings"));

    let _admin = app.admin_token().await;
    let (_, user) = app.register_and_login("mallory@example.com").await;
    let mut probes = 0u64;
    for (method, pattern) in &admin_routes {
        let path = concrete(pattern);
        for (token, expected) in [(Some(user.as_str()), StatusCode::FORBIDDEN), (None, StatusCode::UNAUTHORIZED)] {
            let body = (*method != Method::GET).then(|| json!({}));
            let r = app.send(method.clone(), &path, token, body).await;
            probes += 1;
            assert_eq!(r.status, expected, "{method} {path} with {token:?}: {}", r.text);
        }
    }
    for (method, pattern) in &user_routes {
        let path = concrete(pattern);
        let body = (*method != Method::GET).then(|| json!({}));
        let r = app.send(method.clone(), &path, None, body).await;
        probes += 1;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} anonymous: {}", r.text);
        let forged = app.send(method.clone(), &path, Some("not-a-session-token"), Some(json!({}))).await;
        probes += 1;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{method} {path} forged token: {}", forged.text);
    }
    app.assert_all_invariants().await;
    report(
        "access_route_table",
        app.backend,
        &[("admin_routes", admin_routes.len() as u64), ("user_routes", user_routes.len() as u64), ("requests", probes)],
        0,
    );
}

async fn no_user_can_read_or_touch_another_users_orders_keys_usage_or_packages(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("20.00")).await;
    // The victim: an order, a key, a usage row, a package.
    let r = app
        .client
        .post(app.url("/v1/responses"))
        .bearer_auth(&s.key)
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();
    app.wait_until_settled().await;
    let package_id = app
        .create_package(&s.admin, json!({"name": "P", "price": "1.00", "duration_days": 30, "daily_limit": 1}))
        .await;
    let grant = app
        .post(&format!("/api/admin/users/{}/packages", s.user_id), &s.admin, json!({"package_id": package_id}))
        .await;
    assert!(grant.status.is_success(), "{}", grant.text);
    let bought =
        app.post(&format!("/api/packages/{package_id}/purchase"), &s.user_token, json!({"pay_with": "balance"})).await;
    assert!(bought.status.is_success(), "{}", bought.text);
    let otn = bought.body["order"]["out_trade_no"].as_str().unwrap().to_string();

    let (attacker_id, attacker) = app.register_and_login("mallory@example.com").await;
    let mut probes = 0u64;
    let order = app.get(&format!("/api/user/orders/{otn}"), &attacker).await;
    assert_eq!(order.status, StatusCode::NOT_FOUND, "{}", order.text);
    assert_eq!(app.get(&format!("/api/user/orders/{otn}"), &s.user_token).await.status, StatusCode::OK);
    probes += 2;
    let key_id = s.key_id;
    let patch =
        app.patch(&format!("/api/user/keys/{key_id}"), &attacker, json!({"name": "pwned", "enabled": false})).await;
    assert_eq!(patch.status, StatusCode::NOT_FOUND, "{}", patch.text);
    let delete = app.delete(&format!("/api/user/keys/{key_id}"), &attacker).await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND, "{}", delete.text);
    probes += 2;
    // Listings never show another user's rows, whatever filter is smuggled in.
    let victim = s.user_id;
    for path in [
        format!("/api/user/orders?user_id={victim}"),
        format!("/api/user/usage?user_id={victim}"),
        format!("/api/user/usage?api_key_id={key_id}"),
        format!("/api/user/ledger?user_id={victim}"),
        format!("/api/user/packages?user_id={victim}"),
        format!("/api/user/keys?user_id={victim}"),
    ] {
        let r = app.get(&path, &attacker).await;
        probes += 1;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        let items = r.body["items"].as_array().or_else(|| r.body.as_array()).cloned().unwrap_or_default();
        assert!(items.is_empty(), "{path} leaked {items:?}");
        assert!(!r.text.contains(&otn) && !r.text.contains("coder@example.com"), "{path} leaked: {}", r.text);
    }
    let me = app.get("/api/user/daily-usage", &attacker).await;
    assert_eq!(me.body["balance"], "0.00", "{}", me.text);
    // The victim's key still works and is unchanged.
    let keys = app.get("/api/user/keys", &s.user_token).await;
    let text = keys.text.clone();
    assert!(text.contains("\"cli\"") && !text.contains("pwned"), "{text}");
    assert_ne!(attacker_id, victim);
    app.assert_all_invariants().await;
    report("access_idor", app.backend, &[("requests", probes)], 0);
}

async fn revoked_keys_suspended_users_and_expired_sessions_are_refused_at_once(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("20.00")).await;
    let call = |key: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/responses"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-5", "input": "hi"}))
                .send()
                .await
                .unwrap()
        }
    };
    let ok = call(s.key.clone()).await;
    assert_eq!(ok.status(), StatusCode::OK);
    ok.bytes().await.unwrap();
    // Suspension: the next request of the key and the session are refused.
    let suspend = app.patch(&format!("/api/admin/users/{}", s.user_id), &s.admin, json!({"status": "suspended"})).await;
    assert_eq!(suspend.status, StatusCode::OK, "{}", suspend.text);
    assert_eq!(call(s.key.clone()).await.status(), StatusCode::FORBIDDEN);
    let me = app.get("/api/user/me", &s.user_token).await.status;
    assert!(me == StatusCode::FORBIDDEN || me == StatusCode::UNAUTHORIZED, "{me}");
    let back = app.patch(&format!("/api/admin/users/{}", s.user_id), &s.admin, json!({"status": "active"})).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text);
    let again = call(s.key.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    again.bytes().await.unwrap();
    // Suspension ended the old sessions for good; a fresh sign-in works.
    assert_eq!(app.get("/api/user/me", &s.user_token).await.status, StatusCode::UNAUTHORIZED);
    let token = app.login("coder@example.com", "password123").await;
    // Revocation: refused on the very next request.
    let revoke = app.delete(&format!("/api/user/keys/{}", s.key_id), &token).await;
    assert!(revoke.status.is_success(), "{}", revoke.text);
    let revoked = call(s.key.clone()).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = revoked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "api_key_revoked");
    // Expiry: a session past its lifetime is refused, without any sweep having run.
    assert_eq!(app.get("/api/user/me", &token).await.status, StatusCode::OK);
    app.clock.advance(Duration::days(31));
    assert_eq!(app.get("/api/user/me", &token).await.status, StatusCode::UNAUTHORIZED);
    // Logout ends the session at once.
    app.clock.advance(Duration::days(-31));
    let token = app.login("coder@example.com", "password123").await;
    assert_eq!(app.get("/api/user/me", &token).await.status, StatusCode::OK);
    app.post("/api/auth/logout", &token, json!({})).await;
    assert_eq!(app.get("/api/user/me", &token).await.status, StatusCode::UNAUTHORIZED);
    app.assert_all_invariants().await;
    report("access_revocation", app.backend, &[("requests", 10)], 0);
}
