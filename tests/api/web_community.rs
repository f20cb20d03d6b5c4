//! The community admin pages over HTTP: coupons, redemption code batches, announcements,
//! the audit log and the LINUX DO settings (sales with a coupon: `web_community_sales`).

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::{ACCEPT_LANGUAGE, CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;

pub async fn page(app: &TestApp, path: &str, session: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}"));
    TestApp::answer(req.send().await.unwrap()).await
}

pub async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

const PAGES: &[&str] = &["/admin/coupons", "/admin/codes", "/admin/announcements", "/admin/audit"];

async fn the_community_pages_are_for_admins_only_and_their_forms_need_the_csrf_token(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("user@example.com").await;
    for path in PAGES {
        let r = page(&app, path, &admin).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        for entry in PAGES {
            assert!(r.text.contains(&format!("href=\"{entry}\"")), "{path} links to {entry} in the admin nav");
        }
        let zh = app
            .client
            .get(app.url(path))
            .header(COOKIE, format!("cg_session={admin}"))
            .header(ACCEPT_LANGUAGE, "zh-CN,zh;q=0.9")
            .send()
            .await
            .unwrap();
        let zh = TestApp::answer(zh).await;
        assert!(zh.text.contains("优惠券") && zh.text.contains("审计日志"), "{path} in Chinese");
        assert!(!zh.text.contains(">?<"), "{path}: no missing translation");
        assert_eq!(page(&app, path, &user).await.status, StatusCode::FORBIDDEN, "{path} for a user");
        let guest = TestApp::answer(app.client.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(guest.status, StatusCode::SEE_OTHER, "{path} for a guest");
        assert!(guest.headers[LOCATION].to_str().unwrap().starts_with("/login?next="));
    }
    for path in ["/admin/coupons", "/admin/codes", "/admin/announcements"] {
        let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={admin}")).form(&[
            ("code", "NOCSRF"),
            ("title", "x"),
            ("count", "1"),
        ]);
        let r = TestApp::answer(req.send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} without a CSRF token");
        let r = form(&app, path, &user, &[("code", "USER1"), ("title", "x"), ("count", "1")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} posted by a user");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM coupons").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM redemption_batches").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM announcements").await, 0);
}

fn coupon_fields<'a>(code: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("code", code),
        ("kind", "percent"),
        ("value", value),
        ("scope", "all"),
        ("valid_from", ""),
        ("valid_until", "2030-12-31"),
        ("max_uses", "10"),
        ("max_uses_per_user", "1"),
        ("enabled", "on"),
    ]
}

