//! The WebSocket transport of the Responses API (`GET /v1/responses` with an upgrade),
//! as the Codex CLI speaks it (openai/codex `codex-api/src/endpoint/responses_websocket.rs`):
//! the client sends `response.create` frames (a Responses request with a `type`), the
//! server answers each with the same event JSON the SSE stream carries, one text frame
//! per event, until `response.completed`; several responses share one connection.
//!
//! Upstreams speak HTTP: every `response.create` becomes one streamed `POST /responses`
//! through [`forward::proxy_with_quota`], so admission, limits, failover, metering, the
//! usage row and its single settlement are those of the HTTP path (a socket dropping
//! mid-response drops the metered body, which settles it as a disconnect).
//!
//! What the socket adds:
//! - `previous_response_id` naming the connection's last response: Codex then sends only
//!   the new input items. The gateway keeps that response's full input and output items
//!   (as JSON text) and sends the whole conversation upstream (an HTTP upstream has no
//!   connection state), so any healthy upstream can serve the next turn. What it keeps
//!   is capped at the request body limit (the expanded conversation *is* the next
//!   request's body): past it the baseline is let go and a follow-up gets a
//!   `conversation_too_large` error saying to compact or start a new session.
//! - `generate: false` (Codex's pre-warm): nothing is generated, so nothing is sent
//!   upstream or billed; the input becomes the baseline of the next request.
//! - a `codex.rate_limits` event before each response (the quota headers of the HTTP
//!   path), and refusals as in-band `error` frames with `status`, `error` and `headers`,
//!   which Codex maps exactly like the HTTP answer.
//! - an age cap: after [`MAX_CONNECTION_AGE`] the next request is answered with the
//!   `websocket_connection_limit_reached` error Codex reconnects on.

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;

use super::forward;
use crate::domain::proxy::error::ProxyError;
use crate::domain::proxy::metering::Api;
use crate::domain::proxy::sse::SseParser;
use crate::runtime::state::AppState;

/// Codex itself reconnects after 60 minutes; the gateway refuses new responses on an
/// older connection with the error that makes it do so.
/// Measured on the gateway's clock, so tests move it.
pub const MAX_CONNECTION_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(60);

/// Socket buffers: small, so an idle connection costs little (see the README's figure).
const READ_BUFFER: usize = 4 * 1024;

/// Upgrades after checking the key, so a bad key gets an HTTP 401 Codex shows at once.
pub async fn upgrade(State(state): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if let Err(e) = forward::authenticate(&state, &headers).await {
        return e.into_response();
    }
    let max_message = state.config.max_body_bytes;
    let headers = request_headers(&headers);
    let snapshot = state.catalog.get().await;
    let mut response = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| serve(state, headers, socket))
        .into_response();
    // Codex reads the catalogue's ETag from the handshake answer (as from an HTTP answer).
    super::add_models_etag(response.headers_mut(), &snapshot);
    response
}

