//! The web pages over plain HTTP: access rules, CSRF, escaping, languages, forms.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;

/// A page request with an optional session cookie and language header.
async fn page(app: &TestApp, path: &str, session: Option<&str>, lang: Option<&str>) -> Answer {
    let mut req = app.client.get(app.url(path));
    if let Some(token) = session {
        req = req.header(COOKIE, format!("cg_session={token}"));
    }
    if let Some(lang) = lang {
        req = req.header(ACCEPT_LANGUAGE, lang);
    }
    TestApp::answer(req.send().await.unwrap()).await
}

/// A form post with the given cookie header and fields.
async fn form(app: &TestApp, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Answer {
    let req = app.client.post(app.url(path)).header(COOKIE, cookie).form(fields);
    TestApp::answer(req.send().await.unwrap()).await
}

fn csrf_for(app: &TestApp, session: &str) -> String {
    csrf_token(app.state.config.secret_bytes(), session)
}

fn set_cookie(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn hidden_csrf(html: &str) -> String {
    let start = html.find("name=\"_csrf\" value=\"").expect("the page has a CSRF field") + 20;
    html[start..].split('"').next().unwrap().to_string()
}

async fn guests_are_sent_to_login_from_every_signed_in_page(app: TestApp) {
    for path in ["/dashboard", "/keys", "/account", "/admin", "/admin/users", "/admin/settings"] {
        let r = page(&app, path, None, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        let location = r.headers[LOCATION].to_str().unwrap();
        assert!(location.starts_with("/login?next="), "{path} -> {location}");
    }
    let r = page(&app, "/keys", Some("cgs_not-a-real-session"), None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "an unknown session is a guest");
}

async fn users_get_a_403_page_on_admin_pages_and_admins_get_them(app: TestApp) {
    let (_, user) = app.register_and_login("user@example.com").await;
    for path in ["/admin", "/admin/users", "/admin/settings"] {
        let r = page(&app, path, Some(&user), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.text.contains("administrators only"), "{path}: {}", r.text);
    }
    let admin = app.admin_token().await;
    for path in ["/admin", "/admin/users", "/admin/settings"] {
        assert_eq!(page(&app, path, Some(&admin), None).await.status, StatusCode::OK, "{path}");
    }
    let r = page(&app, "/admin/users?q=user%40", Some(&admin), None).await;
    assert!(r.text.contains("user@example.com"));
}

async fn form_posts_without_the_right_csrf_token_are_refused(app: TestApp) {
    let (_, user) = app.register_and_login("user@example.com").await;
    let cookie = format!("cg_session={user}");
    let r = form(&app, "/keys", &cookie, &[("name", "no token")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = form(&app, "/keys", &cookie, &[("name", "wrong token"), ("_csrf", "00ff")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another session's token does not fit this session.
    let other = app.login("user@example.com", "password123").await;
    let r = form(&app, "/keys", &cookie, &[("name", "other token"), ("_csrf", &csrf_for(&app, &other))]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let keys = app.get("/api/user/keys", &user).await;
    assert_eq!(keys.body["items"].as_array().unwrap().len(), 0, "no refused post created a key");

    let r = form(&app, "/keys", &cookie, &[("name", "good"), ("_csrf", &csrf_for(&app, &user))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("id=\"secret-value\">sk-"));
    // htmx sends the token as a header instead of a field.
    let id = app.get("/api/user/keys", &user).await.body["items"][0]["id"].as_i64().unwrap();
    let req = app
        .client
        .post(app.url(&format!("/keys/{id}/revoke")))
        .header(COOKIE, &cookie)
        .header("hx-request", "true")
        .header("x-csrf-token", csrf_for(&app, &user));
    let r = TestApp::answer(req.send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.starts_with("<tr id=\"key-"), "htmx gets the row: {}", r.text);
    assert_eq!(app.get("/api/user/keys", &user).await.body["items"][0]["status"], "revoked");

    // Forms before sign-in are bound to the pre-session cookie.
    let r = form(&app, "/login", "", &[("email", "user@example.com"), ("password", "password123")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn logging_in_through_the_form_sets_the_session_cookie(app: TestApp) {
    app.register_and_login("user@example.com").await;
    let login = page(&app, "/login?next=/keys", None, None).await;
    let pre = set_cookie(&login, "cg_pre").expect("the login page sets the pre-session cookie");
    let csrf = hidden_csrf(&login.text);
    let cookie = format!("cg_pre={pre}");
    let wrong = [("email", "user@example.com"), ("password", "nope-nope"), ("_csrf", &csrf), ("next", "/keys")];
    let r = form(&app, "/login", &cookie, &wrong).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("Wrong email or password"));
    let right = [("email", "user@example.com"), ("password", "password123"), ("_csrf", &csrf), ("next", "/keys")];
    let r = form(&app, "/login", &cookie, &right).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[LOCATION], "/keys");
    let session = set_cookie(&r, "cg_session").unwrap();
    assert_eq!(page(&app, "/keys", Some(&session), None).await.status, StatusCode::OK);
    // An outside `next` is ignored.
    let evil =
        [("email", "user@example.com"), ("password", "password123"), ("_csrf", &csrf), ("next", "//evil.example")];
    let r = form(&app, "/login", &cookie, &evil).await;
    assert_eq!(r.headers[LOCATION], "/dashboard");
    // Logging out ends the session.
    let r = form(&app, "/logout", &format!("cg_session={session}"), &[("_csrf", &csrf_for(&app, &session))]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(page(&app, "/keys", Some(&session), None).await.status, StatusCode::SEE_OTHER);
}

async fn user_supplied_text_is_escaped(app: TestApp) {
    let (_, user) = app.register_and_login("user@example.com").await;
    let cookie = format!("cg_session={user}");
    let name = "<script>alert(1)</script>";
    let r = form(&app, "/keys", &cookie, &[("name", name), ("_csrf", &csrf_for(&app, &user))]).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = page(&app, "/keys", Some(&user), None).await;
    assert!(keys.text.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", keys.text);
    assert!(!keys.text.contains(name));
    let admin = app.admin_token().await;
    let r = page(&app, "/admin/users?q=%3Cscript%3E", Some(&admin), None).await;
    assert!(r.text.contains("value=\"&#60;script&#62;\""));
    assert!(!r.text.contains("<script>\""));
}

async fn pages_render_in_both_languages(app: TestApp) {
    let zh = page(&app, "/login", None, Some("zh-CN,zh;q=0.9,en;q=0.5")).await;
    assert!(zh.text.contains("<html lang=\"zh-CN\">"));
    assert!(zh.text.contains("欢迎回来"));
    let en = page(&app, "/login", None, Some("en-US,en;q=0.9")).await;
    assert!(en.text.contains("<html lang=\"en\">"));
    assert!(en.text.contains("Welcome back"));
    // The switch stores a cookie that wins over the header.
    let r = page(&app, "/lang/zh?next=/login", None, None).await;
    assert_eq!(r.headers[LOCATION], "/login");
    assert_eq!(set_cookie(&r, "cg_lang").as_deref(), Some("zh"));
    let req = app.client.get(app.url("/login")).header(COOKIE, "cg_lang=zh").header(ACCEPT_LANGUAGE, "en");
    let r = TestApp::answer(req.send().await.unwrap()).await;
    assert!(r.text.contains("欢迎回来"));
    let (_, user) = app.register_and_login("user@example.com").await;
    for path in ["/dashboard", "/keys", "/account"] {
        let r = page(&app, path, Some(&user), Some("zh-CN")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text.contains("退出登录"), "{path} is in Chinese");
        assert!(!r.text.contains(">?<"), "{path} has no missing translation");
    }
    let missing = page(&app, "/no-such-page", None, Some("zh-CN")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text.contains("页面不存在"));
}

async fn the_settings_form_saves_and_shows_field_errors(app: TestApp) {
    let admin = app.admin_token().await;
    let cookie = format!("cg_session={admin}");
    let csrf = csrf_for(&app, &admin);
    let mut fields = vec![
        ("_csrf", csrf.as_str()),
        ("max_keys_per_user", "5"),
        ("markup", "abc"),
        ("default_daily_cap", ""),
        ("package_switch_mode", "queue"),
        ("credit_gateway_url", "https://credit.linux.do/epay"),
        ("credit_pid", "1001"),
        ("credit_key", "k3y"),
        ("credit_pay_type", "epay"),
        ("credit_order_ttl_minutes", "15"),
        ("credit_flavour", "linuxdo"),
        ("credit_topup_min", "1.00"),
        ("credit_topup_max", "100.00"),
        ("credit_topup_rate", "1"),
    ];
    let r = form(&app, "/admin/settings", &cookie, &fields).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"markup-error\""));
    assert_eq!(app.state.settings.get().await.unwrap().max_keys_per_user, 20, "nothing saved");
    fields[2] = ("markup", "1.10");
    let r = form(&app, "/admin/settings", &cookie, &fields).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("k3y"), "the merchant key is never shown");
    let settings = app.get("/api/admin/settings", &admin).await.body;
    assert_eq!(settings["max_keys_per_user"], 5);
    assert_eq!(settings["markup"], "1.10");
    assert_eq!(settings["registration_enabled"], false, "an unticked box turns registration off");
    assert_eq!(settings["credit"]["key_set"], true);
    let r = page(&app, "/register", None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("id=\"registration-closed\""));
}

async fn admins_adjust_balances_and_suspend_users_from_the_user_page(app: TestApp) {
    let (id, user) = app.register_and_login("user@example.com").await;
    let admin = app.admin_token().await;
    let cookie = format!("cg_session={admin}");
    let csrf = csrf_for(&app, &admin);
    let path = format!("/admin/users/{id}/balance");
    let r = form(&app, &path, &cookie, &[("_csrf", &csrf), ("amount", "12.50"), ("reason", "")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"reason-error\""));
    let r = form(&app, &path, &cookie, &[("_csrf", &csrf), ("amount", "12.50"), ("reason", "welcome")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("12.50 USD"));
    assert_eq!(app.get("/api/user/me", &user).await.body["balance"], "12.50");
    let r = form(&app, &path, &cookie, &[("_csrf", &csrf), ("amount", "-20"), ("reason", "too much")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("The balance is too low"));
    app.assert_money_invariants().await;

    let status = format!("/admin/users/{id}/status");
    let r = form(&app, &status, &cookie, &[("_csrf", &csrf), ("status", "suspended")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(page(&app, "/dashboard", Some(&user), None).await.status, StatusCode::SEE_OTHER, "sessions ended");
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE target = $1")
        .bind(format!("user:{id}"))
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audit, 2, "the adjustment and the suspension are audited");
}

async fn static_assets_are_served_with_long_cache_lifetimes(app: TestApp) {
    for (file, kind) in [("app.css", "text/css"), ("htmx.min.js", "text/javascript"), ("app.js", "text/javascript")] {
        let r = page(&app, &format!("/static/{file}"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{file}");
        assert!(r.headers["content-type"].to_str().unwrap().starts_with(kind));
        assert!(r.headers["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    }
    assert_eq!(page(&app, "/static/nope.js", None, None).await.status, StatusCode::NOT_FOUND);
}

on_both_databases!(
    guests_are_sent_to_login_from_every_signed_in_page,
    users_get_a_403_page_on_admin_pages_and_admins_get_them,
    form_posts_without_the_right_csrf_token_are_refused,
    logging_in_through_the_form_sets_the_session_cookie,
    user_supplied_text_is_escaped,
    pages_render_in_both_languages,
    the_settings_form_saves_and_shows_field_errors,
    admins_adjust_balances_and_suspend_users_from_the_user_page,
    static_assets_are_served_with_long_cache_lifetimes,
);
