use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    keys_are_shown_once_listed_renamed_and_revoked,
    keys_authenticate_until_revoked_or_suspended,
    the_number_of_keys_is_bounded,
    users_cannot_touch_each_others_keys,
);

async fn keys_are_shown_once_listed_renamed_and_revoked(app: TestApp) {
    let (_, token) = app.register_and_login("k@example.com").await;
    let created = app.post("/api/user/keys", &token, json!({"name": "laptop", "spend_limit": "5.00"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["key"].as_str().unwrap();
    assert!(secret.starts_with("sk-") && secret.len() == 51);
    assert!(created.body["prefix"].as_str().unwrap().starts_with(&secret[..7]));
    assert_eq!(created.body["spend_limit"], "5.00");

    let list = app.get("/api/user/keys", &token).await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("key").is_none(), "the secret is never listed");
    assert!(!list.text.contains(secret));

    let id = created.body["id"].as_i64().unwrap();
    let renamed =
        app.patch(&format!("/api/user/keys/{id}"), &token, json!({"name": "desktop", "spend_limit": null})).await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["name"], "desktop");
    assert!(renamed.body["spend_limit"].is_null());

    let revoked = app.delete(&format!("/api/user/keys/{id}"), &token).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let list = app.get("/api/user/keys", &token).await;
    assert_eq!(list.body["items"][0]["status"], "revoked");
}

async fn keys_authenticate_until_revoked_or_suspended(app: TestApp) {
    use codex_gateway::domain::auth::api_keys::{authenticate, KeyRefusal};
    let admin = app.admin_token().await;
    let (user_id, token) = app.register_and_login("s@example.com").await;
    let created = app.post("/api/user/keys", &token, json!({"name": "ci"})).await;
    let secret = created.body["key"].as_str().unwrap().to_string();
    let now = app.state.now();
    assert!(authenticate(&app.db, &secret, now).await.unwrap().is_ok());
    assert_eq!(authenticate(&app.db, "sk-wrong", now).await.unwrap().unwrap_err(), KeyRefusal::Unknown);

    let suspended = app.patch(&format!("/api/admin/users/{user_id}"), &admin, json!({"status": "suspended"})).await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.text);
    assert_eq!(authenticate(&app.db, &secret, now).await.unwrap().unwrap_err(), KeyRefusal::UserSuspended);
    let me = app.get("/api/user/me", &token).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "suspension ends sessions at once");
    let login = app.post_public("/api/auth/login", json!({"email": "s@example.com", "password": "password123"})).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert_eq!(login.error_code(), "account_suspended");

    app.patch(&format!("/api/admin/users/{user_id}"), &admin, json!({"status": "active"})).await;
    assert!(authenticate(&app.db, &secret, now).await.unwrap().is_ok());
    let token = app.login("s@example.com", "password123").await;
    let id = created.body["id"].as_i64().unwrap();
    app.delete(&format!("/api/user/keys/{id}"), &token).await;
    assert_eq!(authenticate(&app.db, &secret, now).await.unwrap().unwrap_err(), KeyRefusal::Revoked);
}

async fn the_number_of_keys_is_bounded(app: TestApp) {
    let admin = app.admin_token().await;
    app.put("/api/admin/settings", &admin, json!({"max_keys_per_user": 2})).await;
    let (_, token) = app.register_and_login("m@example.com").await;
    for i in 0..2 {
        let r = app.post("/api/user/keys", &token, json!({"name": format!("k{i}")})).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let third = app.post("/api/user/keys", &token, json!({"name": "k3"})).await;
    assert_eq!(third.status, StatusCode::CONFLICT);
    assert_eq!(third.error_code(), "key_limit_reached");
    let bad_name = app.post("/api/user/keys", &token, json!({"name": ""})).await;
    assert_eq!(bad_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_name.body["error"]["field"], "name");
}

async fn users_cannot_touch_each_others_keys(app: TestApp) {
    let (_, alice) = app.register_and_login("alice@example.com").await;
    let (_, mallory) = app.register_and_login("mallory@example.com").await;
    let created = app.post("/api/user/keys", &alice, json!({"name": "mine"})).await;
    let id = created.body["id"].as_i64().unwrap();
    assert_eq!(app.delete(&format!("/api/user/keys/{id}"), &mallory).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.patch(&format!("/api/user/keys/{id}"), &mallory, json!({"name": "x"})).await.status,
        StatusCode::NOT_FOUND
    );
    let theirs = app.get("/api/user/keys", &mallory).await;
    assert_eq!(theirs.body["items"].as_array().unwrap().len(), 0);
}
