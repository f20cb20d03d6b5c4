use chrono::Duration;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(admins_manage_announcements_and_everyone_sees_the_current_ones, announcement_fields_are_checked,);

async fn public_titles(app: &TestApp) -> Vec<String> {
    let r = app.client.get(app.url("/api/announcements")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    body["items"].as_array().unwrap().iter().map(|a| a["title"].as_str().unwrap().to_string()).collect()
}

async fn admins_manage_announcements_and_everyone_sees_the_current_ones(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("u@example.com").await;
    let body =
        "**New models** today. <script>alert('x')</script> [docs](javascript:alert(1)) [site](https://linux.do/)";
    let created = app.post("/api/admin/announcements", &admin, json!({"title": "Welcome", "body": body})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["announcement"]["id"].as_i64().unwrap();
    let html = created.body["announcement"]["body_html"].as_str().unwrap();
    assert!(html.contains("<strong>New models</strong>"), "{html}");
    assert!(html.contains("https://linux.do/"), "{html}");
    assert!(!html.contains("<script") && !html.contains("javascript:"), "{html}");
    assert_eq!(created.body["announcement"]["body"], body, "the markdown source is kept as written");
    assert_eq!(public_titles(&app).await, vec!["Welcome"]);

    let later = app
        .post(
            "/api/admin/announcements",
            &admin,
            json!({"title": "Maintenance", "body": "Down for 5 minutes", "starts_at": "2026-01-16T00:00:00+08:00",
                   "ends_at": "2026-01-16T06:00:00+08:00"}),
        )
        .await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
    let later_id = later.body["announcement"]["id"].as_i64().unwrap();
    assert_eq!(later.body["announcement"]["starts_at"], "2026-01-16T00:00:00+08:00");
    assert_eq!(public_titles(&app).await, vec!["Welcome"], "not started yet");
    app.clock.set("2026-01-15T17:00:00Z"); // 01:00 in Shanghai on the 16th
    assert_eq!(public_titles(&app).await, vec!["Maintenance", "Welcome"]);
    app.clock.advance(Duration::hours(6));
    assert_eq!(public_titles(&app).await, vec!["Welcome"], "ended");

    let off = app.put(&format!("/api/admin/announcements/{id}"), &admin, json!({"enabled": false})).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text);
    assert_eq!(off.body["announcement"]["title"], "Welcome", "absent fields keep their value");
    assert!(public_titles(&app).await.is_empty());
    let reopen = app.put(&format!("/api/admin/announcements/{later_id}"), &admin, json!({"ends_at": null})).await;
    assert!(reopen.body["announcement"]["ends_at"].is_null(), "{}", reopen.text);
    assert_eq!(public_titles(&app).await, vec!["Maintenance"]);

    let listed = app.get("/api/admin/announcements", &admin).await;
    assert_eq!(listed.body["total"], 2);
    assert_eq!(app.get("/api/admin/announcements", &user).await.status, StatusCode::FORBIDDEN);
    let by_user = app.post("/api/admin/announcements", &user, json!({"title": "x", "body": "y"})).await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);

    assert_eq!(app.delete(&format!("/api/admin/announcements/{id}"), &admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/api/admin/announcements/{id}"), &admin).await.status, StatusCode::NOT_FOUND);
    let missing = app.put("/api/admin/announcements/9999", &admin, json!({"title": "x"})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let audit = app.get("/api/admin/audit?action=announcement.", &admin).await;
    let actions: Vec<&str> =
        audit.body["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        vec![
            "announcement.delete",
            "announcement.update",
            "announcement.update",
            "announcement.create",
            "announcement.create"
        ]
    );
    let update = &audit.body["items"][2];
    assert_eq!(update["before"]["enabled"], true);
    assert_eq!(update["after"]["enabled"], false);
    assert_eq!(audit.body["items"][0]["before"]["title"], "Welcome");
    assert!(audit.body["items"][0]["after"].is_null());
}

async fn announcement_fields_are_checked(app: TestApp) {
    let admin = app.admin_token().await;
    for (body, field) in [
        (json!({"title": " ", "body": "x"}), "title"),
        (json!({"title": "t", "body": ""}), "body"),
        (json!({"title": "t", "body": "b", "starts_at": "tomorrow"}), "starts_at"),
        (
            json!({"title": "t", "body": "b", "starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}),
            "ends_at",
        ),
    ] {
        let r = app.post("/api/admin/announcements", &admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field);
    }
}
