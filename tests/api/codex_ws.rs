//! The Responses WebSocket transport (bridged to HTTP upstreams) and remote
//! compaction: the same admission, usage rows and exact charges as the HTTP path.
//! (What an idle socket costs is measured in `tests/ws_memory.rs`, a binary of its own.)

use std::sync::Arc;
use std::time::Duration;

use codex_gateway::domain::proxy::mock::MockOptions;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{spawn_app_with, TestApp};
use crate::on_both_databases;
use crate::proxy::{balance_and_held, setup, usage_rows, v1};

on_both_databases!(
    two_responses_on_one_socket_bill_exactly_and_the_follow_up_carries_the_whole_conversation,
    a_follow_up_sent_before_the_upstream_closes_its_stream_is_answered,
    a_refused_user_gets_an_in_band_usage_limit_frame_and_nothing_is_forwarded,
    a_bad_key_is_refused_at_the_handshake,
    a_socket_dropped_mid_response_is_settled_once,
    an_old_connection_is_told_to_reconnect_the_way_codex_expects,
    a_remote_compaction_is_proxied_and_billed_like_a_response,
    a_conversation_past_the_body_limit_is_refused_with_a_clear_error_and_not_forwarded,
);

/// gpt-5 list price for the mock's usage: 4025 micro-USD a response.
const COST: i64 = 4_025;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(app: &TestApp, key: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    connect_with_answer(app, key).await.map(|(socket, _)| socket)
}

/// [`connect`], also giving the handshake answer (its headers).
pub async fn connect_with_answer(
    app: &TestApp,
    key: &str,
) -> Result<(Socket, tokio_tungstenite::tungstenite::handshake::client::Response), tokio_tungstenite::tungstenite::Error>
{
    let url = app.url("/v1/responses").replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request.headers_mut().insert("openai-beta", "responses_websockets=2026-02-06".parse().unwrap());
    request.headers_mut().insert("session_id", "session-1".parse().unwrap());
    // Small client buffers, so the idle-memory figure is mostly the server's.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    tokio_tungstenite::connect_async_with_config(request, Some(config), false).await
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::Text(frame.to_string().into())).await.unwrap();
}

