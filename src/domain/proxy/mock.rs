//! A fake OpenAI upstream speaking real SSE, for the test suite, the interop tests
//! (the real Codex CLI and openai SDK run against it through the gateway) and
//! benchmarks (`codex-gateway mock-upstream`).
//!
//! Faults are chosen per instance ([`MockOptions::fault`]) or per request, by header
//! `x-mock-fault: fail-500 | fail-429 | fail-400 | die | no-usage` or by model name
//! `mock-fail-500`, `mock-fail-429`, `mock-fail-400`, `mock-die`, `mock-no-usage`.
//!
//! The Responses stream follows what the Codex CLI consumes: `response.created`,
//! `response.output_item.added`, `response.content_part.added`, text deltas,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done` (Codex takes the final message from this item) and
//! `response.completed` (with the response id and usage; Codex treats a stream that
//! ends without it as an error and retries).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A scripted failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Fail500,
    Fail429,
    /// Refuse the request as malformed (a client error the gateway passes through).
    Fail400,
    /// Send the first events, then break the connection.
    DieMidStream,
    /// Answer normally but never report usage.
    NoUsage,
}

impl Fault {
    pub fn parse(text: &str) -> Option<Fault> {
        match text.trim_start_matches("mock-") {
            "fail-500" => Some(Fault::Fail500),
            "fail-429" => Some(Fault::Fail429),
            "fail-400" => Some(Fault::Fail400),
            "die" => Some(Fault::DieMidStream),
            "no-usage" => Some(Fault::NoUsage),
            _ => None,
        }
    }
}

/// Token counts the mock reports.
#[derive(Debug, Clone, Copy)]
pub struct MockUsage {
    pub input: i64,
    pub cached: i64,
    pub output: i64,
    pub reasoning: i64,
}

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Pause before answering at all (drives first-byte timeouts).
    pub initial_delay: Duration,
    /// Pause before each event after the first.
    pub delay: Duration,
    /// Number of text deltas the answer is split into.
    pub chunks: usize,
    /// Answer length in bytes (0 = the text as is; more repeats it).
    pub response_bytes: usize,
    pub text: String,
    pub fault: Option<Fault>,
    pub usage: MockUsage,
    /// When set, streams pause after their first event until a permit is added.
    pub gate: Option<Arc<Semaphore>>,
    /// Prefix every streamed event with an SSE comment `: mock-sent-us=<unix micros>` taken
    /// as it is sent, so a benchmark client can tell how late each chunk reached it.
    pub stamp: bool,
    /// Behave like a provider's prompt cache: report as input the estimated tokens of
    /// the Responses `input` (one per 4 bytes of each item's JSON) and as cached those of
    /// its longest prefix of items this mock has seen before (the affinity measurement).
    pub prefix_cache: bool,
    /// Pause after the last event before the body ends: an upstream slow to close its
    /// stream, so a client has its `response.completed` well before the end.
    pub tail: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            initial_delay: Duration::ZERO,
            delay: Duration::ZERO,
            chunks: 4,
            response_bytes: 0,
            text: "Hello from the mock upstream.".into(),
            fault: None,
            usage: MockUsage { input: 1000, cached: 200, output: 300, reasoning: 100 },
            gate: None,
            stamp: false,
            prefix_cache: false,
            tail: Duration::ZERO,
        }
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
struct MockState {
    options: Arc<MockOptions>,
    requests: Arc<AtomicUsize>,
    /// Only the last request is kept: a benchmark sends millions.
    seen: Arc<Mutex<Option<Seen>>>,
    /// Hashes of the input prefixes seen ([`MockOptions::prefix_cache`]).
    prefixes: Arc<Mutex<std::collections::HashSet<u64>>>,
}