async fn admins_create_switch_and_delete_coupons_on_the_coupons_page(app: TestApp) {
    let admin = app.admin_token().await;
    let r = form(&app, "/admin/coupons", &admin, &coupon_fields("spring-20", "0")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"value-error\""), "a zero discount is refused next to its field");
    assert!(r.text.contains("value=\"spring-20\""), "the typed form comes back");
    let mut selected = coupon_fields("picky", "10");
    selected[3] = ("scope", "selected");
    let r = form(&app, "/admin/coupons", &admin, &selected).await;
    assert!(r.text.contains("id=\"package_ids-error\""), "selected packages need at least one package");
    let mut backwards = coupon_fields("late", "10");
    backwards[4] = ("valid_from", "2031-01-01");
    assert!(form(&app, "/admin/coupons", &admin, &backwards).await.text.contains("id=\"valid_until-error\""));

    let mut topups = coupon_fields("topup-only", "1.50");
    topups[1] = ("kind", "amount");
    topups[3] = ("scope", "none");
    topups.push(("topup", "on"));
    assert_eq!(form(&app, "/admin/coupons", &admin, &topups).await.status, StatusCode::SEE_OTHER);
    let stored = app.get("/api/admin/coupons", &admin).await.body["items"][0].clone();
    assert_eq!((stored["amount_off"].as_str(), stored["applies_to_topup"].as_bool()), (Some("1.50"), Some(true)));
    assert_eq!(stored["package_ids"], json!([]), "no packages: top-ups only");
    let topup_id = stored["id"].as_i64().unwrap();
    form(&app, &format!("/admin/coupons/{topup_id}/delete"), &admin, &[]).await;

    let r = form(&app, "/admin/coupons", &admin, &coupon_fields("spring-20", "20")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let list = page(&app, "/admin/coupons", &admin).await;
    assert!(list.text.contains("<code>SPRING-20</code>"), "codes are stored in upper case");
    assert!(list.text.contains("20%") && list.text.contains("0 / 10") && list.text.contains("→ 2030-12-31"));
    let r = form(&app, "/admin/coupons", &admin, &coupon_fields("Spring-20", "5")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"code-error\"") && r.text.contains("already exists"));

    let coupon = app.get("/api/admin/coupons", &admin).await.body["items"][0].clone();
    let id = coupon["id"].as_i64().unwrap();
    assert_eq!(coupon["percent_off"], "20.00");
    assert_eq!(coupon["max_uses_per_user"], 1);
    assert_eq!(coupon["valid_until"], "2031-01-01T00:00:00+08:00", "the until day is included");
    assert_eq!(form(&app, &format!("/admin/coupons/{id}/toggle"), &admin, &[]).await.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get("/api/admin/coupons", &admin).await.body["items"][0]["enabled"], false);
    form(&app, &format!("/admin/coupons/{id}/toggle"), &admin, &[]).await;
    assert_eq!(app.get("/api/admin/coupons", &admin).await.body["items"][0]["enabled"], true);
    // Editing shows the stored coupon and replaces its settings.
    let edit = page(&app, &format!("/admin/coupons/{id}"), &admin).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(edit.text.contains("value=\"SPRING-20\"") && edit.text.contains("value=\"2030-12-31\""));
    let mut changed = coupon_fields("SPRING-20", "25");
    changed[7] = ("max_uses_per_user", "0");
    let r = form(&app, &format!("/admin/coupons/{id}"), &admin, &changed).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"max_uses_per_user-error\""));
    changed[7] = ("max_uses_per_user", "");
    assert_eq!(form(&app, &format!("/admin/coupons/{id}"), &admin, &changed).await.status, StatusCode::SEE_OTHER);
    let coupon = app.get("/api/admin/coupons", &admin).await.body["items"][0].clone();
    assert_eq!((coupon["percent_off"].as_str(), coupon["max_uses_per_user"].as_i64()), (Some("25.00"), None));

    let r = form(&app, &format!("/admin/coupons/{id}/delete"), &admin, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("id=\"notice\"") && !r.text.contains("<code>SPRING-20</code>"));
    assert_eq!(form(&app, &format!("/admin/coupons/{id}/delete"), &admin, &[]).await.status, StatusCode::NOT_FOUND);
    let actions = app.get("/api/admin/audit?action=coupon.", &admin).await.body;
    let names: Vec<&str> = actions["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "coupon.delete",
            "coupon.update",
            "coupon.enable",
            "coupon.disable",
            "coupon.create",
            "coupon.delete",
            "coupon.create"
        ]
    );
}

