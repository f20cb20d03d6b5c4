#![allow(dead_code)] // shared by many test modules; not every module uses every helper
//! Test harness: spawns the real application on an ephemeral port, on a fresh SQLite
//! file or a fresh PostgreSQL database, with a fake clock the test drives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use codex_gateway::app::{open_database, Application};
use codex_gateway::domain::auth::users;
use codex_gateway::domain::auth::Role;
use codex_gateway::foundation::clock::Clock;
use codex_gateway::foundation::config::Config;
use codex_gateway::foundation::db::Db;
use codex_gateway::runtime::state::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};

/// A clock tests move by hand; never sleeps.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn at(rfc3339: &str) -> Arc<Self> {
        Arc::new(FakeClock(Mutex::new(parse_time(rfc3339))))
    }

    pub fn set(&self, rfc3339: &str) {
        *self.0.lock().unwrap() = parse_time(rfc3339);
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub fn parse_time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The running application and handles to poke it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<FakeClock>,
    pub db: Db,
    pub state: AppState,
    pub backend: Backend,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

/// A temp directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn unique_name() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("cg_{}_{n:x}", std::process::id())
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
        Backend::Postgres => {
            let admin = std::env::var("TEST_POSTGRES_URL")
                .expect("TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts PostgreSQL");
            let name = unique_name();
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to TEST_POSTGRES_URL");
            conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
            conn.close().await.ok();
            let (base, _) = admin.rsplit_once('/').unwrap();
            format!("{base}/{name}")
        }
    }
}

/// Start-up configuration for a test instance.
pub fn test_config(database_url: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("DATABASE_URL".into(), database_url.into());
    vars.insert("GATEWAY_LISTEN".into(), "127.0.0.1:0".into());
    vars.insert("GATEWAY_SECRET".into(), "test-secret-0123456789abcdef".into());
    vars.insert("GATEWAY_DATA_DIR".into(), dir.display().to_string());
    vars.insert("GATEWAY_RUN_JOBS".into(), "false".into());
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    Config::from_vars(&vars).unwrap()
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the app with extra configuration variables.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let dir = TempDir(std::env::temp_dir().join(unique_name()));
    std::fs::create_dir_all(&dir.0).unwrap();
    let url = fresh_database_url(backend, &dir.0).await;
    launch(backend, &url, dir, FakeClock::at("2026-01-15T04:00:00Z"), extra).await
}

/// Starts one instance on an existing database (several may share one: scale-out tests).
pub async fn launch(
    backend: Backend,
    url: &str,
    dir: TempDir,
    clock: Arc<FakeClock>,
    extra: &[(&str, &str)],
) -> TestApp {
    // The public address is the one bound (unless a test sets its own), so the addresses
    // pages offer (sandbox gateway, OAuth callback, notify URL) are ones a browser can reach.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let mut vars: Vec<(&str, &str)> = vec![("GATEWAY_PUBLIC_URL", public.as_str())];
    vars.extend_from_slice(extra);
    let config = test_config(url, &dir.0, &vars);
    let db = open_database(&config).await.unwrap();
    let app = Application::with_listener(config, clock.clone(), db.clone(), listener).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        clock,
        db,
        state,
        backend,
        shutdown: Some(tx),
        served: Some(served),
        _dir: dir,
    }
}

/// `n` instances on one fresh PostgreSQL database, sharing one fake clock.
pub async fn spawn_cluster(n: usize) -> Vec<TestApp> {
    let first_dir = TempDir(std::env::temp_dir().join(unique_name()));
    std::fs::create_dir_all(&first_dir.0).unwrap();
    let url = fresh_database_url(Backend::Postgres, &first_dir.0).await;
    let clock = FakeClock::at("2026-01-15T04:00:00Z");
    let mut apps = vec![launch(Backend::Postgres, &url, first_dir, clock.clone(), &[]).await];
    for _ in 1..n {
        let dir = TempDir(std::env::temp_dir().join(unique_name()));
        std::fs::create_dir_all(&dir.0).unwrap();
        apps.push(launch(Backend::Postgres, &url, dir, clock.clone(), &[]).await);
    }
    apps
}