/// The handshake headers every bridged request carries: the WebSocket ones go, and
/// `OpenAI-Beta: responses_websockets=…` is dropped (the upstream is spoken to over HTTP).
///
/// Each value is copied: hyper's header values are slices of its connection read buffer
/// (16 KiB by the time the head is parsed), and a clone would keep that whole buffer
/// alive for the life of the socket (it was two thirds of an idle socket's heap).
fn request_headers(handshake: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(handshake.len());
    for (name, value) in handshake {
        let n = name.as_str();
        let websocket_beta = n == "openai-beta" && value.to_str().is_ok_and(|v| v.contains("responses_websockets"));
        if n.starts_with("sec-websocket-") || websocket_beta || n == "content-length" {
            continue;
        }
        let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else { continue };
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

/// What the connection remembers of its last response, to expand the next request.
#[derive(Default)]
struct Conversation {
    last_response_id: Option<String>,
    /// The full input of the last request followed by the output items of its response,
    /// kept as JSON text (a parsed tree costs several times its text).
    baseline: Vec<Box<RawValue>>,
    /// The serialized size of the last response's conversation (kept or not).
    bytes: usize,
    /// That conversation was over the cap, so `baseline` was let go.
    over_cap: bool,
}

impl Conversation {
    /// Remembers `id`'s conversation, or only its size when it is over `cap` bytes.
    fn remember(&mut self, id: String, items: Vec<Box<RawValue>>, cap: usize) {
        self.last_response_id = Some(id);
        self.bytes = items_bytes(&items);
        self.over_cap = self.bytes > cap;
        self.baseline = if self.over_cap { Vec::new() } else { items };
    }
}

/// The bytes `items` add to a request body (each item and its separating comma).
fn items_bytes(items: &[Box<RawValue>]) -> usize {
    items.iter().map(|item| item.get().len() + 1).sum()
}

/// A follow-up whose whole conversation would pass the request body limit.
fn conversation_too_large(bytes: usize, cap: usize) -> ProxyError {
    ProxyError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "conversation_too_large",
        format!(
            "this conversation is {bytes} bytes, over the gateway's {cap}-byte request limit: \
             compact it (/compact) or start a new session"
        ),
    )
}

type Sink = SplitSink<WebSocket, Message>;

/// Frames a turn read while its response was still streaming (Codex sends its next
/// `response.create` as soon as it has `response.completed`, which can be before the
/// upstream body ends): kept in order for the connection loop, never dropped.
const MAX_QUEUED_FRAMES: usize = 16;

/// The client side of the socket, with the frames read ahead during a turn.
struct Inbox {
    source: SplitStream<WebSocket>,
    queued: VecDeque<Message>,
}

impl Inbox {
    /// The next client frame: a queued one first.
    async fn next(&mut self) -> Option<Result<Message, axum::Error>> {
        match self.queued.pop_front() {
            Some(message) => Some(Ok(message)),
            None => self.source.next().await,
        }
    }

    /// Whether a turn may read ahead (beyond the bound the socket is not read, so the
    /// client is slowed by TCP rather than losing frames).
    fn has_room(&self) -> bool {
        self.queued.len() < MAX_QUEUED_FRAMES
    }
}

async fn serve(state: AppState, headers: HeaderMap, socket: WebSocket) {
    let opened = state.now();
    let (mut sink, source) = socket.split();
    let mut inbox = Inbox { source, queued: VecDeque::new() };
    let mut conversation = Conversation::default();
    while let Some(incoming) = inbox.next().await {
        let text = match incoming {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                let e = ProxyError::invalid_request("binary_frame", "send response.create requests as text frames");
                if send_error(&mut sink, &e).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) | Err(_) => return,
        };
        if state.now() - opened >= MAX_CONNECTION_AGE {
            let _ = send_frame(&mut sink, &connection_limit_error()).await;
            let _ =
                sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: Utf8Bytes::from_static("") }))).await;
            return;
        }
        let request = match Frame::parse(&text, &conversation, state.config.max_body_bytes) {
            Ok(Frame::Create(request)) => request,
            Ok(Frame::Processed) => continue,
            Err(e) => {
                if send_error(&mut sink, &e).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // The frame's text is a slice of the socket's read buffer: let it go before the turn.
        drop(text);
        let turn = Turn { state: &state, headers: &headers, sink: &mut sink, inbox: &mut inbox };
        // Boxed: the turn's future (the whole HTTP path) is large, and an idle
        // connection's task must not carry its space.
        match Box::pin(turn.run(request, &mut conversation)).await {
            TurnEnd::Done => {}
            TurnEnd::SocketGone => return,
        }
    }
}

/// One parsed client frame.
enum Frame {
    /// The Responses request to send (complete: the conversation already expanded).
    Create(Request),
    /// `response.processed`: Codex's acknowledgement, nothing to do.
    Processed,
}

struct Request {
    /// The request's fields but `input` and `stream`.
    body: Map<String, Value>,
    /// The full input sent (the baseline of the next request).
    input: Vec<Box<RawValue>>,
    /// `generate: false`: warm-up only.
    prewarm: bool,
}

