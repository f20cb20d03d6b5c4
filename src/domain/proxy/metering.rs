//! Reading what a response used while it passes through.
//!
//! SSE responses are parsed incrementally ([`super::sse`]); usage is taken from the
//! Responses API's `response.completed` (or `.incomplete`/`.failed`) event, or from
//! the Chat Completions usage chunk. JSON responses are copied aside (up to a cap)
//! and their top-level `usage` read at the end. Bytes are forwarded as received,
//! except the Chat usage-only chunk when the gateway asked for it and the client
//! had not (then events are forwarded whole, one by one, minus that chunk).
//!
//! When usage never arrives (disconnect, upstream death, malformed stream) the
//! request is estimated without a tokenizer and marked `estimated`:
//! input = ceil(request body bytes / 4); output = ceil(streamed text bytes / 4), where
//! streamed text is the text of the deltas (output text, reasoning text, tool-call
//! arguments) for SSE, or the whole response body for JSON.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use super::pricing::Usage;
use super::sse::{SseEvent, SseParser};

/// Which OpenAI API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Responses,
    /// `POST /responses/compact` (Codex's remote compaction): a Responses-shaped JSON
    /// answer with `usage`, metered and billed like any response.
    Compact,
    Chat,
}

impl Api {
    /// The path appended to an upstream's base URL, also the usage log's endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Api::Responses => "/responses",
            Api::Compact => "/responses/compact",
            Api::Chat => "/chat/completions",
        }
    }
}

/// JSON bodies larger than this are forwarded but not inspected for usage.
const MAX_INSPECTED_BODY: usize = 16 * 1024 * 1024;

/// Bytes-per-token of the tokenizer-free estimate.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Tokens for `bytes` under the estimate rule (rounded up).
pub fn estimate_tokens(bytes: u64) -> i64 {
    i64::try_from(bytes.div_ceil(BYTES_PER_TOKEN)).unwrap_or(i64::MAX)
}

/// The most tokens one request may be billed for (far above any real context window).
pub const MAX_REPORTED_TOKENS: i64 = 100_000_000;

#[derive(Deserialize, Default)]
struct Details {
    cached_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
}

#[derive(Deserialize, Default)]
struct RawUsage {
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
}

