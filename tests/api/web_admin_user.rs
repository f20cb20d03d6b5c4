//! The admin's page of one user, over HTTP: whose packages it shows, granting an
//! off-sale (trial) package, and ending a package from the page.

use codex_gateway::domain::auth::extract::csrf_token;
use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, TestApp};
use crate::on_both_databases;

async fn page(app: &TestApp, path: &str, session: &str, lang: &str) -> Answer {
    let req = app.client.get(app.url(path)).header(COOKIE, format!("cg_session={session}; cg_lang={lang}"));
    TestApp::answer(req.send().await.unwrap()).await
}

async fn form(app: &TestApp, path: &str, session: &str, fields: &[(&str, &str)]) -> Answer {
    let csrf = csrf_token(app.state.config.secret_bytes(), session);
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    let req = app.client.post(app.url(path)).header(COOKIE, format!("cg_session={session}")).form(&all);
    TestApp::answer(req.send().await.unwrap()).await
}

async fn an_admin_grants_an_off_sale_trial_package_and_ends_it_from_the_users_page(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, _) = app.register_and_login("buyer@example.com").await;
    let trial = app
        .create_package(
            &admin,
            json!({"name": "Trial", "price": 1, "duration_days": 3, "daily_limit": 1, "enabled": false}),
        )
        .await;
    let path = format!("/admin/users/{user_id}");
    let before = page(&app, &path, &admin, "en").await;
    assert!(before.text.contains("Packages of buyer@example.com"), "the heading names whose packages they are");
    assert!(!before.text.contains("Your packages"));
    assert!(before.text.contains(&format!("<option value=\"{trial}\">Trial (Off sale)</option>")), "{}", before.text);
    assert!(page(&app, &path, &admin, "zh").await.text.contains("buyer@example.com 的套餐"));

    let granted = form(&app, &format!("{path}/packages"), &admin, &[("package_id", &trial.to_string())]).await;
    assert_eq!(granted.status, StatusCode::OK);
    assert!(granted.text.contains("Package granted."));
    let held = app.get(&format!("/api/admin/users/{user_id}/packages"), &admin).await.body;
    let up = held["items"][0]["id"].as_i64().unwrap();
    assert_eq!(held["items"][0]["status"], "active");
    let shown = page(&app, &path, &admin, "en").await;
    assert!(shown.text.contains(&format!("id=\"end-{up}\"")), "an active package has its end button");

    let ended = form(&app, &format!("{path}/packages/{up}/end"), &admin, &[]).await;
    assert_eq!(ended.status, StatusCode::OK);
    assert!(ended.text.contains("Package ended.") && ended.text.contains("Ended by an admin"), "{}", ended.text);
    assert!(!ended.text.contains(&format!("id=\"end-{up}\"")), "an ended package cannot be ended again");
    let held = app.get(&format!("/api/admin/users/{user_id}/packages"), &admin).await.body;
    assert_eq!(held["items"][0]["status"], "ended");
    let again = form(&app, &format!("{path}/packages/{up}/end"), &admin, &[]).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.text.contains("only an active or queued package can be ended"), "{}", again.text);
    let audit = app.get("/api/admin/audit", &admin).await;
    assert!(audit.text.contains("package.end"));
}

async fn an_admin_sets_and_clears_a_users_daily_and_five_hour_caps(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, _) = app.register_and_login("capped@example.com").await;
    let path = format!("/admin/users/{user_id}/caps");
    let wrong = form(&app, &path, &admin, &[("daily_cap", "lots"), ("five_hour_cap", "x")]).await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text.contains("id=\"daily_cap-error\"") && wrong.text.contains("id=\"five_hour_cap-error\""));
    assert!(wrong.text.contains("value=\"lots\""), "the typed value is shown again");
    let negative = form(&app, &path, &admin, &[("daily_cap", "2"), ("five_hour_cap", "-1")]).await;
    assert!(negative.text.contains("id=\"five_hour_cap-error\""), "{}", negative.text);
    let ok = form(&app, &path, &admin, &[("daily_cap", "2"), ("five_hour_cap", "0.5")]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.text.contains("Spending caps saved."));
    assert!(ok.text.contains("value=\"0.50\""), "the stored cap is shown");
    let shown = app.get(&format!("/api/admin/users/{user_id}"), &admin).await.body;
    assert_eq!((shown["daily_cap"].as_str(), shown["five_hour_cap"].as_str()), (Some("2.00"), Some("0.50")), "{shown}");
    form(&app, &path, &admin, &[("daily_cap", ""), ("five_hour_cap", "")]).await;
    let cleared = app.get(&format!("/api/admin/users/{user_id}"), &admin).await.body;
    assert!(cleared["daily_cap"].is_null() && cleared["five_hour_cap"].is_null(), "{cleared}");
    assert!(app.get("/api/admin/audit", &admin).await.text.contains("five_hour_cap"));
}

on_both_databases!(
    an_admin_grants_an_off_sale_trial_package_and_ends_it_from_the_users_page,
    an_admin_sets_and_clears_a_users_daily_and_five_hour_caps,
);