impl Frame {
    /// Parses a client frame; a follow-up is expanded with the conversation, whose whole
    /// size may not pass `cap` bytes.
    fn parse(text: &str, conversation: &Conversation, cap: usize) -> Result<Frame, ProxyError> {
        let mut body = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(body)) => body,
            Ok(_) => return Err(ProxyError::invalid_request("invalid_request", "a frame must be a JSON object")),
            Err(e) => {
                return Err(ProxyError::invalid_request("invalid_json", format!("the frame is not valid JSON: {e}")))
            }
        };
        match body.remove("type").as_ref().and_then(Value::as_str) {
            Some("response.create") => {}
            Some("response.processed") => return Ok(Frame::Processed),
            other => {
                return Err(ProxyError::invalid_request(
                    "unknown_frame",
                    format!("unsupported frame type {}; send response.create", other.unwrap_or("(none)")),
                ))
            }
        }
        let items = match body.remove("input") {
            Some(Value::Array(items)) => items,
            Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(ProxyError::invalid_request("invalid_request", "input must be an array or a string"))
            }
        };
        let mut input = raw_items(&items)?;
        if let Some(previous) = body.remove("previous_response_id").filter(|v| !v.is_null()) {
            if previous.as_str() != conversation.last_response_id.as_deref() {
                return Err(ProxyError::invalid_request(
                    "previous_response_not_found",
                    format!("previous response {previous} is not the last response of this connection"),
                ));
            }
            let bytes = conversation.bytes + items_bytes(&input);
            if conversation.over_cap || bytes > cap {
                return Err(conversation_too_large(bytes, cap));
            }
            let mut full = conversation.baseline.clone();
            full.append(&mut input);
            input = full;
        }
        let prewarm = body.remove("generate").is_some_and(|g| g == Value::Bool(false));
        body.remove("stream");
        Ok(Frame::Create(Request { body, input, prewarm }))
    }
}

fn raw_items(items: &[Value]) -> Result<Vec<Box<RawValue>>, ProxyError> {
    items
        .iter()
        .map(to_raw_value)
        .collect::<Result<_, _>>()
        .map_err(|e| ProxyError::invalid_request("invalid_request", e.to_string()))
}

/// The upstream request body: the frame's fields, the full `input`, `stream: true`.
fn encode(request: &Request) -> serde_json::Result<Vec<u8>> {
    use serde::ser::{SerializeMap, Serializer};
    let mut out = Vec::with_capacity(items_bytes(&request.input) + 1024);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let mut map = serializer.serialize_map(None)?;
    for (name, value) in &request.body {
        map.serialize_entry(name, value)?;
    }
    map.serialize_entry("input", &request.input)?;
    map.serialize_entry("stream", &true)?;
    map.end()?;
    Ok(out)
}

enum TurnEnd {
    Done,
    SocketGone,
}

/// One response on the connection.
struct Turn<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    sink: &'a mut Sink,
    inbox: &'a mut Inbox,
}

impl Turn<'_> {
    async fn run(self, request: Request, conversation: &mut Conversation) -> TurnEnd {
        let Turn { state, headers, sink, inbox } = self;
        let cap = state.config.max_body_bytes;
        if request.prewarm {
            let id = crate::domain::telemetry::new_request_id().replacen("req_", "resp_", 1);
            let result = send_prewarm(sink, &id, &request.body).await;
            conversation.remember(id, request.input, cap);
            return sent(result);
        }
        let bytes = match encode(&request) {
            Ok(bytes) => bytes,
            Err(e) => {
                return sent(
                    send_error(sink, &ProxyError::from(crate::foundation::error::Error::internal(e.to_string()))).await,
                )
            }
        };
        let answer = forward::proxy_with_quota(state.clone(), Api::Responses, headers.clone(), Body::from(bytes)).await;
        let (response, quota) = match answer {
            Ok(answer) => answer,
            Err(e) => return sent(send_error(sink, &e).await),
        };
        if let Some(quota) = quota {
            if send_frame(sink, &quota.rate_limits_event()).await.is_err() {
                return TurnEnd::SocketGone;
            }
        }
        if response.status() != StatusCode::OK {
            return sent(relay_refusal(sink, response).await);
        }
        let mut events = EventRelay { output: Vec::new(), completed: None };
        let mut body = response.into_body().into_data_stream();
        let mut parser = SseParser::new();
        loop {
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(chunk)) => {
                        for event in parser.feed(&chunk) {
                            if let Some(data) = event.data {
                                if events.relay(sink, data).await.is_err() {
                                    return TurnEnd::SocketGone;
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let error = ProxyError::bad_gateway(format!("the upstream stream broke: {e}"));
                        return sent(send_error(sink, &error).await);
                    }
                    None => break,
                },
                incoming = inbox.source.next(), if inbox.has_room() => match incoming {
                    // The client went away: dropping the body settles the request once.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return TurnEnd::SocketGone,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(frame)) => inbox.queued.push_back(frame),
                },
            }
        }
        if let Some(event) = parser.finish().0.and_then(|e| e.data) {
            if events.relay(sink, event).await.is_err() {
                return TurnEnd::SocketGone;
            }
        }
        if let Some(id) = events.completed {
            let mut baseline = request.input;
            baseline.append(&mut events.output);
            conversation.remember(id, baseline, cap);
        }
        TurnEnd::Done
    }
}

