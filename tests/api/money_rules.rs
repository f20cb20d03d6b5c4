//! Money rules from the issue 22 review: every allowance change is one transaction that
//! commits with everything it depends on. Both databases.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_databases;

on_both_databases!(a_key_daily_cap_commits_with_its_day_window_or_not_at_all);

/// Makes every insert into `window_usage` fail, so the second half of a cap change fails.
async fn break_window_inserts(app: &TestApp) {
    let statements: &[&str] = match app.backend {
        Backend::Sqlite => &["CREATE TRIGGER refuse_window BEFORE INSERT ON window_usage \
             BEGIN SELECT RAISE(ABORT, 'window inserts refused by the test'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_window() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'window inserts refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_window BEFORE INSERT ON window_usage \
             FOR EACH ROW EXECUTE FUNCTION refuse_window()",
        ],
    };
    for sql in statements {
        sqlx::query(sql).execute(app.db.pool()).await.unwrap();
    }
}

async fn heal_window_inserts(app: &TestApp) {
    let sql = match app.backend {
        Backend::Sqlite => "DROP TRIGGER refuse_window",
        Backend::Postgres => "DROP TRIGGER refuse_window ON window_usage",
    };
    sqlx::query(sql).execute(app.db.pool()).await.unwrap();
}

async fn key_row(app: &TestApp, key: i64) -> (String, Option<i64>) {
    sqlx::query_as("SELECT name, daily_cap FROM api_keys WHERE id = $1")
        .bind(key)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn key_windows(app: &TestApp, key: i64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM window_usage WHERE scope = $1")
        .bind(format!("k:{key}"))
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// The cap and the day figure it counts from are written in one transaction: when the
/// day window cannot be written, the cap (and the rest of the patch) is not set either,
/// so a cap never starts counting from zero in the middle of a day.
async fn a_key_daily_cap_commits_with_its_day_window_or_not_at_all(app: TestApp) {
    let (_, token) = app.register_and_login("cap@example.com").await;
    let created = app.post("/api/user/keys", &token, json!({"name": "k"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let key = created.body["id"].as_i64().unwrap();

    break_window_inserts(&app).await;
    let failed =
        app.patch(&format!("/api/user/keys/{key}"), &token, json!({"name": "renamed", "daily_cap": "1.00"})).await;
    assert!(failed.status.is_server_error(), "{} {}", failed.status, failed.text);
    assert_eq!(key_row(&app, key).await, ("k".to_string(), None), "nothing of the patch was kept");
    assert_eq!(key_windows(&app, key).await, 0);
    // A patch without a cap does not touch the windows and still works.
    let renamed = app.patch(&format!("/api/user/keys/{key}"), &token, json!({"name": "renamed"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    heal_window_inserts(&app).await;

    let capped = app.patch(&format!("/api/user/keys/{key}"), &token, json!({"daily_cap": "1.00"})).await;
    assert_eq!(capped.status, StatusCode::OK, "{}", capped.text);
    assert_eq!(key_row(&app, key).await, ("renamed".to_string(), Some(1_000_000)));
    assert_eq!(key_windows(&app, key).await, 1, "the cap's day window was written with it");
    app.assert_money_invariants().await;
}
