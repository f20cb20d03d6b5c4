//! What one idle Responses WebSocket costs the server, counted by the allocator rather
//! than read from the resident set (which moves with arenas, threads and other tests).
//!
//! A binary of its own: the counting allocator below is process-wide, so nothing else
//! may run beside the measurement. One test runs both databases one after the other.
//! The client end of each socket is a bare TCP stream after a hand-made handshake, so
//! what the counter adds per socket is the server's task, upgraded connection and
//! WebSocket state (the tokio stream of the client end is counted too; it is small).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use helpers::{spawn_app, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpStream;

/// Live heap bytes, in total and by size class (class `k` holds blocks of 2^(k-1)+1..=2^k bytes).
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static BY_CLASS: [AtomicI64; 40] = [const { AtomicI64::new(0) }; 40];

fn class(size: usize) -> usize {
    (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize
}

fn count(size: usize, sign: i64) {
    LIVE.fetch_add(sign * size as i64, Ordering::Relaxed);
    BY_CLASS[class(size).min(39)].fetch_add(sign * size as i64, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn snapshot() -> (i64, Vec<i64>) {
    (LIVE.load(Ordering::Relaxed), BY_CLASS.iter().map(|c| c.load(Ordering::Relaxed)).collect())
}

/// The target for an idle socket, server side.
const TARGET: i64 = 64 * 1024;

const SOCKETS: i64 = 200;

async fn key(app: &TestApp) -> String {
    let (_, token) = app.register_and_login("idle@example.com").await;
    let key = app.post("/api/user/keys", &token, json!({"name": "idle"})).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    key.body["key"].as_str().unwrap().to_string()
}

/// A WebSocket handshake done by hand: the client end stays a bare TCP stream.
async fn raw_handshake(app: &TestApp, key: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /v1/responses HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         OpenAI-Beta: responses_websockets=2026-02-06\r\nsession_id: s\r\n\
         Authorization: Bearer {key}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer));
    tcp
}

/// Live bytes once the server has settled (upgrade tasks spawned and parked): polled
/// until two readings a while apart agree, with a generous bound.
async fn settled() -> (i64, Vec<i64>) {
    let mut last = snapshot();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = snapshot();
        if (now.0 - last.0).abs() < 4 * 1024 {
            return now;
        }
        last = now;
    }
    last
}

/// Resident set of this process, for comparison (allocator arenas make it coarse).
fn resident_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn per_idle_socket(backend: Backend) -> i64 {
    let app = spawn_app(backend).await;
    let key = key(&app).await;
    // Warm-up: pools, caches, the key's cache entry, slab pages.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(raw_handshake(&app, &key).await);
    }
    let before = settled().await;
    let rss_before = resident_kib();
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(raw_handshake(&app, &key).await);
    }
    let after = settled().await;
    let per_socket = (after.0 - before.0) / SOCKETS;
    let rss = (resident_kib() - rss_before) * 1024 / SOCKETS;
    let classes: Vec<String> = (0..40)
        .filter_map(|k| {
            let d = (after.1[k] - before.1[k]) / SOCKETS;
            (d.abs() >= 64).then(|| format!("<={}B: {d}", 1u64 << k))
        })
        .collect();
    eprintln!(
        "IDLE_SOCKET {backend:?}: {per_socket} bytes live heap per idle WebSocket ({rss} bytes resident); \
         by block size: {classes:?}"
    );
    drop(sockets);
    drop(warm);
    per_socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_costs_the_server_at_most_64_kib() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && std::env::var_os("TEST_POSTGRES_URL").is_none() {
            assert!(std::env::var_os("CI").is_none(), "TEST_POSTGRES_URL is required in CI");
            eprintln!("SKIPPED on PostgreSQL: TEST_POSTGRES_URL is not set");
            continue;
        }
        let per_socket = per_idle_socket(backend).await;
        assert!(per_socket <= TARGET, "{backend:?}: {per_socket} bytes per idle socket (target {TARGET})");
    }
}
