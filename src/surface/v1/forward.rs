//! One proxied request: authenticate the key, read and check the body, refuse
//! unpriced models, admit against the user's money, then try upstreams in order (the
//! session's preferred upstream first, [`crate::domain::proxy::affinity`]) —
//! failing over on connect errors, timeouts, 5xx and 429 while nothing has reached
//! the client — and stream the chosen answer back through a [`MeteredBody`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use secrecy::ExposeSecret;

use super::body::{spawn_settle, MeteredBody, Settlement};
use super::quota;
use crate::domain::auth::api_keys::{self, KeyOwner};
use crate::domain::billing::{self, AdmissionRequest, HoldTicket, UsageRecord};
use crate::domain::proxy::affinity;
use crate::domain::proxy::error::ProxyError;
use crate::domain::proxy::journal::{Forwarded, JournalEntry};
use crate::domain::proxy::metering::{estimate_tokens, Api, Meter};
use crate::domain::proxy::outgoing::OutgoingBody;
use crate::domain::proxy::pricing::{self, ModelPrice, Usage};
use crate::domain::proxy::request::{
    bearer_key, forwarded_headers, keep_response_header, read_body, with_model, ClientRequest,
};
use crate::domain::proxy::upstreams::{self, Upstream};
use crate::foundation::clock::to_micros;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// Checks the `sk-...` key of a `/v1` request against the database.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyOwner, ProxyError> {
    api_keys::authenticate(&state.db, presented_key(headers)?, state.now()).await?.map_err(ProxyError::from_refusal)
}

/// The same check through the key cache: billing admission re-checks the key under
/// the user's lock, so only requests that reach admission may use this.
async fn authenticate_cached(state: &AppState, headers: &HeaderMap) -> Result<KeyOwner, ProxyError> {
    api_keys::authenticate_cached(&state.db, &state.keys, presented_key(headers)?, state.now())
        .await?
        .map_err(ProxyError::from_refusal)
}

fn presented_key(headers: &HeaderMap) -> Result<&str, ProxyError> {
    bearer_key(headers).ok_or_else(|| {
        ProxyError::unauthorized("missing_api_key", "You didn't provide an API key: send Authorization: Bearer sk-...")
    })
}

/// Handles one `/v1/responses`, `/v1/responses/compact` or `/v1/chat/completions`
/// request end to end; Responses answers carry the user's quota headers.
pub async fn proxy(state: AppState, api: Api, headers: HeaderMap, body: Body) -> Result<Response, ProxyError> {
    let (mut response, quota) = proxy_with_quota(state, api, headers, body).await?;
    if let Some(quota) = quota {
        add_headers(response.headers_mut(), &quota.headers());
    }
    Ok(response)
}

