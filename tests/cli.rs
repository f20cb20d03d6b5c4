//! The binary as an operator uses it: first start, admin creation, migrate, health check,
//! configuration errors, graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_codex-gateway"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cg-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn version_prints_the_package_version() {
    let out = bin().arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_setting_stops_start_up_and_names_itself() {
    let dir = temp_dir("bad");
    let out = bin().arg("serve").env("GATEWAY_DATA_DIR", &dir).env("GATEWAY_TIMEZONE", "Moon/Base").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_TIMEZONE"));
}

#[test]
fn migrate_and_admin_create_work_on_a_fresh_sqlite_data_dir() {
    let dir = temp_dir("admin");
    let migrate = bin().arg("migrate").env("GATEWAY_DATA_DIR", &dir).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(dir.join("gateway.db").exists(), "the SQLite file lives under the data dir");
    assert!(dir.join("secret").exists(), "a generated secret is kept");
    let create = || {
        bin()
            .args(["admin", "create", "--email", "root@example.com", "--password", "password123"])
            .env("GATEWAY_DATA_DIR", &dir)
            .output()
            .unwrap()
    };
    let first = create();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = create();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already registered"));
}

#[test]
fn serve_answers_health_checks_and_stops_gracefully_on_sigterm() {
    let dir = temp_dir("serve");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = bin()
        .arg("serve")
        .env("GATEWAY_DATA_DIR", &dir)
        .env("GATEWAY_LISTEN", &listen)
        .env("GATEWAY_ADMIN_EMAIL", "boot@example.com")
        .env("GATEWAY_ADMIN_PASSWORD", "password123")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the process to bind (start-up, not a timing assumption of the test).
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let check =
            bin().arg("healthcheck").env("GATEWAY_DATA_DIR", &dir).env("GATEWAY_LISTEN", &listen).output().unwrap();
        if check.status.success() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ready, "server did not become ready");
    let again = bin()
        .args(["admin", "create", "--email", "boot@example.com", "--password", "password123"])
        .env("GATEWAY_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(!again.status.success(), "GATEWAY_ADMIN_EMAIL created the first admin at start");
    send_sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
}

/// Waits until the instance on `listen` answers its health check (start-up, not a timing
/// assumption of the test).
fn wait_healthy(dir: &std::path::Path, listen: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check =
            bin().arg("healthcheck").env("GATEWAY_DATA_DIR", dir).env("GATEWAY_LISTEN", listen).output().unwrap();
        if check.status.success() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve_on(dir: &std::path::Path, listen: &str) -> Command {
    let mut c = bin();
    c.arg("serve").env("GATEWAY_DATA_DIR", dir).env("GATEWAY_LISTEN", listen);
    c
}

/// A second instance on one SQLite file refuses to start and says why; an instance
/// killed with SIGKILL does not block its own restart.
#[test]
fn a_second_instance_on_one_sqlite_file_refuses_to_start_and_a_killed_one_restarts() {
    let dir = temp_dir("single");
    let first_listen = format!("127.0.0.1:{}", free_port());
    let mut first = serve_on(&dir, &first_listen).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_healthy(&dir, &first_listen), "the first instance did not become ready");

    let second_listen = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let second = serve_on(&dir, &second_listen).output().unwrap();
    assert!(!second.status.success(), "a second instance on the same SQLite file must not serve");
    assert!(started.elapsed() < Duration::from_secs(20), "the refusal comes at start, not after a hang");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already serving the SQLite database"), "{stderr}");
    assert!(stderr.contains(&format!("process {}", first.id())), "names the holder: {stderr}");
    assert!(stderr.contains("PostgreSQL"), "says what to do instead: {stderr}");
    assert!(
        std::net::TcpStream::connect(&second_listen).is_err(),
        "the refused instance is not listening on {second_listen}"
    );
    // The first instance is unaffected.
    assert!(wait_healthy(&dir, &first_listen));

    // kill -9: the kernel drops the lock with the process, so the restart is not blocked.
    first.kill().unwrap();
    first.wait().unwrap();
    let log = dir.join("restart.log");
    let mut restarted = serve_on(&dir, &second_listen)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    if !wait_healthy(&dir, &second_listen) {
        let _ = restarted.kill();
        let _ = restarted.wait();
        panic!("the restart after kill -9 did not serve: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    send_sigterm(restarted.id());
    let status = restarted.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    // A graceful stop releases the file too.
    let mut again = serve_on(&dir, &first_listen).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_healthy(&dir, &first_listen), "a start after a graceful stop serves");
    send_sigterm(again.id());
    assert!(again.wait().unwrap().success());
    // Reached only when every check above held (scripts/reliability-report).
    println!("RELIABILITY|sqlite_second_instance_refused|db=sqlite|starts=4|refused=1|faults=1|violations=0");
    let _ = std::fs::remove_dir_all(&dir);
}

fn send_sigterm(pid: u32) {
    let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

/// Several instances starting together on one PostgreSQL database migrate it once.
#[test]
fn concurrent_migrations_on_postgres_apply_each_version_once() {
    use sqlx::{Connection, Executor};
    let admin = std::env::var("TEST_POSTGRES_URL")
        .expect("TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts PostgreSQL");
    let name = format!("cg_cli_{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    });
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let dir = temp_dir("pgmigrate");
    let children: Vec<_> = (0..3)
        .map(|_| {
            bin()
                .arg("migrate")
                .env("DATABASE_URL", &url)
                .env("GATEWAY_DATA_DIR", &dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let count: i64 = runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations").fetch_one(&mut conn).await.unwrap()
    });
    assert_eq!(count as usize, codex_gateway::foundation::db::MIGRATIONS.len());
}