async fn admins_generate_code_batches_see_their_use_and_export_them(app: TestApp) {
    let admin = app.admin_token().await;
    let fields = |count: &'static str, amount: &'static str| {
        vec![("worth", "amount"), ("amount", amount), ("package_id", ""), ("count", count), ("note", "forum prize")]
    };
    let r = form(&app, "/admin/codes", &admin, &fields("0", "5")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"count-error\""));
    let r = form(&app, "/admin/codes", &admin, &fields("3", "five")).await;
    assert!(r.text.contains("id=\"amount-error\""));
    let r = form(&app, "/admin/codes", &admin, &[("worth", "package"), ("package_id", ""), ("count", "1")]).await;
    assert!(r.text.contains("id=\"package_id-error\""), "a package batch needs a package");

    let r = form(&app, "/admin/codes", &admin, &fields("3", "5")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let shown = r.text.split("id=\"new-codes\">").nth(1).unwrap().split("</pre>").next().unwrap();
    let codes: Vec<&str> = shown.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(codes.len(), 3, "the new codes are shown once: {shown}");
    let (_, user) = app.register_and_login("user@example.com").await;
    let redeemed = form(&app, "/account/redeem", &user, &[("code", codes[1])]).await;
    assert!(redeemed.text.contains("id=\"redeemed\""));
    assert_eq!(app.balance(&user).await, "5.00");

    let list = page(&app, "/admin/codes", &admin).await;
    let row = list.text.split("<tbody>").nth(1).unwrap();
    assert!(row.contains("5.00 USD") && row.contains("forum prize") && row.contains("admin-"));
    assert!(row.contains("<td class=\"num\">3</td><td class=\"num\">1</td><td class=\"num\">2</td>"), "{row}");
    let batch = app.count("SELECT MAX(id) FROM redemption_batches").await;
    let csv = page(&app, &format!("/admin/codes/{batch}/export"), &admin).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    assert!(csv.headers[CONTENT_DISPOSITION].to_str().unwrap().contains("batch-"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three codes");
    assert!(lines[0].starts_with("code,batch_id,amount"));
    assert!(lines.iter().any(|l| l.starts_with(codes[1]) && l.contains("user@example.com")));
    assert_eq!(page(&app, &format!("/admin/codes/{batch}/export"), &user).await.status, StatusCode::FORBIDDEN);
    assert_eq!(page(&app, "/admin/codes/999/export", &admin).await.status, StatusCode::NOT_FOUND);
    let trail = app.get("/api/admin/audit?action=redemption.", &admin).await.body;
    let names: Vec<&str> = trail["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(names, ["redemption.export", "redemption.generate"]);

    // A batch worth a package (a private one, off sale, is allowed).
    let pkg = app
        .create_package(
            &admin,
            json!({"name": "Secret plan", "price": "10.00", "duration_days": 7, "daily_limit": "1"}),
        )
        .await;
    app.delete(&format!("/api/admin/packages/{pkg}"), &admin).await;
    let pkg = pkg.to_string();
    let fields = [("worth", "package"), ("amount", ""), ("package_id", pkg.as_str()), ("count", "2")];
    let r = form(&app, "/admin/codes", &admin, &fields).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Package: Secret plan"), "the batch list names the package");
    assert!(!trail.to_string().contains(codes[0]), "codes stay out of the audit trail");
}

async fn admins_write_edit_and_delete_announcements_that_the_dashboard_shows(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("user@example.com").await;
    let blank = [("title", " "), ("body", "text"), ("enabled", "on")];
    let r = form(&app, "/admin/announcements", &admin, &blank).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"title-error\""));
    let news = [
        ("title", "Maintenance"),
        ("body", "**Short** break <script>alert(1)</script>"),
        ("starts_on", ""),
        ("ends_on", ""),
        ("enabled", "on"),
    ];
    assert_eq!(form(&app, "/admin/announcements", &admin, &news).await.status, StatusCode::SEE_OTHER);
    let list = page(&app, "/admin/announcements", &admin).await;
    assert!(list.text.contains("<strong>Short</strong>") && !list.text.contains("<script>alert"));
    assert!(list.text.contains("badge ok"), "showing now");
    let dash = page(&app, "/dashboard", &user).await;
    assert!(dash.text.contains("Maintenance") && dash.text.contains("<strong>Short</strong>"));
    assert!(!dash.text.contains("<script>alert"), "markdown is sanitised");

    let id = app.count("SELECT MAX(id) FROM announcements").await;
    let edit = page(&app, &format!("/admin/announcements/{id}"), &admin).await;
    assert!(edit.text.contains("value=\"Maintenance\""));
    let later = [("title", "Maintenance"), ("body", "Moved"), ("starts_on", "2030-01-01"), ("ends_on", "2029-12-01")];
    let r = form(&app, &format!("/admin/announcements/{id}"), &admin, &later).await;
    assert!(r.text.contains("id=\"ends_on-error\""), "the end before the start is refused");
    let later = [("title", "Moved maintenance"), ("body", "Moved"), ("starts_on", "2030-01-01"), ("enabled", "on")];
    assert_eq!(form(&app, &format!("/admin/announcements/{id}"), &admin, &later).await.status, StatusCode::SEE_OTHER);
    assert!(page(&app, "/admin/announcements", &admin).await.text.contains("badge info"), "scheduled");
    assert!(!page(&app, "/dashboard", &user).await.text.contains("Moved maintenance"), "not yet shown");
    let r = form(&app, &format!("/admin/announcements/{id}/delete"), &admin, &[]).await;
    assert!(r.text.contains("id=\"notice\"") && !r.text.contains("Moved maintenance"));
    let trail = app.get("/api/admin/audit?action=announcement.", &admin).await.body;
    assert_eq!(trail["total"], 3);
}

async fn the_audit_page_shows_who_did_what_and_filters_by_action_and_admin(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("user@example.com").await;
    app.fund(&admin, user_id, "12.50").await;
    form(&app, "/admin/coupons", &admin, &coupon_fields("audit-me", "15")).await;
    let r = page(&app, "/admin/audit", &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    let table = r.text.split("id=\"audit-table\"").nth(1).unwrap();
    assert!(table.contains("user.balance_adjust") && table.contains("coupon.create"));
    let email: String =
        sqlx::query_scalar("SELECT email FROM users WHERE role = 'admin'").fetch_one(app.db.pool()).await.unwrap();
    assert!(table.contains(&email), "who");
    assert!(table.contains(&format!("user:{user_id}")) || table.contains(&user_id.to_string()), "which object");
    assert!(table.contains("code: AUDIT-ME"), "what a create wrote");
    assert!(table.contains("127.0.0.1"), "from where");
    let only = page(&app, "/admin/audit?action=coupon.", &admin).await;
    let only = only.text.split("id=\"audit-table\"").nth(1).unwrap();
    assert!(only.contains("coupon.create") && !only.contains("user.balance_adjust"));
    let nobody = page(&app, "/admin/audit?actor=nobody%40example.com", &admin).await;
    assert!(nobody.text.contains("class=\"empty\""), "an unknown admin matches nothing");
    let mine = page(&app, &format!("/admin/audit?actor={}", email.replace('@', "%40")), &admin).await;
    assert!(mine.text.contains("coupon.create"));
    assert_eq!(page(&app, "/admin/audit", &user).await.status, StatusCode::FORBIDDEN);
}

async fn the_settings_page_saves_linux_do_sign_in_with_a_write_only_secret(app: TestApp) {
    let admin = app.admin_token().await;
    let r = page(&app, "/admin/settings", &admin).await;
    assert!(r.text.contains("id=\"oauth_client_id\"") && r.text.contains("/api/auth/oauth/linuxdo/callback"));
    let current = app.state.settings.get().await.unwrap();
    let mut fields = vec![
        ("registration_enabled", "on"),
        ("max_keys_per_user", "20"),
        ("markup", "1"),
        ("package_switch_mode", "queue"),
        ("credit_gateway_url", "https://credit.linux.do/epay"),
        ("credit_pay_type", "epay"),
        ("credit_order_ttl_minutes", "15"),
        ("credit_flavour", "linuxdo"),
        ("credit_topup_min", "1.00"),
        ("credit_topup_max", "100.00"),
        ("credit_topup_rate", "1"),
        ("oauth_client_id", "ld-client"),
        ("oauth_client_secret", "ld-secret"),
        ("oauth_min_trust_level", "7"),
        ("oauth_linuxdo_only", "on"),
    ];
    let r = form(&app, "/admin/settings", &admin, &fields).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("id=\"oauth.min_trust_level-error\""), "{}", r.text);
    assert_eq!(app.state.settings.get().await.unwrap().oauth.client_id, current.oauth.client_id, "nothing saved");
    fields[13] = ("oauth_min_trust_level", "2");
    let r = form(&app, "/admin/settings", &admin, &fields).await;
    assert!(r.text.contains("id=\"oauth.linuxdo_only-error\""), "LINUX DO only needs LINUX DO sign-in on");
    fields.push(("oauth_enabled", "on"));
    fields.push(("oauth_allow_registration", "on"));
    let r = form(&app, "/admin/settings", &admin, &fields).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("id=\"saved\"") && !r.text.contains("ld-secret"), "the secret is never shown");
    let s = app.state.settings.get().await.unwrap();
    assert_eq!((s.oauth.client_id.as_str(), s.oauth.client_secret.as_str()), ("ld-client", "ld-secret"));
    assert!(s.oauth.enabled && s.oauth.linuxdo_only && s.oauth.allow_oauth_registration);
    assert_eq!(s.oauth.min_trust_level, 2);
    let stored: String = sqlx::query_scalar("SELECT value FROM system_settings WHERE key = 'settings'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(!stored.contains("ld-secret"), "the secret is sealed at rest");
    // Saving again with a blank secret keeps it; unticking turns LINUX DO only off.
    fields[12] = ("oauth_client_secret", "");
    fields[14] = ("oauth_linuxdo_only", "");
    let r = form(&app, "/admin/settings", &admin, &fields).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = app.state.settings.get().await.unwrap();
    assert_eq!(s.oauth.client_secret, "ld-secret");
    assert!(!s.oauth.linuxdo_only);
    let view = app.get("/api/admin/settings", &admin).await.body;
    assert_eq!(view["oauth"]["client_secret_set"], json!(true));
}

/// Posts a pre-sign-in form (login, register) with its pre-session cookie and token.
async fn guest_form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Answer {
    let pre = "a-pre-session-value-of-some-length";
    let csrf = csrf_token(app.state.config.secret_bytes(), &format!("pre:{pre}"));
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_pre={pre}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

async fn linux_do_only_closes_password_registration_and_sign_in_on_the_web(app: TestApp) {
    let admin = app.admin_token().await;
    app.register_and_login("old@example.com").await;
    let oauth = json!({"oauth": {"enabled": true, "client_id": "c", "client_secret": "s", "linuxdo_only": true}});
    assert_eq!(app.put("/api/admin/settings", &admin, oauth).await.status, StatusCode::OK);
    let register = TestApp::answer(app.client.get(app.url("/register")).send().await.unwrap()).await;
    assert_eq!(register.status, StatusCode::FORBIDDEN);
    assert!(register.text.contains("id=\"registration-closed\"") && register.text.contains("id=\"oauth-linuxdo\""));
    let r = guest_form(&app, "/register", &[("email", "new@example.com"), ("password", "password123")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the web form obeys LINUX DO only like the API");
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = 'new@example.com'").await, 0);
    let login = TestApp::answer(app.client.get(app.url("/login")).send().await.unwrap()).await;
    assert!(login.text.contains("href=\"/api/auth/oauth/linuxdo\""));
    let r = guest_form(&app, "/login", &[("email", "old@example.com"), ("password", "password123")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("only allows signing in with LINUX DO"), "{}", r.text);
    // Switching it off again reopens the form.
    let off = json!({"oauth": {"linuxdo_only": false}});
    assert_eq!(app.put("/api/admin/settings", &admin, off).await.status, StatusCode::OK);
    let r = guest_form(&app, "/register", &[("email", "new@example.com"), ("password", "password123")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
}

on_both_databases!(
    linux_do_only_closes_password_registration_and_sign_in_on_the_web,
    the_community_pages_are_for_admins_only_and_their_forms_need_the_csrf_token,
    admins_create_switch_and_delete_coupons_on_the_coupons_page,
    admins_generate_code_batches_see_their_use_and_export_them,
    admins_write_edit_and_delete_announcements_that_the_dashboard_shows,
    the_audit_page_shows_who_did_what_and_filters_by_action_and_admin,
    the_settings_page_saves_linux_do_sign_in_with_a_write_only_secret,
);
