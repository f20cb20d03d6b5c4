//! Crash consistency: the real binary on SQLite, streams in flight, `kill -9`, restart.
//! Completed (settled) charges survive; in-flight requests are charged once by the crash
//! journal's replay at the restart (never half-applied, never twice); every money
//! invariant holds before and after. `random_kills`: 20 kills at random instants under
//! mixed load, SQLite and PostgreSQL, one and three instances.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use codex_gateway::app::{open_database, Application};
use codex_gateway::domain::proxy::mock::{serve_mock, MockOptions};
use futures::StreamExt;
use helpers::{invariant_violations, report, test_config, Backend, FakeClock};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789abcdef";

/// One crash scenario at a time: each runs several gateway processes, a mock and a load
/// on its own, and six of them at once on a small machine make a restart miss its
/// start-up deadline (and blur where the kills land).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Gateway {
    child: Child,
    base: String,
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("gateway.db").display())
}

fn start(dir: &std::path::Path, port: u16) -> Gateway {
    start_on(dir, port, &sqlite_url(dir))
}

/// `codex-gateway admin create` for root@example.com / password123 on `database_url`.
fn create_admin(dir: &std::path::Path, database_url: &str) {
    let admin = Command::new(env!("CARGO_BIN_EXE_codex-gateway"))
        .args(["admin", "create", "--email", "root@example.com", "--password", "password123"])
        .env("DATABASE_URL", database_url)
        .env("GATEWAY_DATA_DIR", dir)
        .env("GATEWAY_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(admin.status.success(), "{}", String::from_utf8_lossy(&admin.stderr));
}

fn start_on(dir: &std::path::Path, port: u16, database_url: &str) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_codex-gateway"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("GATEWAY_JOURNAL", std::env::var("TEST_GATEWAY_JOURNAL").unwrap_or_else(|_| "true".into()))
        .env("GATEWAY_DATA_DIR", dir)
        .env("GATEWAY_SECRET", SECRET)
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEWAY_RUN_JOBS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Gateway { child, base: format!("http://127.0.0.1:{port}") }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not become ready");
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// A signed-in user with `balance` and an API key, served by an upstream at `upstream_url`.
struct Customer {
    user_id: i64,
    token: String,
    key: String,
}

/// Through `base`'s API as root@example.com: adds the upstream, registers and funds
/// u@example.com, signs them in and creates their key.
async fn provision(client: &reqwest::Client, base: &str, upstream_url: &str, balance: &str) -> Customer {
    let token = |v: Value| v["token"].as_str().unwrap().to_string();
    let credentials = |email: &str| json!({"email": email, "password": "password123"});
    let admin = token(post(client, format!("{base}/api/auth/login"), None, credentials("root@example.com")).await);
    post(
        client,
        format!("{base}/api/admin/upstreams"),
        Some(&admin),
        json!({"name": "mock", "base_url": upstream_url, "api_key": "sk-upstream-crash"}),
    )
    .await;
    // Killed instances leave their cluster-wide stream leases for 60 s (README, concurrent
    // streams), so 20 kills in a few seconds would fill the default per-user cap of 32 and
    // refuse requests; the crash tests measure the journal, so they run without the cap.
    let unlimited = client
        .put(format!("{base}/api/admin/settings"))
        .bearer_auth(&admin)
        .json(&json!({"rate_limits": {"user_max_concurrent_streams": 0}}))
        .send()
        .await
        .unwrap();
    assert!(unlimited.status().is_success(), "{}", unlimited.status());
    let user = post(client, format!("{base}/api/auth/register"), None, credentials("u@example.com")).await;
    let user_id = user["user"]["id"].as_i64().unwrap();
    post(
        client,
        format!("{base}/api/admin/users/{user_id}/balance"),
        Some(&admin),
        json!({"amount": balance, "reason": "crash test"}),
    )
    .await;
    let token = token(post(client, format!("{base}/api/auth/login"), None, credentials("u@example.com")).await);
    let key = post(client, format!("{base}/api/user/keys"), Some(&token), json!({"name": "k"})).await;
    Customer { user_id, token, key: key["key"].as_str().unwrap().to_string() }
}

#[path = "crash/random_kills.rs"]
mod random_kills;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_stream_loses_no_settled_charge_and_applies_nothing_by_half() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let rounds = if std::env::var_os("RELIABILITY_LONG").is_some() { 5 } else { 2 };
    let dir = helpers::TempDir(std::env::temp_dir().join(format!("cg-crash-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    create_admin(&dir.0, &sqlite_url(&dir.0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = MockOptions { chunks: 40, delay: Duration::from_millis(100), ..MockOptions::default() };
    let mock = serve_mock(listener, slow).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = reqwest::Client::new();

    let mut gw = start(&dir.0, port);
    wait_ready(&client, &gw.base).await;
    let Customer { user_id, token: user_token, key } =
        provision(&client, &gw.base, &format!("{}/", mock.base_url()), "50.00").await;

    let mut completed = 0i64;
    let mut killed_streams = 0u64;
    for _ in 0..rounds {
        // Requests that finish and whose charge is visible to the user: acknowledged.
        for _ in 0..3 {
            let r = client
                .post(format!("{}/v1/responses", gw.base))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt-5", "input": "hi"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.bytes().await.unwrap();
            completed += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let usage: Value = client
                .get(format!("{}/api/user/usage?per_page=200", gw.base))
                .bearer_auth(&user_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let settled = usage["items"].as_array().unwrap().iter().filter(|r| r["error"].is_null()).count() as i64;
            if settled >= completed {
                break;
            }
            assert!(Instant::now() < deadline, "completed requests never settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Streams in flight, each mid-body, when the process is killed.
        let mut streams = Vec::new();
        for _ in 0..6 {
            let r = client
                .post(format!("{}/v1/responses", gw.base))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt-5", "stream": true, "input": "hi"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let mut body = r.bytes_stream();
            body.next().await.unwrap().unwrap();
            streams.push(body);
        }
        gw.child.kill().unwrap(); // SIGKILL
        gw.child.wait().unwrap();
        killed_streams += streams.len() as u64;
        for mut s in streams {
            // The client sees the stream break, not hang.
            let end =
                tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = s.next().await {} }).await;
            assert!(end.is_ok());
        }
        gw = start(&dir.0, port);
        wait_ready(&client, &gw.base).await;
        // After restart the service works at once and bills correctly.
        let r = client
            .post(format!("{}/v1/responses", gw.base))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-5", "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        completed += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();

    // Inspect the database the killed processes left behind.
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("gateway.db").display());
    let config = test_config(&url, &dir.0, &[]);
    let db = open_database(&config).await.unwrap();
    let violations = invariant_violations(&db).await;
    let settled: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs WHERE error IS NULL").fetch_one(db.pool()).await.unwrap();
    assert!(settled >= completed, "an acknowledged charge was lost: {settled} settled of {completed} completed");
    let half: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_logs g WHERE g.cost > 0 AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.reference = 'usage:' || g.request_id)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(half, 0, "a usage row without its ledger entry");
    let open_holds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds").fetch_one(db.pool()).await.unwrap();
    // Each restart replayed the crash journal: the killed streams are charged too.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs").fetch_one(db.pool()).await.unwrap();
    assert_eq!(rows, mock.requests() as i64, "one usage row per request the upstream received");
    assert_eq!(open_holds, 0, "the journal replay settled every hold of the killed requests");

    // The janitor, run later (past the hold lifetime), releases what the dead process held.
    let clock = FakeClock::at(&(Utc::now() + chrono::Duration::hours(7)).to_rfc3339());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::with_listener(config, clock, db.clone(), listener).await.unwrap();
    let released = codex_gateway::domain::billing::release_expired_holds(app.state().env()).await.unwrap();
    assert_eq!(released as i64, open_holds);
    let held: i64 =
        sqlx::query_scalar("SELECT held FROM users WHERE id = $1").bind(user_id).fetch_one(db.pool()).await.unwrap();
    assert_eq!(held, 0);
    let after = invariant_violations(&db).await;
    report(
        "crash_kill9_mid_stream",
        Backend::Sqlite,
        &[
            ("requests", completed as u64 + killed_streams),
            ("faults", rounds as u64),
            ("killed_streams", killed_streams),
            ("unsettled_holds_released", released),
        ],
        violations.len() + after.len(),
    );
    assert!(violations.is_empty(), "{violations:?}");
    assert!(after.is_empty(), "{after:?}");
}