/// A running mock; stops when dropped.
pub struct MockHandle {
    pub addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Option<Seen>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl MockHandle {
    /// The base URL to configure as an upstream (`http://host:port/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// How many requests reached the mock.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

/// Serves the mock on `listener` until the handle is dropped.
pub async fn serve_mock(listener: TcpListener, options: MockOptions) -> std::io::Result<MockHandle> {
    let addr = listener.local_addr()?;
    let state = MockState {
        options: Arc::new(options),
        requests: Arc::default(),
        seen: Arc::default(),
        prefixes: Arc::default(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new()
        .route("/v1/responses", post(answer))
        .route("/v1/responses/compact", post(answer))
        .route("/v1/chat/completions", post(answer))
        .route("/v1/models", get(models))
        .route("/mock/stats", get(stats))
        // Codex prompts with long histories are large; accept what the gateway accepts.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state.clone());
    tokio::spawn(async move {
        // Small SSE events must leave at once: without TCP_NODELAY, Nagle's algorithm holds each
        // event behind the client's delayed ACK of the previous one (~40 ms stalls).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(MockHandle { addr, requests: state.requests, seen: state.seen, _shutdown: tx })
}

async fn models() -> Json<Value> {
    Json(json!({ "object": "list", "data": [
        { "id": "gpt-5", "object": "model", "created": 0, "owned_by": "mock" },
        { "id": "gpt-5-codex", "object": "model", "created": 0, "owned_by": "mock" }
    ] }))
}

/// `{"requests": n}`: how many answers were asked for, so a benchmark can check that
/// every request that reached the upstream was billed exactly once.
async fn stats(State(state): State<MockState>) -> Json<Value> {
    Json(json!({ "requests": state.requests.load(Ordering::SeqCst) }))
}

async fn answer(State(state): State<MockState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut seen) = state.seen.lock() {
        *seen = Some(Seen { path: uri.path().to_string(), headers: headers.clone(), body: body.clone() });
    }
    if !state.options.initial_delay.is_zero() {
        tokio::time::sleep(state.options.initial_delay).await;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("mock").to_string();
    let fault = headers
        .get("x-mock-fault")
        .and_then(|v| v.to_str().ok())
        .and_then(Fault::parse)
        .or_else(|| Fault::parse(&model))
        .or(state.options.fault);
    match fault {
        Some(Fault::Fail500) => return error(StatusCode::INTERNAL_SERVER_ERROR, "mock upstream failure"),
        Some(Fault::Fail429) => return error(StatusCode::TOO_MANY_REQUESTS, "mock upstream rate limit"),
        Some(Fault::Fail400) => return error(StatusCode::BAD_REQUEST, "mock upstream refuses this request"),
        _ => {}
    }
    if uri.path().ends_with("/responses/compact") {
        let usage = state.options.usage;
        let text = answer_text(&state.options);
        let script = Script { options: &state.options, model, fault, text, compaction: false, usage };
        return Json(script.compaction_json()).into_response();
    }
    let chat = uri.path().ends_with("/chat/completions");
    let stream = request["stream"].as_bool().unwrap_or(false);
    // Codex's remote compaction v2: a Responses request whose input ends with a
    // `compaction_trigger` item, answered with exactly one `compaction` output item.
    let compaction = request["input"]
        .as_array()
        .and_then(|items| items.last())
        .is_some_and(|item| item["type"] == "compaction_trigger");
    let usage = if state.options.prefix_cache && !chat_path(&uri) {
        prefix_cached_usage(&state, &request["input"])
    } else {
        state.options.usage
    };
    let script = Script { options: &state.options, model, fault, text: answer_text(&state.options), compaction, usage };
    if !stream {
        return Json(if chat { script.chat_json() } else { script.responses_json() }).into_response();
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let pieces = if chat { script.chat_events(include_usage) } else { script.responses_events() };
    sse(pieces, state.options.clone())
}

fn chat_path(uri: &Uri) -> bool {
    uri.path().ends_with("/chat/completions")
}

/// Usage as a prompt cache reports it: every item's tokens as input, those of the
/// longest already-seen prefix of items as cached; the prefixes are then remembered.
fn prefix_cached_usage(state: &MockState, input: &Value) -> MockUsage {
    let items: Vec<String> = match input {
        Value::Array(items) => items.iter().map(Value::to_string).collect(),
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let (mut total, mut cached, mut in_cache) = (0i64, 0i64, true);
    let mut seen = match state.prefixes.lock() {
        Ok(seen) => seen,
        Err(poisoned) => poisoned.into_inner(),
    };
    for item in &items {
        for byte in item.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let tokens = i64::try_from(item.len().div_ceil(4)).unwrap_or(i64::MAX);
        total += tokens;
        in_cache = in_cache && seen.contains(&hash);
        if in_cache {
            cached += tokens;
        }
        seen.insert(hash);
    }
    MockUsage { input: total, cached, ..state.options.usage }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message, "type": "server_error", "code": null } }))).into_response()
}

fn answer_text(options: &MockOptions) -> String {
    if options.response_bytes <= options.text.len() || options.text.is_empty() {
        return options.text.clone();
    }
    options.text.chars().cycle().take(options.response_bytes).collect()
}

/// One event to send, or the point where the connection breaks.
enum Piece {
    Event(Bytes),
    Die,
}

fn event(name: Option<&str>, data: &Value) -> Piece {
    let text = match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    Piece::Event(Bytes::from(text))
}

struct Script<'a> {
    options: &'a MockOptions,
    model: String,
    fault: Option<Fault>,
    text: String,
    compaction: bool,
    usage: MockUsage,
}

impl Script<'_> {
    fn deltas(&self) -> Vec<String> {
        let chars: Vec<char> = self.text.chars().collect();
        let size = chars.len().div_ceil(self.options.chunks.max(1)).max(1);
        chars.chunks(size).map(|c| c.iter().collect()).collect()
    }

    fn responses_usage(&self) -> Value {
        let u = self.usage;
        json!({ "input_tokens": u.input, "input_tokens_details": { "cached_tokens": u.cached },
                "output_tokens": u.output, "output_tokens_details": { "reasoning_tokens": u.reasoning },
                "total_tokens": u.input + u.output })
    }

    fn chat_usage(&self) -> Value {
        let u = self.usage;
        json!({ "prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
                "prompt_tokens_details": { "cached_tokens": u.cached },
                "completion_tokens_details": { "reasoning_tokens": u.reasoning } })
    }

    fn message(&self, status: &str, text: &str) -> Value {
        json!({ "id": "msg_mock", "type": "message", "status": status, "role": "assistant",
                "content": if text.is_empty() && status != "completed" { json!([]) }
                           else { json!([{ "type": "output_text", "text": text, "annotations": [] }]) } })
    }

    fn response(&self, status: &str, output: Value) -> Value {
        let mut r = json!({ "id": "resp_mock", "object": "response", "created_at": 1_767_225_600,
                            "status": status, "model": self.model, "output": output });
        if status == "completed" && self.fault != Some(Fault::NoUsage) {
            r["usage"] = self.responses_usage();
        }
        r
    }

    /// The answer of `/responses/compact`: the history replaced by one summary item.
    fn compaction_json(&self) -> Value {
        let summary = json!({ "type": "message", "role": "user",
                              "content": [{ "type": "input_text", "text": format!("Summary: {}", self.text) }] });
        let mut body = json!({ "id": "cmp_mock", "object": "response.compaction", "created_at": 1_767_225_600,
                               "output": [summary] });
        if self.fault != Some(Fault::NoUsage) {
            body["usage"] = self.responses_usage();
        }
        body
    }

    fn responses_json(&self) -> Value {
        if self.compaction {
            return self.response("completed", json!([self.compaction_item()]));
        }
        self.response("completed", json!([self.message("completed", &self.text)]))
    }

    fn compaction_item(&self) -> Value {
        json!({ "type": "compaction", "id": "cmp_mock", "encrypted_content": format!("mock-compacted:{}", self.text) })
    }

    fn responses_events(&self) -> Vec<Piece> {
        let mut seq = 0;
        let mut next = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            seq += 1;
            event(Some(name), &data)
        };
        if self.compaction {
            let item = self.compaction_item();
            return vec![
                next("response.created", json!({ "response": self.response("in_progress", json!([])) })),
                next("response.output_item.added", json!({ "output_index": 0, "item": item })),
                next("response.output_item.done", json!({ "output_index": 0, "item": item })),
                next("response.completed", json!({ "response": self.response("completed", json!([item])) })),
            ];
        }
        let mut pieces = vec![
            next("response.created", json!({ "response": self.response("in_progress", json!([])) })),
            next("response.in_progress", json!({ "response": self.response("in_progress", json!([])) })),
            next("response.output_item.added", json!({ "output_index": 0, "item": self.message("in_progress", "") })),
            next(
                "response.content_part.added",
                json!({ "item_id": "msg_mock", "output_index": 0, "content_index": 0,
                        "part": { "type": "output_text", "text": "", "annotations": [] } }),
            ),
        ];
        for (i, delta) in self.deltas().into_iter().enumerate() {
            pieces.push(next(
                "response.output_text.delta",
                json!({ "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": delta }),
            ));
            if i == 0 && self.fault == Some(Fault::DieMidStream) {
                pieces.push(Piece::Die);
                return pieces;
            }
        }
        pieces.push(next(
            "response.output_text.done",
            json!({ "item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": self.text }),
        ));
        pieces.push(next(
            "response.content_part.done",
            json!({ "item_id": "msg_mock", "output_index": 0, "content_index": 0,
                    "part": { "type": "output_text", "text": self.text, "annotations": [] } }),
        ));
        pieces.push(next(
            "response.output_item.done",
            json!({ "output_index": 0, "item": self.message("completed", &self.text) }),
        ));
        let output = json!([self.message("completed", &self.text)]);
        pieces.push(next("response.completed", json!({ "response": self.response("completed", output) })));
        pieces
    }

