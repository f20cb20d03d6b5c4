//! The Credit merchant key and upstream API keys never reach the logs (nor API answers):
//! every log line of a payment notify (good and forged), upstream calls (served and
//! failing), and settings reads/updates is captured at TRACE level and grepped.
//! A separate test binary, so its process-wide TRACE subscriber slows no other test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use codex_gateway::domain::payment::epay;
use codex_gateway::domain::proxy::mock::{serve_mock, MockOptions};
use helpers::{report, spawn_app_with, Backend, TEST_PID};
use reqwest::StatusCode;
use serde_json::json;

const CREDIT_KEY: &str = "credit-key-0f1e2d3c4b5a69788796a5b4";
const NEW_CREDIT_KEY: &str = "credit-key-rotated-5a5a5a5a5a5a5a5a";
const UPSTREAM_KEY: &str = "sk-upstream-7c6b5a4d3e2f1a0b9c8d7e6f";

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture(Arc::new(Mutex::new(Vec::new())));
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("no other subscriber in this test binary");
        capture
    })
}

async fn exercise(backend: Backend) -> (u64, String) {
    let app = spawn_app_with(backend, &[("GATEWAY_PAY_SANDBOX", "true")]).await;
    let admin = app.admin_token().await;
    let mut requests = 0u64;
    let r = app
        .put(
            "/api/admin/settings",
            &admin,
            json!({"credit": {"enabled": true, "pid": TEST_PID, "key": CREDIT_KEY,
                "gateway_url": app.url("/sandbox/epay"), "notify_url": app.url("/api/payment/credit/notify")}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(CREDIT_KEY));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions::default()).await.unwrap();
    let up = app
        .post(
            "/api/admin/upstreams",
            &admin,
            json!({"name": "u", "base_url": format!("{}/", mock.base_url()), "api_key": UPSTREAM_KEY}),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text);
    assert!(!up.text.contains(UPSTREAM_KEY));
    requests += 2;

    let (user_id, user) = app.register_and_login("payer@example.com").await;
    app.fund(&admin, user_id, "5.00").await;
    let topup = app.post("/api/user/topup", &user, json!({"amount": "3.00"})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    assert!(!topup.text.contains(CREDIT_KEY));
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let params: epay::Params = [
        ("pid", TEST_PID),
        ("trade_no", "G1"),
        ("out_trade_no", otn.as_str()),
        ("type", "epay"),
        ("name", "top-up"),
        ("money", "3.00"),
        ("trade_status", "TRADE_SUCCESS"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut forged = epay::signed(params.clone(), "not-the-key");
    forged.insert("money".into(), "300.00".into());
    for p in [forged, epay::signed(params, CREDIT_KEY)] {
        let r = app.client.get(app.url("/api/payment/credit/notify")).query(&p).send().await.unwrap();
        assert!(!r.text().await.unwrap().contains(CREDIT_KEY));
        requests += 1;
    }
    assert_eq!(app.balance(&user).await, "8.00");

    // The gateway refuses a refund (the sandbox never saw this trade), then cannot be
    // reached at all: check, refund and the reconcile job each format a gateway error.
    let refused = app.post(&format!("/api/admin/orders/{otn}/refund"), &admin, json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(!refused.text.contains(CREDIT_KEY));
    let pending = app.post("/api/user/topup", &user, json!({"amount": "4.00"})).await;
    let pending = pending.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/epay", dead.local_addr().unwrap());
    drop(dead);
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"gateway_url": dead_url}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for path in [format!("/api/admin/orders/{pending}/check"), format!("/api/admin/orders/{otn}/refund")] {
        let r = app.post(&path, &admin, json!({})).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {}", r.text);
        assert!(!r.text.contains(CREDIT_KEY), "{path}: {}", r.text);
        requests += 1;
    }
    let reconciled = codex_gateway::domain::orders::jobs::reconcile_once(app.state.env()).await.unwrap();
    assert_eq!(reconciled.errors, 1, "the reconcile pass met the unreachable gateway");

    let key = app.post("/api/user/keys", &user, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_string();
    for fault in [None, Some("fail-500"), Some("die")] {
        let mut req = app.client.post(app.url("/v1/responses")).bearer_auth(&key);
        if let Some(f) = fault {
            req = req.header("x-mock-fault", f);
        }
        let r = req.json(&json!({"model": "gpt-5", "stream": true, "input": "hi"})).send().await.unwrap();
        let text = r.text().await.unwrap_or_default();
        assert!(!text.contains(UPSTREAM_KEY));
        requests += 1;
    }
    let seen = mock.last().unwrap();
    assert_eq!(seen.headers["authorization"], format!("Bearer {UPSTREAM_KEY}"), "the key did reach the upstream");

    let rotate = app.put("/api/admin/settings", &admin, json!({"credit": {"key": NEW_CREDIT_KEY}})).await;
    assert_eq!(rotate.status, StatusCode::OK);
    for path in ["/api/admin/settings", "/api/admin/upstreams"] {
        let r = app.get(path, &admin).await;
        for secret in [CREDIT_KEY, NEW_CREDIT_KEY, UPSTREAM_KEY] {
            assert!(!r.text.contains(secret), "{path} returned a secret");
        }
        requests += 1;
    }
    // At rest: sealed, not plain.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT value FROM system_settings").fetch_all(app.db.pool()).await.unwrap();
    assert!(stored.iter().all(|v| !v.contains(NEW_CREDIT_KEY) && !v.contains(CREDIT_KEY)));
    app.assert_all_invariants().await;
    (requests, otn)
}

async fn secrets_never_reach_the_logs(backend: Backend) {
    let capture = capture();
    let (requests, otn) = exercise(backend).await;
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    // The capture works: it saw the notify and the upstream calls.
    assert!(logs.contains("payment notify refused") && logs.contains(&otn), "the forged notify was not captured");
    assert!(logs.contains("upstream attempt failed"), "the failing upstream call was not captured");
    assert!(logs.contains("reconciliation could not check an order"), "the reconcile warning was not captured");
    assert!(logs.contains("did not answer"), "the unreachable-gateway error was not captured");
    assert!(logs.lines().count() > 50, "only {} log lines captured", logs.lines().count());
    let mut leaks = 0;
    for secret in [CREDIT_KEY, NEW_CREDIT_KEY, UPSTREAM_KEY, "0f1e2d3c4b5a6978", "7c6b5a4d3e2f1a0b"] {
        for line in logs.lines().filter(|l| l.contains(secret)) {
            leaks += 1;
            eprintln!("LEAK of {secret}: {line}");
        }
    }
    report("secrets_not_logged", backend, &[("requests", requests), ("log_lines", logs.lines().count() as u64)], leaks);
    assert_eq!(leaks, 0, "secrets found in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_on_sqlite() {
    secrets_never_reach_the_logs(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_on_postgres() {
    secrets_never_reach_the_logs(Backend::Postgres).await;
}