fn sent(result: Result<(), axum::Error>) -> TurnEnd {
    match result {
        Ok(()) => TurnEnd::Done,
        Err(_) => TurnEnd::SocketGone,
    }
}

/// Passes SSE event payloads on as text frames, noting what the next turn needs.
struct EventRelay {
    output: Vec<Box<RawValue>>,
    completed: Option<String>,
}

impl EventRelay {
    async fn relay(&mut self, sink: &mut Sink, data: String) -> Result<(), axum::Error> {
        if data.trim() == "[DONE]" {
            return Ok(());
        }
        if let Ok(event) = serde_json::from_str::<Value>(&data) {
            match event.get("type").and_then(Value::as_str) {
                Some("response.output_item.done") => {
                    if let Some(item) = event.get("item").and_then(|item| to_raw_value(item).ok()) {
                        self.output.push(item);
                    }
                }
                Some("response.completed") => {
                    self.completed = event.pointer("/response/id").and_then(Value::as_str).map(str::to_string);
                }
                _ => {}
            }
        }
        sink.send(Message::Text(data.into())).await
    }
}

async fn send_frame(sink: &mut Sink, frame: &Value) -> Result<(), axum::Error> {
    sink.send(Message::Text(frame.to_string().into())).await
}

/// A refusal in the frame Codex parses (`type: error` with the HTTP status, the error
/// object and the headers the HTTP answer would have had).
pub fn error_frame(e: &ProxyError) -> Value {
    let headers: Map<String, Value> = e.headers().into_iter().map(|(n, v)| (n.to_string(), Value::String(v))).collect();
    let body = e.body();
    json!({ "type": "error", "status": e.status.as_u16(), "error": body["error"], "headers": headers })
}

async fn send_error(sink: &mut Sink, e: &ProxyError) -> Result<(), axum::Error> {
    send_frame(sink, &error_frame(e)).await
}

/// An upstream's own error answer (4xx passed through by the HTTP path) as an error frame.
async fn relay_refusal(sink: &mut Sink, response: Response) -> Result<(), axum::Error> {
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_else(|_| Bytes::new());
    let error = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or_else(|| json!({ "type": "upstream_error", "message": String::from_utf8_lossy(&body) }));
    send_frame(sink, &json!({ "type": "error", "status": status, "error": error })).await
}

/// Codex's own reconnect signal (`websocket_connection_limit_reached`).
fn connection_limit_error() -> Value {
    json!({ "type": "error", "status": 400, "error": {
        "type": "invalid_request_error",
        "code": "websocket_connection_limit_reached",
        "message": "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue.",
    } })
}