/// [`proxy`] with the quota windows apart (read while the request was upstream, as of
/// its start), for a transport that sends them otherwise (the WebSocket's event).
pub async fn proxy_with_quota(
    state: AppState,
    api: Api,
    headers: HeaderMap,
    body: Body,
) -> Result<(Response, Option<quota::Quota>), ProxyError> {
    // Latencies in the usage log count from arrival, gateway work included.
    let arrived = Instant::now();
    let owner = authenticate_cached(&state, &headers).await?;
    let settings = state.settings.get().await?;
    state.limits.check_rate(&settings.rate_limits, owner.user_id, owner.key_id).await?;
    let bytes = read_body(&headers, body, state.config.max_body_bytes).await?;
    let request = ClientRequest::parse(&bytes)?;
    let slot = if request.stream {
        Some(state.limits.open_stream(settings.rate_limits.user_max_concurrent_streams, owner.user_id).await?)
    } else {
        None
    };
    let snapshot = state.catalog.get().await;
    let price =
        snapshot.prices.get(&request.model).cloned().ok_or_else(|| ProxyError::model_not_found(&request.model))?;
    let affinity_key = affinity::key(&headers, request.prompt_cache_key.as_deref());
    let candidates = affinity::prefer(snapshot.candidates(&request.model, &mut rand::thread_rng()), affinity_key);
    if candidates.is_empty() {
        return Err(ProxyError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no_upstream",
            format!("no upstream is configured to serve `{}`", request.model),
        ));
    }
    let upstream_body = request.upstream_body(api, bytes.clone())?;
    let worst_case = Usage {
        input: estimate_tokens(bytes.len() as u64),
        cached: 0,
        output: billing::holds::output_tokens(
            billing::holds::HoldRule {
                default_tokens: settings.hold_output_tokens.max(1),
                floor: billing::holds::floor_for(&request.model, settings.hold_floor_tokens, &settings.hold_floors),
                max_output_tokens: request.max_output_tokens,
            },
            state.billing.hold_sizes().learned(&request.model),
        ),
        reasoning: 0,
    };
    let hold_amount = pricing::cost(&price, &worst_case, settings.markup);
    let request_id = crate::domain::telemetry::new_request_id();
    let admission_request = AdmissionRequest {
        request_id: Some(request_id.clone()),
        user_id: owner.user_id,
        api_key_id: owner.key_id,
        hold: hold_amount,
    };
    let headroom_needed = Money::from_micros(hold_amount.micros().saturating_mul(SPECULATION_MARGIN));
    let policy = billing::Policy::new(&settings, Some(&request.model));
    let default_cap = policy.default_cap;
    // Before its hold can be written: a process killed between the hold's commit and the
    // `forwarded` line leaves a hold its journal's replay releases uncharged (`journal`).
    state.journal.admitting(&request_id, owner.user_id);
    let admission = match billing::admit_speculative(state.env(), &admission_request, headroom_needed, &policy).await {
        // Admitted on this instance's hint; the hold is written while the request is upstream.
        Some(ticket) => ticket,
        // Admitted before anything is forwarded: a client gone meanwhile drops the
        // answer and the writer releases the hold at once.
        None => match billing::admit_with(state.env(), &admission_request, &policy).await {
            Ok(Ok(hold)) => HoldTicket::ready(hold),
            Ok(Err(refusal)) => return Err(ProxyError::from_refusal(refusal)),
            Err(e) => return Err(quota::admission_refusal(&state, owner.user_id, default_cap, hold_amount, e).await),
        },
    };
    let admitted = Admitted {
        state: state.clone(),
        api,
        user_id: owner.user_id,
        api_key_id: owner.key_id,
        request_id,
        admission,
        request,
        request_bytes: bytes.len(),
        upstream_body,
        outgoing: forwarded_headers(&headers),
        price,
        markup: settings.markup,
        attempts: usize::try_from(settings.upstream_max_attempts.clamp(1, 10)).unwrap_or(1),
        candidates,
        arrived,
    };
    // From here on the request must settle. The rest runs in a tracked task, so a
    // client that goes away while an upstream is being tried cannot cancel it (the
    // response it then produces is dropped, which settles it as a disconnect).
    let forwarded = state.tasks.spawn(forward_admitted(admitted));
    // The user's quota windows, read while the request is upstream (as of its start).
    let quota = async {
        match api {
            Api::Responses | Api::Compact => quota::windows(&state, owner.user_id, default_cap).await.ok(),
            Api::Chat => None,
        }
    };
    let (forwarded, quota) = tokio::join!(forwarded, quota);
    match forwarded {
        Ok(result) => result.map(|response| {
            let response = match slot {
                Some(slot) => slot.attach(response),
                None => response,
            };
            (response, quota)
        }),
        Err(e) => {
            Err(ProxyError::from(crate::foundation::error::Error::internal(format!("forwarding task failed: {e}"))))
        }
    }
}