/// Status and JSON body (Null when the body is empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// Stops serving and waits until the instance has let go of everything (its tasks,
    /// its claim on a SQLite file), as a graceful stop before a restart does. Returns its
    /// data directory (the SQLite file may live there), which is kept until dropped.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        std::mem::replace(&mut self._dir, TempDir(std::path::PathBuf::new()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Self::answer(resp).await
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text, headers }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, Some(token), None).await
    }

    /// POST without authentication.
    pub async fn post_public(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, None, Some(body)).await
    }

    /// Registers through the API and logs in; returns (user id, token).
    pub async fn register_and_login(&self, email: &str) -> (i64, String) {
        let reg = self.post_public("/api/auth/register", json!({"email": email, "password": "password123"})).await;
        assert_eq!(reg.status, StatusCode::CREATED, "register {email}: {}", reg.text);
        let token = self.login(email, "password123").await;
        (reg.body["user"]["id"].as_i64().unwrap(), token)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let login = self.post_public("/api/auth/login", json!({"email": email, "password": password})).await;
        assert_eq!(login.status, StatusCode::OK, "login {email}: {}", login.text);
        login.body["token"].as_str().unwrap().to_string()
    }

    /// Creates an admin directly (as `codex-gateway admin create` does) and logs in.
    pub async fn admin_token(&self) -> String {
        let email = format!("admin-{}@example.com", unique_name());
        users::create(&self.db, &email, "password123", Role::Admin, self.clock.now()).await.unwrap();
        self.login(&email, "password123").await
    }

    /// Gives a user balance through the admin API (leaves a ledger entry).
    pub async fn fund(&self, admin: &str, user_id: i64, amount: &str) {
        let r = self
            .post(
                &format!("/api/admin/users/{user_id}/balance"),
                admin,
                json!({"amount": amount, "reason": "test funding"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "fund: {}", r.text);
    }

    /// Settles one request of `cost` as the proxy would (hold one cent, settle the cost):
    /// sub-cent charges and debts without an upstream.
    pub async fn spend(&self, user_id: i64, key_id: i64, request_id: &str, cost: &str) {
        use codex_gateway::domain::billing::{self, AdmissionRequest, UsageRecord};
        use codex_gateway::foundation::money::Money;
        let request =
            AdmissionRequest { request_id: None, user_id, api_key_id: key_id, hold: Money::parse("0.01").unwrap() };
        let hold = billing::admit(self.state.env(), &request).await.unwrap();
        let record = UsageRecord {
            request_id: request_id.into(),
            endpoint: "/v1/responses".into(),
            model: "gpt-5".into(),
            status_code: 200,
            input_tokens: 100,
            output_tokens: 20,
            cost: Money::parse(cost).unwrap(),
            ..Default::default()
        };
        billing::settle(self.state.env(), &hold, &record).await.unwrap();
    }

    /// Fails the test if any user's balance differs from their ledger sum.
    pub async fn assert_money_invariants(&self) {
        let mismatches = codex_gateway::domain::ledger::balance_mismatches(&self.db).await.unwrap();
        assert!(mismatches.is_empty(), "balance != ledger sum for {mismatches:?}");
    }
}

/// Declares each listed `async fn(TestApp)` as two tests: on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await
                }
            }
        )*
    };
}

/// Like `on_both_databases!`, with the payment sandbox mounted (`GATEWAY_PAY_SANDBOX=true`).
#[macro_export]
macro_rules! on_both_databases_with_sandbox {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, &[("GATEWAY_PAY_SANDBOX", "true")]).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, &[("GATEWAY_PAY_SANDBOX", "true")]).await).await
                }
            }
        )*
    };
}

/// Merchant id and key the payment tests configure (the sandbox plays this merchant's gateway).
pub const TEST_PID: &str = "1001";
pub const TEST_KEY: &str = "sandbox-secret-key";

