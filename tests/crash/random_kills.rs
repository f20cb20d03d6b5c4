//! `kill -9` at random instants under mixed streaming load, on SQLite and PostgreSQL,
//! with one and three instances: after the restarts (each replays its crash journal),
//! the usage log holds exactly one row per request the upstream received — none lost,
//! none twice — balances equal their ledgers and no hold is left.
//!
//! What "random" excludes in the gated scenarios: an instance is killed only once every
//! request sent to it has reached the upstream (its answer's headers are back), so the one
//! window the journal cannot decide — between a request's journal line and its bytes
//! reaching the upstream socket — is not what they measure; everything after it is:
//! streams mid-body, answers mid-transfer, settlements waiting in the writer's batch.
//! The ungated scenarios kill at any instant at all (requests mid-admission and
//! mid-forward included) and measure that window — since the `forwarded` line is written
//! when hyper first polls the request body on its upstream connection (`proxy::outgoing`),
//! it is the few microseconds before that poll's write, plus however long the thread is
//! descheduled there: a request charged on its estimate that the upstream never received
//! is counted (`charged_not_received`), and must be the only difference — none lost, none
//! twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_gateway::app::{open_database, Application};
use codex_gateway::domain::proxy::mock::{serve_mock, MockOptions};
use futures::StreamExt;
use rand::Rng;
use serde_json::json;

use super::helpers::{fresh_database_url, invariant_violations, report, test_config, Backend, FakeClock, TempDir};
use super::{create_admin, provision, sqlite_url, start_on, wait_ready, Gateway};