/// Adds (replacing) headers whose values are valid header text; others are skipped.
pub fn add_headers(headers: &mut HeaderMap, extra: &[(&'static str, String)]) {
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
}

/// How many holds' worth of headroom a user's last admission on this instance must
/// have left for the next request to be admitted on the hint, without waiting for the
/// database (see [`billing::admit_speculative`]).
const SPECULATION_MARGIN: i64 = 16;

/// A request on its way upstream, admitted or being admitted.
struct Admitted {
    state: AppState,
    api: Api,
    user_id: i64,
    api_key_id: i64,
    request_id: String,
    admission: HoldTicket,
    request: ClientRequest,
    request_bytes: usize,
    upstream_body: Bytes,
    outgoing: reqwest::header::HeaderMap,
    price: ModelPrice,
    markup: Money,
    attempts: usize,
    candidates: Vec<Arc<Upstream>>,
    arrived: Instant,
}

/// Tries the candidates in order until one answers; settles at no cost if none does.
async fn forward_admitted(a: Admitted) -> Result<Response, ProxyError> {
    let Admitted {
        state,
        api,
        user_id,
        api_key_id,
        request_id,
        admission,
        request,
        request_bytes,
        upstream_body,
        outgoing,
        price,
        markup,
        attempts,
        candidates,
        arrived,
    } = a;
    let mut record = UsageRecord {
        request_id: request_id.clone(),
        endpoint: api.path().to_string(),
        model: request.model.clone(),
        streamed: request.stream,
        ..UsageRecord::default()
    };
    let started = arrived;
    // Its `forwarded` line is written when an attempt's body is handed to a connection,
    // before any byte goes upstream: a process that dies from then on is charged for this
    // request at its next start (see `journal`).
    let mut journal = state.journal.forwarding(Forwarded {
        request_id: request_id.clone(),
        user_id,
        api_key_id,
        admitted_at: to_micros(state.now()),
        endpoint: api.path().to_string(),
        model: request.model.clone(),
        upstream_id: candidates.first().map(|u| u.id),
        streamed: request.stream,
        request_bytes: request_bytes as u64,
        price_input: price.input.micros(),
        price_cached: price.cached_input.micros(),
        price_output: price.output.micros(),
        markup: markup.micros(),
    });
    let mut last_failure: Option<Failure> = None;
    for upstream in candidates.iter().take(attempts) {
        let body = match upstream.mapped_model(&request.model) {
            // Cannot fail: the body was parsed as JSON before admission.
            Some(name) => with_model(&upstream_body, name).unwrap_or_else(|_| upstream_body.clone()),
            None => upstream_body.clone(),
        };
        let body = OutgoingBody::new(body, journal.as_ref().map(JournalEntry::send_mark), upstream.id);
        let call = Call { state: &state, upstream, api, headers: &outgoing, body };
        match attempt(call).await {
            Ok(answer) => {
                if upstream.consecutive_failures > 0 || !upstream.healthy {
                    mark_recovered(&state, upstream.id);
                }
                record.upstream_id = Some(upstream.id);
                record.status_code = answer.status.as_u16();
                record.first_byte_ms = Some(started.elapsed().as_millis() as i64);
                let billable = answer.status.is_success();
                if !billable {
                    record.error = Some(format!("upstream answered {}", answer.status));
                }
                let settlement = Settlement {
                    state: state.clone(),
                    hold: admission,
                    record,
                    price,
                    markup,
                    request_bytes,
                    started,
                    billable,
                    journal: journal.take(),
                };
                return Ok(respond(answer, &request, api, settlement, &request_id));
            }
            Err(failure) => {
                tracing::warn!(upstream = %upstream.name, request_id = %request_id, error = %failure.message(), "upstream attempt failed");
                record.upstream_id = Some(upstream.id);
                // Recorded before the next attempt, so the catalog skips it at once
                // when this failure made it unhealthy.
                match upstreams::record_failure(&state.db, upstream.id, &failure.message(), state.now()).await {
                    Ok(true) => state.catalog.invalidate(),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot record an upstream failure"),
                }
                last_failure = Some(failure);
            }
        }
    }
    let error = match last_failure {
        Some(Failure::Timeout) => ProxyError::gateway_timeout("the upstream did not answer in time"),
        Some(f) => ProxyError::bad_gateway(format!("every upstream failed; last error: {}", f.message())),
        None => ProxyError::bad_gateway("no upstream could be tried"),
    };
    record.status_code = error.status.as_u16();
    record.error = Some(error.message.clone());
    record.total_ms = Some(started.elapsed().as_millis() as i64);
    spawn_settle(state, admission, record, journal, false);
    Err(error)
}

fn mark_recovered(state: &AppState, id: i64) {
    let state = state.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        if upstreams::record_success(&state.db, id, state.now()).await.is_ok() {
            state.catalog.invalidate();
        }
    });
}

