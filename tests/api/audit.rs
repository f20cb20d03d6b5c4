use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(the_audit_trail_lists_admin_actions_with_filters);

async fn the_audit_trail_lists_admin_actions_with_filters(app: TestApp) {
    let admin = app.admin_token().await;
    let admin_id = app.get("/api/user/me", &admin).await.body["id"].as_i64().unwrap();
    let other_admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("u@example.com").await;
    app.fund(&admin, user_id, "5").await;
    let settings = app.put("/api/admin/settings", &admin, json!({"max_keys_per_user": 3})).await;
    assert_eq!(settings.status, StatusCode::OK);
    app.clock.set("2026-01-16T04:00:00Z");
    app.post("/api/admin/announcements", &other_admin, json!({"title": "t", "body": "b"})).await;

    let all = app.get("/api/admin/audit", &admin).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.body["total"], 3);
    assert_eq!(all.body["items"][0]["action"], "announcement.create", "newest first");
    let fund = &all.body["items"][2];
    assert_eq!(fund["action"], "user.balance_adjust");
    assert_eq!(fund["actor_id"], admin_id);
    assert!(fund["actor_email"].as_str().unwrap().starts_with("admin-"));
    assert_eq!(fund["target"], format!("user:{user_id}"));
    assert_eq!(fund["after"]["reason"], "test funding");
    assert_eq!(fund["created_at"], "2026-01-15T12:00:00+08:00");
    assert_eq!(all.body["items"][1]["before"]["max_keys_per_user"], 20);
    assert_eq!(all.body["items"][1]["after"]["max_keys_per_user"], 3);

    let by_actor = app.get(&format!("/api/admin/audit?actor={admin_id}"), &admin).await;
    assert_eq!(by_actor.body["total"], 2);
    let by_prefix = app.get("/api/admin/audit?action=user.", &admin).await;
    assert_eq!(by_prefix.body["total"], 1);
    let wildcard = app.get("/api/admin/audit?action=%25", &admin).await;
    assert_eq!(wildcard.body["total"], 0, "a % in the prefix is literal");
    let day = app.get("/api/admin/audit?date=2026-01-15", &admin).await;
    assert_eq!(day.body["total"], 2);
    let range = app.get("/api/admin/audit?from=2026-01-16&to=2026-01-20", &admin).await;
    assert_eq!(range.body["total"], 1);
    let paged = app.get("/api/admin/audit?per_page=1&page=2", &admin).await;
    assert_eq!(paged.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["items"][0]["action"], "settings.update");
    let bad = app.get("/api/admin/audit?date=15/01/2026", &admin).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get("/api/admin/audit", &user).await.status, StatusCode::FORBIDDEN);
}