/// Kills per scenario (`CRASH_KILLS` overrides; the issue asks for 20).
fn kills() -> usize {
    std::env::var("CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

struct Instance {
    dir: std::path::PathBuf,
    port: u16,
    gateway: Gateway,
}

/// What the load and the killer share about one instance.
#[derive(Default)]
struct Gate {
    /// New requests may be sent to it.
    open: AtomicBool,
    /// Requests sent (or about to be) whose answer headers are not back yet.
    sending: AtomicUsize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// When the killer strikes.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// Once every request sent to the victim has its answer's headers back.
    Gated,
    /// At any instant.
    Anywhere,
}

async fn scenario(backend: Backend, instances: usize, kill: Kill) {
    let _alone = super::ONE_AT_A_TIME.lock().await;
    let root = TempDir(std::env::temp_dir().join(format!("cg-kills-{}-{}", std::process::id(), rand::random::<u32>())));
    std::fs::create_dir_all(&root.0).unwrap();
    let url = match backend {
        Backend::Sqlite => sqlite_url(&root.0),
        Backend::Postgres => fresh_database_url(Backend::Postgres, &root.0).await,
    };
    create_admin(&root.0, &url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = MockOptions { chunks: 8, delay: Duration::from_millis(15), ..MockOptions::default() };
    let mock = serve_mock(listener, options).await.unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    let mut fleet = Vec::new();
    for i in 0..instances {
        let dir = root.0.join(format!("instance-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let gateway = start_on(&dir, port, &url);
        wait_ready(&client, &gateway.base).await;
        fleet.push(Instance { dir, port, gateway });
    }
    let base = fleet[0].gateway.base.clone();
    let key = provision(&client, &base, &mock.base_url(), "100.00").await.key;

    let ports: Vec<u16> = fleet.iter().map(|i| i.port).collect();
    let gates: Arc<Vec<Gate>> =
        Arc::new((0..instances).map(|_| Gate { open: AtomicBool::new(true), sending: AtomicUsize::new(0) }).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..(4 * instances).max(6) {
        let (gates, stop, client, key, ports) =
            (gates.clone(), stop.clone(), client.clone(), key.clone(), ports.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let target = (w + n) % ports.len();
                let gate = &gates[target];
                // Counted before the gate is read (and the killer closes the gate before it
                // reads the count), so no request can slip past a closing gate unseen.
                gate.sending.fetch_add(1, Ordering::SeqCst);
                if !gate.open.load(Ordering::SeqCst) {
                    gate.sending.fetch_sub(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let stream = n.is_multiple_of(2);
                let body = json!({"model": "gpt-5", "stream": stream, "input": format!("turn {n} of worker {w}")});
                let sent = client
                    .post(format!("http://127.0.0.1:{}/v1/responses", ports[target]))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await;
                gate.sending.fetch_sub(1, Ordering::SeqCst);
                if let Ok(answer) = sent {
                    let mut body = answer.bytes_stream();
                    while let Some(Ok(_)) = body.next().await {}
                }
            }
        }));
    }

    let kills = kills();
    let started = Instant::now();
    for _ in 0..kills {
        let pause = rand::thread_rng().gen_range(80..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::thread_rng().gen_range(0..instances);
        let instance = &mut fleet[victim];
        let gate = &gates[victim];
        gate.open.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill == Kill::Gated && gate.sending.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "requests to instance {victim} never got an answer");
            tokio::task::yield_now().await;
        }
        instance.gateway.child.kill().unwrap(); // SIGKILL
        instance.gateway.child.wait().unwrap();
        instance.gateway = start_on(&instance.dir, instance.port, &url);
        wait_ready(&client, &instance.gateway.base).await;
        gate.open.store(true, Ordering::SeqCst);
    }
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();

    // The last word: every instance dies too, and what is left is replayed.
    let config = test_config(&url, &root.0, &[]);
    let db = open_database(&config).await.unwrap();
    for instance in &mut fleet {
        instance.gateway.child.kill().unwrap();
        instance.gateway.child.wait().unwrap();
        let config = test_config(&url, &instance.dir, &[]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = FakeClock::at(&chrono::Utc::now().to_rfc3339());
        drop(Application::with_listener(config, clock, db.clone(), listener).await.unwrap());
    }

    let scalar = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.unwrap() }
    };
    let rows = scalar("SELECT COUNT(*) FROM usage_logs").await;
    let distinct = scalar("SELECT COUNT(DISTINCT request_id) FROM usage_logs").await;
    let holds = scalar("SELECT COUNT(*) FROM holds").await;
    let held = scalar("SELECT CAST(COALESCE(SUM(held), 0) AS BIGINT) FROM users").await;
    let estimated = scalar("SELECT COUNT(*) FROM usage_logs WHERE error LIKE 'the gateway stopped%'").await;
    let answered = mock.requests() as i64;
    let violations = invariant_violations(&db).await;
    let lost = (answered - rows).max(0);
    // Ungated only: requests journaled, then killed before their bytes reached the upstream.
    let not_received = (rows - answered).max(0);
    let name = format!(
        "crash_kill9_{}_{instances}_instance{}",
        if kill == Kill::Gated { "random" } else { "anywhere" },
        if instances == 1 { "" } else { "s" }
    );
    let mut figures = vec![
        ("kills", kills as u64),
        ("requests", answered as u64),
        ("seconds", elapsed.as_secs()),
        ("charged_on_estimate", estimated as u64),
        ("lost", lost as u64),
        ("charged_twice", (rows - distinct) as u64),
    ];
    let exact = match kill {
        Kill::Gated => rows == answered,
        Kill::Anywhere => {
            figures.push(("charged_not_received", not_received as u64));
            lost == 0
        }
    };
    report(&name, backend, &figures, violations.len() + usize::from(!exact) + usize::from(holds != 0));
    match kill {
        Kill::Gated => assert_eq!(rows, answered, "usage rows vs requests the upstream received"),
        Kill::Anywhere => {
            assert_eq!(lost, 0, "a request the upstream received went unbilled");
            // Each such request is one the journal had written and whose bytes never left:
            // at most the requests in flight when a kill struck, and each one on its estimate.
            assert!(not_received <= estimated, "{not_received} charged without upstream, {estimated} on estimate");
        }
    }
    assert_eq!(rows, distinct, "a request id was charged twice");
    assert_eq!((holds, held), (0, 0), "holds left after the replay");
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_of_one_sqlite_instance_lose_and_double_no_charge() {
    scenario(Backend::Sqlite, 1, Kill::Gated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_of_one_postgres_instance_lose_and_double_no_charge() {
    scenario(Backend::Postgres, 1, Kill::Gated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_among_three_postgres_instances_lose_and_double_no_charge() {
    scenario(Backend::Postgres, 3, Kill::Gated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_any_instant_of_one_sqlite_instance_lose_and_double_no_charge() {
    scenario(Backend::Sqlite, 1, Kill::Anywhere).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_any_instant_among_three_postgres_instances_lose_and_double_no_charge() {
    scenario(Backend::Postgres, 3, Kill::Anywhere).await;
}