/// Why one upstream attempt failed before anything reached the client.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Timeout,
    Status(u16, String),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::Connect(e) => format!("connection failed: {e}"),
            Failure::Timeout => "no first byte within the timeout".into(),
            Failure::Status(code, body) => format!("HTTP {code}: {body}"),
        }
    }
}

/// An upstream answer whose status and first chunk are in.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    first: Option<Bytes>,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
}

struct Call<'a> {
    state: &'a AppState,
    upstream: &'a Arc<Upstream>,
    api: Api,
    headers: &'a reqwest::header::HeaderMap,
    body: OutgoingBody,
}

/// Sends to one upstream and waits for its first byte (bounded by the first-byte timeout).
async fn attempt(call: Call<'_>) -> Result<Answer, Failure> {
    let timeout = call.state.config.upstream_first_byte_timeout;
    let send = async {
        let response = call
            .state
            .http
            .post(call.upstream.url(call.api.path()))
            .headers(call.headers.clone())
            .bearer_auth(call.upstream.api_key.expose_secret())
            .body(reqwest::Body::wrap(call.body))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    Failure::Timeout
                } else {
                    Failure::Connect(crate::foundation::redact::transport_error(e))
                }
            })?;
        let status = response.status();
        if is_upstream_failure(status) {
            // The body goes into the client's error and the usage row the user reads: a
            // provider that echoes the key it was sent ("invalid api key sk-…") must not
            // hand the operator's key to a user.
            let text = response.text().await.unwrap_or_default();
            let text = crate::foundation::redact::scrub(&text, &[call.upstream.api_key.expose_secret()]);
            return Err(Failure::Status(status.as_u16(), text.chars().take(300).collect()));
        }
        let headers = response.headers().clone();
        let mut rest = response.bytes_stream().boxed();
        let first = match rest.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(e)) => return Err(Failure::Connect(crate::foundation::redact::transport_error(e))),
            None => None,
        };
        Ok(Answer { status, headers, first, rest })
    };
    tokio::time::timeout(timeout, send).await.map_err(|_| Failure::Timeout)?
}

/// Answers that say "this upstream cannot serve now", not "this request is wrong":
/// 5xx, 429, and 401/403 (the upstream's credential is the gateway's problem, never
/// shown to the user as theirs). Other 4xx are passed through to the client.
fn is_upstream_failure(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
}

fn respond(answer: Answer, request: &ClientRequest, api: Api, settlement: Settlement, request_id: &str) -> Response {
    let sse = answer
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut settlement = settlement;
    settlement.record.streamed = sse;
    let meter = Meter::new(api, sse, request.needs_usage_rewrite(api));
    let idle = settlement.state.config.upstream_idle_timeout;
    let body = MeteredBody::new(answer.rest, answer.first, meter, settlement).with_idle_timeout(idle);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        if name.as_str() == "x-request-id" {
            // `x-request-id` stays the id of the client's request (theirs, or the one the
            // gateway gave it); the upstream's own id is kept apart for support cases.
            response.headers_mut().insert("x-upstream-request-id", value.clone());
        } else if keep_response_header(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-gateway-request-id", value);
    }
    response
}