/// Text frames up to and including `response.completed` or an `error` frame.
async fn until_done(socket: &mut Socket) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        let event: Value = serde_json::from_str(&text).unwrap();
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        events.push(event);
        if kind == "response.completed" || kind == "error" {
            return events;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

async fn two_responses_on_one_socket_bill_exactly_and_the_follow_up_carries_the_whole_conversation(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let mut socket = connect(&app, &s.key).await.unwrap();
    let first = json!({"type": "response.create", "model": "gpt-5", "instructions": "be brief",
                       "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]});
    send(&mut socket, first).await;
    let events = until_done(&mut socket).await;
    let k = kinds(&events);
    assert_eq!(k.first(), Some(&"codex.rate_limits"), "{k:?}");
    assert_eq!(events[0]["credits"]["balance"], "10.00");
    assert!(k.contains(&"response.output_text.delta") && k.last() == Some(&"response.completed"), "{k:?}");
    let seen: Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    assert_eq!(seen["stream"], true);
    assert!(seen.get("type").is_none(), "the frame type is not sent upstream");
    assert!(s.mock.last().unwrap().headers.get("openai-beta").is_none());
    assert_eq!(s.mock.last().unwrap().headers.get("session_id").unwrap(), "session-1");

    // Codex's follow-up: the previous response's id and only the new input.
    let follow_up = json!({"type": "response.create", "model": "gpt-5", "instructions": "be brief",
                           "previous_response_id": "resp_mock",
                           "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "more"}]}]});
    send(&mut socket, follow_up).await;
    let events = until_done(&mut socket).await;
    assert_eq!(kinds(&events).last(), Some(&"response.completed"));
    let seen: Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    let input = seen["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "first input, the assistant's answer, the new input: {seen}");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[2]["content"][0]["text"], "more");
    assert!(seen.get("previous_response_id").is_none());

    let rows = usage_rows(&app, 2).await;
    assert!(
        rows.iter().all(|r| r.endpoint == "/responses" && r.cost == COST && r.streamed && r.error.is_none()),
        "{rows:?}"
    );
    assert_eq!(s.mock.requests(), 2);
    app.wait_until_settled().await;
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - 2 * COST, 0));
    app.assert_money_invariants().await;
}

/// Codex sends its next `response.create` as soon as it has `response.completed`; an
/// upstream may still be closing its stream then. The frame is queued, not dropped.
async fn a_follow_up_sent_before_the_upstream_closes_its_stream_is_answered(app: TestApp) {
    let options = MockOptions { tail: Duration::from_millis(1500), ..MockOptions::default() };
    let s = setup(&app, options, Some("10")).await;
    let mut socket = connect(&app, &s.key).await.unwrap();
    let create = |text: &str| {
        json!({"type": "response.create", "model": "gpt-5",
               "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]})
    };
    send(&mut socket, create("one")).await;
    assert_eq!(kinds(&until_done(&mut socket).await).last(), Some(&"response.completed"));
    // The upstream body stays open 1.5 s more: both frames (sent at once) arrive inside it.
    send(&mut socket, json!({"type": "response.processed", "response_id": "resp_mock"})).await;
    send(&mut socket, create("two")).await;
    assert_eq!(kinds(&until_done(&mut socket).await).last(), Some(&"response.completed"));
    let seen: Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    assert_eq!(seen["input"][0]["content"][0]["text"], "two");
    assert_eq!(usage_rows(&app, 2).await.len(), 2);
    assert_eq!(s.mock.requests(), 2);
    app.wait_until_settled().await;
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - 2 * COST, 0));
}

async fn a_refused_user_gets_an_in_band_usage_limit_frame_and_nothing_is_forwarded(app: TestApp) {
    let s = setup(&app, MockOptions::default(), None).await;
    let mut socket = connect(&app, &s.key).await.unwrap();
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": []})).await;
    let events = until_done(&mut socket).await;
    let error = events.last().unwrap();
    // The frame Codex maps like the HTTP 429: status, error (type usage_limit_reached) and headers.
    assert_eq!(error["type"], "error");
    assert_eq!(error["status"], 429);
    assert_eq!(error["error"]["type"], "usage_limit_reached");
    assert_eq!(error["error"]["code"], "insufficient_balance");
    assert!(error["headers"]["x-codex-promo-message"].is_string(), "{error}");
    assert_eq!(s.mock.requests(), 0);
    // The connection stays usable: a malformed frame gets an error frame too.
    socket.send(Message::Text("{".into())).await.unwrap();
    let events = until_done(&mut socket).await;
    assert_eq!(events.last().unwrap()["error"]["code"], "invalid_json");
    assert_eq!(balance_and_held(&app, s.user_id).await, (0, 0));
}

async fn a_bad_key_is_refused_at_the_handshake(app: TestApp) {
    let _s = setup(&app, MockOptions::default(), Some("1")).await;
    match connect(&app, "sk-not-a-key").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert!(body["error"]["code"].is_string(), "{body}");
        }
        other => panic!("expected an HTTP 401, got {:?}", other.map(|_| ())),
    }
    // Without an upgrade, GET /v1/responses is not a WebSocket handshake.
    let plain = app.client.get(app.url("/v1/responses")).send().await.unwrap();
    assert!(plain.status().is_client_error(), "{}", plain.status());
}

async fn a_socket_dropped_mid_response_is_settled_once(app: TestApp) {
    let gate = Arc::new(Semaphore::new(0));
    let options = MockOptions { gate: Some(gate.clone()), ..MockOptions::default() };
    let s = setup(&app, options, Some("10")).await;
    let mut socket = connect(&app, &s.key).await.unwrap();
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": "hi"})).await;
    // The rate-limit event and response.created arrive; then the mock waits on the gate.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
    }
    drop(socket);
    gate.add_permits(100);
    let rows = usage_rows(&app, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error.as_deref(), Some("client disconnected before the end"));
    app.wait_until_settled().await;
    let (balance, held) = balance_and_held(&app, s.user_id).await;
    assert_eq!((balance, held), (10_000_000 - rows[0].cost, 0), "charged once, hold released");
    app.assert_money_invariants().await;
}

async fn an_old_connection_is_told_to_reconnect_the_way_codex_expects(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let mut socket = connect(&app, &s.key).await.unwrap();
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": "hi"})).await;
    assert_eq!(kinds(&until_done(&mut socket).await).last(), Some(&"response.completed"));
    app.clock.advance(chrono::Duration::minutes(61));
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": "hi"})).await;
    let events = until_done(&mut socket).await;
    assert_eq!(events.last().unwrap()["error"]["code"], "websocket_connection_limit_reached");
    let closed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
    assert!(matches!(closed, Some(Ok(Message::Close(_))) | None), "{closed:?}");
    assert_eq!(s.mock.requests(), 1, "the refused request was not forwarded");
    usage_rows(&app, 1).await;
}

async fn a_remote_compaction_is_proxied_and_billed_like_a_response(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let resp = v1(&app, "/v1/responses/compact", &s.key)
        .json(&json!({"model": "gpt-5", "instructions": "x", "input": [{"role": "user", "content": "long history"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("x-codex-credits-balance").unwrap(), "10.00");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["output"][0]["type"], "message", "{body}");
    assert_eq!(s.mock.last().unwrap().path, "/v1/responses/compact");
    let rows = usage_rows(&app, 1).await;
    assert_eq!((rows[0].endpoint.as_str(), rows[0].cost, rows[0].streamed), ("/responses/compact", COST, false));
    app.wait_until_settled().await;
    assert_eq!(balance_and_held(&app, s.user_id).await, (10_000_000 - COST, 0));
}

/// The socket keeps each conversation to expand the next follow-up; what it keeps is
/// capped at the request body limit (the expanded conversation is the next request body).
async fn a_conversation_past_the_body_limit_is_refused_with_a_clear_error_and_not_forwarded(app: TestApp) {
    let small = spawn_app_with(app.backend, &[("GATEWAY_MAX_BODY_BYTES", "4096")]).await;
    drop(app);
    let s = setup(&small, MockOptions::default(), Some("10")).await;
    let mut socket = connect(&small, &s.key).await.unwrap();
    let message =
        |text: String| json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]});
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": [message("a".repeat(2500))]})).await;
    assert_eq!(kinds(&until_done(&mut socket).await).last(), Some(&"response.completed"));
    let follow_up = json!({"type": "response.create", "model": "gpt-5", "previous_response_id": "resp_mock",
                           "input": [message("b".repeat(1500))]});
    send(&mut socket, follow_up).await;
    let events = until_done(&mut socket).await;
    let error = events.last().unwrap();
    assert_eq!((error["type"].as_str(), error["status"].as_u64()), (Some("error"), Some(413)), "{events:?}");
    assert_eq!(error["error"]["code"], "conversation_too_large");
    assert!(error["error"]["message"].as_str().unwrap().contains("4096-byte"), "{error}");
    // The socket stays usable: a new conversation (no previous_response_id) is served.
    send(&mut socket, json!({"type": "response.create", "model": "gpt-5", "input": [message("c".into())]})).await;
    assert_eq!(kinds(&until_done(&mut socket).await).last(), Some(&"response.completed"));
    assert_eq!(s.mock.requests(), 2, "the refused follow-up was not forwarded");
    let rows = usage_rows(&small, 2).await;
    assert!(rows.iter().all(|r| r.cost == COST), "{rows:?}");
}