/// The answer to a warm-up (`generate: false`): created and completed, no output, no usage.
async fn send_prewarm(sink: &mut Sink, id: &str, body: &Map<String, Value>) -> Result<(), axum::Error> {
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let response =
        |status: &str| json!({ "id": id, "object": "response", "status": status, "model": model, "output": [] });
    send_frame(sink, &json!({ "type": "response.created", "response": response("in_progress") })).await?;
    let mut completed = response("completed");
    completed["usage"] = json!({ "input_tokens": 0, "output_tokens": 0, "total_tokens": 0 });
    send_frame(sink, &json!({ "type": "response.completed", "response": completed })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1 << 20;

    fn create(frame: Value, conversation: &Conversation) -> Request {
        match Frame::parse(&frame.to_string(), conversation, CAP) {
            Ok(Frame::Create(r)) => r,
            Ok(Frame::Processed) => panic!("not a create frame"),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn raw(items: &[Value]) -> Vec<Box<RawValue>> {
        raw_items(items).unwrap()
    }

    fn remembered(items: &[Value], cap: usize) -> Conversation {
        let mut conversation = Conversation::default();
        conversation.remember("resp_1".into(), raw(items), cap);
        conversation
    }

    #[test]
    fn a_follow_up_is_expanded_to_the_whole_conversation_and_streamed() {
        let conversation = remembered(
            &[json!({"role": "user", "content": "a"}), json!({"type": "message", "role": "assistant"})],
            CAP,
        );
        let r = create(
            json!({"type": "response.create", "model": "gpt-5", "previous_response_id": "resp_1", "stream": false,
                   "input": [{"role": "user", "content": "b"}]}),
            &conversation,
        );
        assert_eq!(r.input.len(), 3);
        let sent: Value = serde_json::from_slice(&encode(&r).unwrap()).unwrap();
        assert_eq!(sent["input"][2]["content"], "b");
        assert_eq!(sent["input"][1]["role"], "assistant");
        assert_eq!((sent["model"].as_str(), sent["stream"].as_bool()), (Some("gpt-5"), Some(true)));
        assert!(sent.get("previous_response_id").is_none() && sent.get("type").is_none());
        let unknown = json!({"type": "response.create", "model": "m", "previous_response_id": "resp_0", "input": []});
        let err = Frame::parse(&unknown.to_string(), &conversation, CAP).err().map(|e| e.code);
        assert_eq!(err.as_deref(), Some("previous_response_not_found"));
    }

    #[test]
    fn a_conversation_over_the_cap_is_let_go_and_its_follow_up_refused_with_a_clear_error() {
        let item = json!({"role": "user", "content": "x".repeat(100)});
        let size = item.to_string().len() + 1;
        // Within the cap: kept, and a follow-up that stays within it is expanded.
        let kept = remembered(std::slice::from_ref(&item), 3 * size);
        assert_eq!((kept.baseline.len(), kept.bytes, kept.over_cap), (1, size, false));
        let follow_up =
            json!({"type": "response.create", "model": "m", "previous_response_id": "resp_1", "input": [item]});
        match Frame::parse(&follow_up.to_string(), &kept, 2 * size) {
            Ok(Frame::Create(r)) => assert_eq!(r.input.len(), 2),
            _ => panic!("a follow-up within the cap is served"),
        }
        // A follow-up that would pass the cap is refused; the conversation stays.
        let err = Frame::parse(&follow_up.to_string(), &kept, 2 * size - 1).err().unwrap();
        assert_eq!((err.status.as_u16(), err.code.as_str()), (413, "conversation_too_large"));
        assert!(err.message.contains("compact") && err.message.contains(&format!("{}-byte", 2 * size - 1)));
        // Over the cap once answered: nothing is kept but its size, and the follow-up is refused.
        let dropped = remembered(&[follow_up["input"][0].clone(), follow_up["input"][0].clone()], size);
        assert!(dropped.over_cap && dropped.baseline.is_empty());
        let err = Frame::parse(&follow_up.to_string(), &dropped, CAP).err().unwrap();
        assert_eq!(err.code, "conversation_too_large");
    }

    #[test]
    fn other_frames_are_acknowledged_or_refused_in_the_openai_shape() {
        let c = Conversation::default();
        let parse = |text: &str| Frame::parse(text, &c, CAP);
        assert!(matches!(parse(r#"{"type":"response.processed","response_id":"r"}"#), Ok(Frame::Processed)));
        assert_eq!(parse("{").err().map(|e| e.code).as_deref(), Some("invalid_json"));
        assert_eq!(parse(r#"{"type":"x"}"#).err().map(|e| e.code).as_deref(), Some("unknown_frame"));
        let warm = create(json!({"type": "response.create", "model": "m", "generate": false, "input": []}), &c);
        assert!(warm.prewarm && !warm.body.contains_key("generate"));
    }

    #[test]
    fn a_usage_limit_frame_carries_status_error_and_headers_as_codex_reads_them() {
        let limit = crate::domain::proxy::error::UsageLimit {
            resets_at: Some(1_768_492_800),
            headers: vec![("x-codex-primary-used-percent", "100.0".into())],
        };
        let frame = error_frame(&ProxyError::usage_limit("insufficient_quota", "used up", limit));
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["status"], 429);
        assert_eq!(frame["error"]["type"], "usage_limit_reached");
        assert_eq!(frame["error"]["resets_at"], 1_768_492_800);
        assert_eq!(frame["headers"]["x-codex-primary-used-percent"], "100.0");
        assert_eq!(connection_limit_error()["error"]["code"], "websocket_connection_limit_reached");
    }

    #[test]
    fn handshake_headers_lose_the_websocket_ones_and_keep_the_session() {
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-key", "k".parse().unwrap());
        h.insert("openai-beta", "responses_websockets=2026-02-06".parse().unwrap());
        h.insert("session_id", "s1".parse().unwrap());
        let out = request_headers(&h);
        assert!(out.get("sec-websocket-key").is_none() && out.get("openai-beta").is_none());
        assert_eq!(out.get("session_id").unwrap(), "s1");
        // A copy, not a slice of the handshake's buffer (which it would keep alive).
        assert_ne!(out["session_id"].as_bytes().as_ptr(), h["session_id"].as_bytes().as_ptr());
    }
}
