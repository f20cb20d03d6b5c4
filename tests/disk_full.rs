//! The disk under the SQLite database fills up under load, then space comes back.
//!
//! The data directory (database and crash journal) lives on a small tmpfs this test
//! mounts; a filler file takes the rest. While the disk is full a write is refused with
//! a 503 in the surface's shape (OpenAI on `/v1`, `database_unavailable` on `/api`),
//! never a 500, never a hang; reads keep working; a user this instance holds a hint for
//! may still be served, and that request's settlement retries until there is room.
//! Afterwards: usage rows = requests the upstream received, exactly, no hold left, and
//! every balance equals its ledger. Needs `mount` (root); skipped with a message when
//! it cannot mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use codex_gateway::domain::proxy::mock::{serve_mock, MockOptions};
use helpers::{launch, report, Backend, FakeClock, TempDir};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Unmounts the tmpfs when the test ends, pass or fail.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes until the file system refuses; answers how many bytes went in.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while let Ok(n) = file.write(&chunk) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = file.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_cleanly_and_every_served_request_is_charged_once_space_returns() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mount = std::env::temp_dir().join(format!("cg-diskfull-{}", std::process::id()));
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let _ = std::fs::remove_dir_all(&mount);
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root and CAP_SYS_ADMIN); the disk-full scenario did not run");
        return;
    }
    let _unmount = Mount(mount.clone());
    let data = mount.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}?mode=rwc", data.join("gateway.db").display());
    let app = launch(Backend::Sqlite, &url, TempDir(data.clone()), FakeClock::at("2026-01-15T04:00:00Z"), &[]).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions::default()).await.unwrap();
    let admin = app.admin_token().await;
    let up = app
        .post(
            "/api/admin/upstreams",
            &admin,
            json!({"name": "m", "base_url": format!("{}/", mock.base_url()), "api_key": "sk-up"}),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text);
    let (user_id, user) = app.register_and_login("disk@example.com").await;
    app.fund(&admin, user_id, "50.00").await;
    let key = app.post("/api/user/keys", &user, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_string();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let send = |i: u64| {
        client
            .post(app.url("/v1/responses"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-5", "stream": i.is_multiple_of(2), "input": "hi"}))
            .send()
    };
    for i in 0..6 {
        assert_eq!(send(i).await.unwrap().status(), StatusCode::OK);
    }

    // The disk fills up.
    let filler = mount.join("filler");
    let filled = fill(&filler);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = send(i).await.unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let error: Value = serde_json::from_slice(&body).unwrap_or_default();
            assert!(
                error["error"]["message"].is_string() && error["error"]["type"].is_string(),
                "OpenAI shape: {error}"
            );
        }
        statuses.push(status);
    }
    let bad: Vec<_> =
        statuses.iter().filter(|s| **s != StatusCode::OK && **s != StatusCode::SERVICE_UNAVAILABLE).collect();
    assert!(bad.is_empty(), "only 200 or 503 while the disk is full: {statuses:?}");
    let refused = statuses.iter().filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE).count() as u64;
    assert!(refused > 0, "the full disk was seen: {statuses:?}");
    // Reads still work; a write through the API fits in a page the WAL already has, or is
    // refused in the API's shape.
    assert_eq!(app.get("/api/user/me", &user).await.status, StatusCode::OK);
    let write = app.post("/api/user/keys", &user, json!({"name": "while full"})).await;
    assert!(
        write.status == StatusCode::CREATED
            || (write.status == StatusCode::SERVICE_UNAVAILABLE
                && write.body["error"]["code"] == "database_unavailable"),
        "{} {}",
        write.status,
        write.text
    );

    // Space comes back: service resumes and the settlements caught by the full disk land.
    std::fs::remove_file(&filler).unwrap();
    let mut served_after = 0;
    for i in 0..10 {
        served_after += u64::from(send(i).await.unwrap().status() == StatusCode::OK);
    }
    assert_eq!(served_after, 10, "service resumed once space came back");
    let mut rows = 0i64;
    for _ in 0..600 {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds").fetch_one(app.db.pool()).await.unwrap();
        rows = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(app.db.pool()).await.unwrap();
        if open == 0 && rows == mock.requests() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows, mock.requests() as i64, "one usage row per request the upstream received");
    app.wait_until_settled().await;
    app.assert_all_invariants().await;
    let served_while_full = statuses.len() as u64 - refused;
    report(
        "sqlite_disk_full",
        Backend::Sqlite,
        &[
            ("requests", statuses.len() as u64 + 16),
            ("faults", 1),
            ("filler_kib", filled / 1024),
            ("served_on_hints_while_full", served_while_full),
            ("refused_503_while_full", refused),
            ("upstream_requests", mock.requests() as u64),
        ],
        0,
    );
    drop(app);
}