impl TestApp {
    /// Creates a package through the admin API; returns its id.
    pub async fn create_package(&self, admin: &str, body: Value) -> i64 {
        let r = self.post("/api/admin/packages", admin, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "create package: {}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    /// Switches Credit payments on, pointed at this app's own sandbox and notify route.
    pub async fn configure_credit(&self, admin: &str) {
        let r = self
            .put(
                "/api/admin/settings",
                admin,
                json!({"credit": {
                    "enabled": true, "pid": TEST_PID, "key": TEST_KEY,
                    "gateway_url": self.url("/sandbox/epay"),
                    "notify_url": self.url("/api/payment/credit/notify"),
                    "return_url": self.url("/packages"),
                }}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "configure credit: {}", r.text);
    }

    /// Runs the hourly package job once at the fake clock's time.
    pub async fn mark_expired(&self) -> u64 {
        codex_gateway::domain::packages::activation::mark_expired(&self.db, self.clock.now()).await.unwrap()
    }

    /// A user's balance as the API shows it.
    pub async fn balance(&self, token: &str) -> String {
        self.get("/api/user/me", token).await.body["balance"].as_str().unwrap().to_string()
    }
}

/// The money and access invariants every reliability test ends with; each query
/// returns the offending rows, so a failure names what broke.
const INVARIANTS: &[(&str, &str)] = &[
    (
        "balance = sum(ledger.amount) per user",
        "SELECT u.id, u.balance, CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM users u \
         LEFT JOIN ledger_entries l ON l.user_id = u.id GROUP BY u.id, u.balance \
         HAVING u.balance <> CAST(COALESCE(SUM(l.amount), 0) AS BIGINT)",
    ),
    (
        "daily_usage.package_used = sum(ledger.package_amount) per user and business date",
        "SELECT d.user_id, d.package_used, (SELECT CAST(COALESCE(SUM(l.package_amount), 0) AS BIGINT) \
           FROM ledger_entries l WHERE l.user_id = d.user_id AND l.business_date = d.business_date) \
         FROM daily_usage d WHERE d.package_used <> (SELECT CAST(COALESCE(SUM(l.package_amount), 0) AS BIGINT) \
           FROM ledger_entries l WHERE l.user_id = d.user_id AND l.business_date = d.business_date)",
    ),
    (
        "package allowance charged in the ledger on a date without a daily_usage row",
        "SELECT l.user_id, l.package_amount, CAST(0 AS BIGINT) FROM ledger_entries l WHERE l.package_amount <> 0 AND NOT EXISTS \
           (SELECT 1 FROM daily_usage d WHERE d.user_id = l.user_id AND d.business_date = l.business_date)",
    ),
    (
        "every usage row with a cost has exactly one ledger entry usage:<request_id>",
        "SELECT g.id, g.cost, (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = 'usage:' || g.request_id) \
         FROM usage_logs g WHERE g.cost > 0 AND \
           (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = 'usage:' || g.request_id) <> 1",
    ),
    (
        "a usage row's package_cost + balance_cost = cost and match its ledger entry",
        "SELECT g.id, g.cost, g.package_cost + g.balance_cost FROM usage_logs g \
         WHERE g.package_cost + g.balance_cost <> g.cost OR (g.cost > 0 AND NOT EXISTS (SELECT 1 FROM ledger_entries l \
           WHERE l.reference = 'usage:' || g.request_id AND l.amount = -g.balance_cost \
             AND l.package_amount = g.package_cost AND l.user_id = g.user_id))",
    ),
    (
        "no ledger usage entry without its usage row",
        "SELECT l.id, l.amount, CAST(0 AS BIGINT) FROM ledger_entries l WHERE l.kind = 'usage' AND NOT EXISTS \
           (SELECT 1 FROM usage_logs g WHERE 'usage:' || g.request_id = l.reference)",
    ),
    (
        "an order is credited at most once and debited at most once",
        "SELECT o.id, (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.amount > 0), \
           (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.amount < 0) \
         FROM payment_orders o WHERE \
           (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.amount > 0) > 1 OR \
           (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.amount < 0) > 1",
    ),
    (
        "a fulfilled or refunded top-up was credited exactly once; an unfulfilled one never",
        "SELECT o.id, (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.kind = 'topup'), CAST(0 AS BIGINT) \
         FROM payment_orders o WHERE o.kind = 'topup' AND \
           (SELECT COUNT(*) FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.kind = 'topup') <> \
           CASE WHEN o.status IN ('fulfilled', 'refunding', 'refunded') THEN 1 ELSE 0 END",
    ),
    (
        "an order created at most one user package; only fulfilled/refunded orders did",
        "SELECT o.id, (SELECT COUNT(*) FROM user_packages p WHERE p.order_id = o.id), CAST(0 AS BIGINT) FROM payment_orders o \
         WHERE (SELECT COUNT(*) FROM user_packages p WHERE p.order_id = o.id) > \
           CASE WHEN o.status IN ('fulfilled', 'refunding', 'refunded') THEN 1 ELSE 0 END",
    ),
    (
        "a delivered package order left a package_purchase ledger row (paid online or from the balance)",
        "SELECT o.id, o.user_id, CAST(0 AS BIGINT) FROM payment_orders o \
         WHERE o.kind = 'package' AND o.user_package_id IS NOT NULL \
           AND o.status IN ('fulfilled', 'refunding', 'refund_confirmed', 'refunded') AND NOT EXISTS \
           (SELECT 1 FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.kind = 'package_purchase')",
    ),
    (
        "a refunded package order left a refund ledger row naming its user package (also when no balance moved)",
        "SELECT o.id, o.user_id, CAST(0 AS BIGINT) FROM payment_orders o \
         WHERE o.kind = 'package' AND o.user_package_id IS NOT NULL AND o.status = 'refunded' AND NOT EXISTS \
           (SELECT 1 FROM ledger_entries l WHERE l.reference = o.out_trade_no AND l.kind = 'refund' \
              AND l.user_package_id = o.user_package_id)",
    ),
    (
        "a fulfilled order has fulfilled_at",
        "SELECT o.id, CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM payment_orders o WHERE o.status IN ('fulfilled', 'refunded') AND o.fulfilled_at IS NULL",
    ),
    (
        "users.held = sum of open holds",
        "SELECT u.id, u.held, CAST(COALESCE(SUM(h.amount), 0) AS BIGINT) FROM users u \
         LEFT JOIN holds h ON h.user_id = u.id GROUP BY u.id, u.held \
         HAVING u.held <> CAST(COALESCE(SUM(h.amount), 0) AS BIGINT)",
    ),
];

impl TestApp {
    /// Every violated invariant with its offending rows (empty when all hold).
    pub async fn invariant_violations(&self) -> Vec<String> {
        invariant_violations(&self.db).await
    }

    /// Waits for background settlements, then fails the test on any violated invariant.
    pub async fn assert_all_invariants(&self) {
        self.wait_until_settled().await;
        let violations = self.invariant_violations().await;
        assert!(violations.is_empty(), "invariants violated:\n{}", violations.join("\n"));
    }

    /// Waits (bounded) until no background work (settlements, and admissions written
    /// while their request was already upstream) is left and no hold is open.
    pub async fn wait_until_settled(&self) {
        for _ in 0..400 {
            let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds").fetch_one(self.db.pool()).await.unwrap();
            if open == 0 && self.state.tasks.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

/// The invariant check on any database handle (also used by the crash test's reopen).
pub async fn invariant_violations(db: &Db) -> Vec<String> {
    let mut out = Vec::new();
    for (name, sql) in INVARIANTS {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(sql).fetch_all(db.pool()).await.unwrap();
        if !rows.is_empty() {
            out.push(format!("{name}: {rows:?}"));
        }
    }
    out
}

/// Prints the machine-readable line `scripts/reliability-report` collects.
pub fn report(scenario: &str, backend: Backend, figures: &[(&str, u64)], violations: usize) {
    let db = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let figures: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RELIABILITY|{scenario}|db={db}|{}|violations={violations}", figures.join("|"));
}

/// Spawns the app on an existing, empty database (e.g. on a private PostgreSQL cluster
/// a test may stop and start).
pub async fn spawn_app_on(database_url: &str, backend: Backend) -> TestApp {
    let dir = TempDir(std::env::temp_dir().join(unique_name()));
    std::fs::create_dir_all(&dir.0).unwrap();
    launch(backend, database_url, dir, FakeClock::at("2026-01-15T04:00:00Z"), &[]).await
}

/// A payment notify as the gateway would sign it, with optional overrides applied
/// before signing (so a tampered field still carries a valid signature).
pub fn signed_notify(
    out_trade_no: &str,
    trade_no: &str,
    money: &str,
    overrides: &[(&str, &str)],
) -> codex_gateway::domain::payment::epay::Params {
    let mut p: codex_gateway::domain::payment::epay::Params = [
        ("pid", TEST_PID),
        ("trade_no", trade_no),
        ("out_trade_no", out_trade_no),
        ("type", "epay"),
        ("name", "月度会员"),
        ("money", money),
        ("trade_status", "TRADE_SUCCESS"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        p.insert(k.to_string(), v.to_string());
    }
    codex_gateway::domain::payment::epay::signed(p, TEST_KEY)
}

impl TestApp {
    /// Delivers a notify the way the gateway does (GET with a query string).
    pub async fn send_notify(&self, params: &codex_gateway::domain::payment::epay::Params) -> (StatusCode, String) {
        let r = self.client.get(self.url("/api/payment/credit/notify")).query(params).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// A single integer from SQL (counts and sums in assertions).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(self.db.pool()).await.unwrap()
    }
}

/// `n` instances on one fresh PostgreSQL database with extra configuration (e.g. `REDIS_URL`).
pub async fn spawn_cluster_with(n: usize, extra: &[(&str, &str)]) -> Vec<TestApp> {
    let clock = FakeClock::at("2026-01-15T04:00:00Z");
    let mut apps: Vec<TestApp> = Vec::new();
    let mut url = String::new();
    for _ in 0..n {
        let dir = TempDir(std::env::temp_dir().join(unique_name()));
        std::fs::create_dir_all(&dir.0).unwrap();
        if url.is_empty() {
            url = fresh_database_url(Backend::Postgres, &dir.0).await;
        }
        apps.push(launch(Backend::Postgres, &url, dir, clock.clone(), extra).await);
    }
    apps
}

/// A private `redis-server` on a free loopback port, stopped on drop. None (with a loud
/// message) when the binary is missing, unless `TEST_REQUIRE_REDIS=1` (CI) makes that a failure.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("TEST_REQUIRE_REDIS").as_deref() != Ok("1"),
                    "TEST_REQUIRE_REDIS=1 but redis-server cannot start: {e}"
                );
                eprintln!("\n*** SKIPPED: redis-server is not installed ({e}); apt-get install redis-server ***\n");
                return None;
            }
        };
        let server = RedisServer { child: Some(child), url: format!("redis://127.0.0.1:{port}/0") };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        for _ in 0..200 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                    return Some(server);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {port} did not answer PING");
    }

    /// Kills the server (to test what happens while Redis is down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