    fn chat_chunk(&self, choices: Value) -> Value {
        json!({ "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_767_225_600,
                "model": self.model, "choices": choices })
    }

    fn chat_json(&self) -> Value {
        let mut body = json!({ "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_767_225_600,
            "model": self.model, "choices": [{ "index": 0, "finish_reason": "stop",
            "message": { "role": "assistant", "content": self.text } }] });
        if self.fault != Some(Fault::NoUsage) {
            body["usage"] = self.chat_usage();
        }
        body
    }

    fn chat_events(&self, include_usage: bool) -> Vec<Piece> {
        let mut pieces = vec![event(
            None,
            &self.chat_chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]),
            ),
        )];
        for (i, delta) in self.deltas().into_iter().enumerate() {
            pieces.push(event(
                None,
                &self.chat_chunk(json!([{ "index": 0, "delta": { "content": delta }, "finish_reason": null }])),
            ));
            if i == 0 && self.fault == Some(Fault::DieMidStream) {
                pieces.push(Piece::Die);
                return pieces;
            }
        }
        pieces.push(event(None, &self.chat_chunk(json!([{ "index": 0, "delta": {}, "finish_reason": "stop" }]))));
        if include_usage && self.fault != Some(Fault::NoUsage) {
            let mut last = self.chat_chunk(json!([]));
            last["usage"] = self.chat_usage();
            pieces.push(event(None, &last));
        }
        pieces.push(Piece::Event(Bytes::from_static(b"data: [DONE]\n\n")));
        pieces
    }
}

/// The event behind a comment line carrying the wall-clock time it is sent at.
fn stamped(event: &Bytes) -> Bytes {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let mut out = format!(": mock-sent-us={micros}\n").into_bytes();
    out.extend_from_slice(event);
    Bytes::from(out)
}

fn sse(pieces: Vec<Piece>, options: Arc<MockOptions>) -> Response {
    let stream = futures::stream::unfold((pieces.into_iter().enumerate(), options), |(mut it, options)| async move {
        let Some((index, piece)) = it.next() else {
            if !options.tail.is_zero() {
                tokio::time::sleep(options.tail).await;
            }
            return None;
        };
        if index == 1 {
            if let Some(gate) = &options.gate {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
            }
        }
        if index > 0 && !options.delay.is_zero() {
            tokio::time::sleep(options.delay).await;
        }
        let item = match piece {
            Piece::Event(bytes) if options.stamp => Ok(stamped(&bytes)),
            Piece::Event(bytes) => Ok(bytes),
            Piece::Die => {
                // Let what was sent reach the wire first, like a real crash mid-stream.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("mock upstream died mid-stream"))
            }
        };
        Some((item, (it, options)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-request-id", "req_mock_upstream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
