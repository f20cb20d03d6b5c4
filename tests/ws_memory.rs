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

use codex_gateway::domain::proxy::mock::{serve_mock, MockHandle, MockOptions};
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

/// A funded user's key, with the mock upstream behind the gateway.
async fn key(app: &TestApp) -> (String, MockHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions::default()).await.unwrap();
    let admin = app.admin_token().await;
    let r = app
        .post("/api/admin/upstreams", &admin, json!({"name": "mock", "base_url": mock.base_url(), "api_key": "sk-up"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (user_id, token) = app.register_and_login("idle@example.com").await;
    app.fund(&admin, user_id, "100").await;
    let key = app.post("/api/user/keys", &token, json!({"name": "idle"})).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    (key.body["key"].as_str().unwrap().to_string(), mock)
}

/// One `response.create` of about `bytes` bytes sent as a client frame by hand (masked
/// with a zero key, which leaves the payload as it is), read until its response completes.
async fn one_turn(tcp: &mut TcpStream, bytes: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = "x".repeat(bytes);
    let payload = json!({"type": "response.create", "model": "gpt-5",
                         "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]})
    .to_string();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload.as_bytes());
    tcp.write_all(&frame).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"type\":\"response.completed\"") {
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the server closed the socket: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
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

/// What a socket keeps once its first response is done and it waits for the next: the
/// conversation (to expand a follow-up) and tungstenite's read buffer, which keeps the
/// capacity of the largest frame read.
async fn per_socket_after_a_turn(app: &TestApp, key: &str, frame_bytes: usize) -> i64 {
    const N: i64 = 20;
    let mut sockets = Vec::new();
    let before = settled().await;
    for _ in 0..N {
        let mut tcp = raw_handshake(app, key).await;
        one_turn(&mut tcp, frame_bytes).await;
        sockets.push(tcp);
    }
    let after = settled().await;
    let per_socket = (after.0 - before.0) / N;
    eprintln!(
        "AFTER_TURN {:?}: {per_socket} bytes live heap per socket after one {frame_bytes}-byte turn",
        app.backend
    );
    drop(sockets);
    per_socket
}

async fn per_idle_socket(backend: Backend) -> i64 {
    let app = spawn_app(backend).await;
    let (key, _mock) = key(&app).await;
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
    let frame = 64 * 1024;
    let after_turn = per_socket_after_a_turn(&app, &key, frame).await;
    // The conversation (the frame's input and the answer, as JSON text) and a read
    // buffer of the frame's size, plus the idle cost: about twice the frame.
    assert!(after_turn <= 3 * frame as i64 + TARGET, "{after_turn} bytes per socket after a {frame}-byte turn");
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