impl RawUsage {
    /// Either API's names; `None` when neither reported token counts.
    fn usage(&self, api: Api) -> Option<Usage> {
        let (input, output, input_details, output_details) = match api {
            Api::Responses | Api::Compact => {
                (self.input_tokens, self.output_tokens, &self.input_tokens_details, &self.output_tokens_details)
            }
            Api::Chat => (
                self.prompt_tokens,
                self.completion_tokens,
                &self.prompt_tokens_details,
                &self.completion_tokens_details,
            ),
        };
        if input.is_none() && output.is_none() {
            return None;
        }
        // A confused or hostile upstream may report absurd counts; clamp them so the
        // charge stays an amount the ledger can add up (no overflow in SQL).
        let sane = |n: Option<i64>| n.unwrap_or(0).clamp(0, MAX_REPORTED_TOKENS);
        Some(Usage {
            input: sane(input),
            cached: sane(input_details.as_ref().and_then(|d| d.cached_tokens)),
            output: sane(output),
            reasoning: sane(output_details.as_ref().and_then(|d| d.reasoning_tokens)),
        })
    }
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(rename = "type", default)]
    kind: String,
    delta: Option<Value>,
    response: Option<WithUsage>,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct ChatChunk {
    #[serde(default)]
    choices: Vec<ChatChoice>,
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct ChatChoice {
    delta: Option<ChatDelta>,
}

#[derive(Deserialize)]
struct ChatDelta {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<Value>>,
}

/// What one response has shown so far.
#[derive(Debug)]
pub struct Meter {
    api: Api,
    sse: bool,
    drop_usage_chunk: bool,
    parser: SseParser,
    usage: Option<Usage>,
    text_bytes: u64,
    body: BytesMut,
    body_bytes: u64,
}

impl Meter {
    /// `sse`: the response is an event stream; `drop_usage_chunk`: the gateway added
    /// `stream_options.include_usage` and must hide the usage chunk from the client.
    pub fn new(api: Api, sse: bool, drop_usage_chunk: bool) -> Self {
        Meter {
            api,
            sse,
            drop_usage_chunk: drop_usage_chunk && sse,
            parser: SseParser::new(),
            usage: None,
            text_bytes: 0,
            body: BytesMut::new(),
            body_bytes: 0,
        }
    }

    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// Inspects a chunk; returns what to forward (the chunk itself unless filtering).
    pub fn pass(&mut self, chunk: Bytes) -> Bytes {
        self.body_bytes += chunk.len() as u64;
        if !self.sse {
            if self.body.len() + chunk.len() <= MAX_INSPECTED_BODY {
                self.body.extend_from_slice(&chunk);
            }
            return chunk;
        }
        let events = self.parser.feed(&chunk);
        if !self.drop_usage_chunk {
            events.iter().for_each(|e| {
                self.inspect(e);
            });
            return chunk;
        }
        let mut out = BytesMut::new();
        for event in &events {
            if self.inspect(event) {
                out.extend_from_slice(&event.raw);
            }
        }
        out.freeze()
    }

    /// The stream ended: returns any bytes still to forward (filtering mode only).
    pub fn finish(&mut self) -> Bytes {
        if !self.sse {
            return Bytes::new();
        }
        let (event, rest) = self.parser.finish();
        let mut out = BytesMut::new();
        if let Some(event) = event {
            if self.inspect(&event) && self.drop_usage_chunk {
                out.extend_from_slice(&event.raw);
            }
        }
        if self.drop_usage_chunk {
            out.extend_from_slice(&rest);
        }
        out.freeze()
    }

    /// Reads one event; returns whether the client should see it.
    fn inspect(&mut self, event: &SseEvent) -> bool {
        let Some(data) = event.data.as_deref() else { return true };
        if data.trim() == "[DONE]" {
            return true;
        }
        match self.api {
            Api::Responses | Api::Compact => {
                if let Ok(e) = serde_json::from_str::<ResponsesEvent>(data) {
                    if e.kind.ends_with(".delta") {
                        if let Some(Value::String(text)) = &e.delta {
                            self.text_bytes += text.len() as u64;
                        }
                    }
                    if let Some(usage) = e.response.and_then(|r| r.usage).and_then(|u| u.usage(Api::Responses)) {
                        self.usage = Some(usage);
                    }
                }
                true
            }
            Api::Chat => {
                let Ok(chunk) = serde_json::from_str::<ChatChunk>(data) else { return true };
                for delta in chunk.choices.iter().filter_map(|c| c.delta.as_ref()) {
                    self.text_bytes += delta.content.as_ref().map_or(0, |t| t.len() as u64);
                    self.text_bytes += delta.reasoning_content.as_ref().map_or(0, |t| t.len() as u64);
                    for call in delta.tool_calls.iter().flatten() {
                        if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                            self.text_bytes += args.len() as u64;
                        }
                    }
                }
                let usage = chunk.usage.and_then(|u| u.usage(Api::Chat));
                let usage_only = usage.is_some() && chunk.choices.is_empty();
                if usage.is_some() {
                    self.usage = usage;
                }
                !(usage_only && self.drop_usage_chunk)
            }
        }
    }

    /// The upstream's own report, if it arrived.
    pub fn reported_usage(&self) -> Option<Usage> {
        if self.sse {
            return self.usage;
        }
        #[derive(Deserialize)]
        struct Body {
            usage: Option<RawUsage>,
        }
        serde_json::from_slice::<Body>(&self.body).ok()?.usage?.usage(self.api)
    }

    /// The bytes the output estimate counts so far (streamed text for SSE, the body
    /// otherwise): what the crash journal records as progress.
    pub fn output_bytes(&self) -> u64 {
        if self.sse {
            self.text_bytes
        } else {
            self.body_bytes
        }
    }

    /// The documented tokenizer-free estimate (see the module docs).
    pub fn estimate(&self, request_bytes: usize) -> Usage {
        Usage {
            input: estimate_tokens(request_bytes as u64),
            cached: 0,
            output: estimate_tokens(self.output_bytes()),
            reasoning: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_usage_is_read_from_the_completed_event_across_chunks() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":",
            "{\"input_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":40},\"output_tokens\":20,",
            "\"output_tokens_details\":{\"reasoning_tokens\":5},\"total_tokens\":120}}}\n\n"
        );
        let mut meter = Meter::new(Api::Responses, true, false);
        let mut forwarded = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            forwarded.extend_from_slice(&meter.pass(Bytes::copy_from_slice(chunk)));
        }
        forwarded.extend_from_slice(&meter.finish());
        assert_eq!(forwarded, stream.as_bytes());
        assert_eq!(meter.reported_usage(), Some(Usage { input: 100, cached: 40, output: 20, reasoning: 5 }));
        assert_eq!(meter.estimate(400), Usage { input: 100, cached: 0, output: 2, reasoning: 0 });
    }

    #[test]
    fn the_chat_usage_chunk_is_hidden_only_when_the_gateway_asked_for_it() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi there\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,",
            "\"prompt_tokens_details\":{\"cached_tokens\":2},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut hiding = Meter::new(Api::Chat, true, true);
        let mut shown = Vec::new();
        for chunk in stream.as_bytes().chunks(5) {
            shown.extend_from_slice(&hiding.pass(Bytes::copy_from_slice(chunk)));
        }
        shown.extend_from_slice(&hiding.finish());
        let shown = String::from_utf8(shown).unwrap();
        assert!(!shown.contains("usage"), "{shown}");
        assert!(shown.starts_with("data: {\"choices\":[{") && shown.ends_with("data: [DONE]\n\n"));
        assert_eq!(hiding.reported_usage(), Some(Usage { input: 9, cached: 2, output: 3, reasoning: 1 }));

        let mut passing = Meter::new(Api::Chat, true, false);
        let out = passing.pass(Bytes::from_static(stream.as_bytes()));
        assert_eq!(&out[..], stream.as_bytes());
        assert_eq!(passing.reported_usage().unwrap().input, 9);
    }

    #[test]
    fn json_bodies_report_usage_and_missing_usage_falls_back_to_the_estimate() {
        let body = br#"{"id":"x","usage":{"input_tokens":7,"output_tokens":3}}"#;
        let mut meter = Meter::new(Api::Responses, false, false);
        meter.pass(Bytes::from_static(body));
        assert_eq!(meter.reported_usage(), Some(Usage { input: 7, cached: 0, output: 3, reasoning: 0 }));

        let mut silent = Meter::new(Api::Chat, true, false);
        silent.pass(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"abcdefghi\"}}]}\n\n"));
        assert_eq!(silent.reported_usage(), None);
        // 9 text bytes → 3 tokens; 10 request bytes → 3 tokens (both rounded up).
        assert_eq!(silent.estimate(10), Usage { input: 3, cached: 0, output: 3, reasoning: 0 });
    }
}
