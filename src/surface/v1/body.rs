//! The response body handed to axum: upstream chunks pass through as they arrive,
//! metered on the way, and the request is settled exactly once — when the stream
//! ends, when the upstream breaks, or when the client goes away (the body is
//! dropped). Settlement runs in a tracked task, so a disconnect cannot cancel it and
//! shutdown waits for it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Future, Stream, StreamExt};

use crate::domain::billing::{self, HoldTicket, UsageRecord};
use crate::domain::proxy::journal::JournalEntry;
use crate::domain::proxy::metering::Meter;
use crate::domain::proxy::pricing::{self, ModelPrice};
use crate::domain::proxy::upstreams;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// Everything needed to settle a request once it is over.
pub struct Settlement {
    pub state: AppState,
    /// The request's hold, possibly still being committed.
    pub hold: HoldTicket,
    /// Pre-filled identity fields (request id, endpoint, model, upstream, status).
    pub record: UsageRecord,
    pub price: ModelPrice,
    pub markup: Money,
    pub request_bytes: usize,
    pub started: Instant,
    /// False for upstream error answers (4xx passed through): logged at cost 0.
    pub billable: bool,
    /// The request's place in the crash journal (none when the journal is off).
    pub journal: Option<JournalEntry>,
}

/// How a metered response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Completed,
    UpstreamBroke(String),
    ClientGone,
}

impl Settlement {
    /// Fills usage and cost from the meter and settles in a tracked task.
    pub fn finish(self, meter: Option<&Meter>, ending: Ending) {
        let Settlement { state, hold, mut record, price, markup, request_bytes, started, billable, journal } = self;
        record.total_ms = Some(started.elapsed().as_millis() as i64);
        if let (true, Some(meter)) = (billable, meter) {
            let (usage, estimated) = match meter.reported_usage() {
                Some(usage) => (usage, false),
                None => (meter.estimate(request_bytes), true),
            };
            record.input_tokens = usage.input;
            record.cached_tokens = usage.cached.min(usage.input);
            record.output_tokens = usage.output;
            record.reasoning_tokens = usage.reasoning;
            record.estimated = estimated;
            record.cost = pricing::cost(&price, &usage, markup);
        }
        match &ending {
            Ending::Completed => {}
            Ending::UpstreamBroke(e) => record.error = Some(format!("upstream stream broke: {e}")),
            Ending::ClientGone => record.error = Some("client disconnected before the end".into()),
        }
        spawn_settle(state, hold, record, journal, matches!(ending, Ending::UpstreamBroke(_)));
    }
}

/// Settles (and, when the upstream broke mid-stream, counts a health failure) in a
/// tracked task. The measured record goes to the crash journal first, so a process
/// that dies before the settlement commits is charged exactly this at its next start.
pub fn spawn_settle(
    state: AppState,
    hold: HoldTicket,
    record: UsageRecord,
    journal: Option<JournalEntry>,
    upstream_failed: bool,
) {
    if let Some(entry) = &journal {
        entry.measured(&record);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::error!(request_id = %record.request_id, "no runtime to settle on; the journal replays it at the next start");
        if let Some(entry) = journal {
            entry.keep();
        }
        return;
    }
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        if upstream_failed {
            if let Some(id) = record.upstream_id {
                let error = record.error.clone().unwrap_or_default();
                if let Ok(true) = upstreams::record_failure(&state.db, id, &error, state.now()).await {
                    state.catalog.invalidate();
                }
            }
        }
        match billing::settle_ticket_with_retry(state.env(), hold, &record).await {
            Ok(_) => {
                if let Some(entry) = journal {
                    entry.settled();
                }
            }
            Err(e) => {
                tracing::error!(request_id = %record.request_id, error = %e,
                    "usage could not be settled; the journal replays it at the next start");
                if let Some(entry) = journal {
                    entry.keep();
                }
            }
        }
    });
}

/// The metered response body.
pub struct MeteredBody {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    first: Option<Bytes>,
    meter: Meter,
    settlement: Option<Settlement>,
    done: bool,
    /// Cuts a stalled upstream: the allowed silence and the timer since the last chunk.
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl MeteredBody {
    /// `first` is the chunk already read while deciding whether to fail over.
    pub fn new(
        upstream: BoxStream<'static, reqwest::Result<Bytes>>,
        first: Option<Bytes>,
        meter: Meter,
        settlement: Settlement,
    ) -> Self {
        MeteredBody { upstream, first, meter, settlement: Some(settlement), done: false, idle: None }
    }

    /// Ends the stream as broken when the upstream sends nothing for `limit`.
    pub fn with_idle_timeout(mut self, limit: Duration) -> Self {
        self.idle = Some((limit, Box::pin(tokio::time::sleep(limit))));
        self
    }

    fn rearm_idle(&mut self) {
        if let Some((limit, timer)) = &mut self.idle {
            timer.as_mut().reset(tokio::time::Instant::now() + *limit);
        }
    }

    fn end(&mut self, ending: Ending) {
        if let Some(settlement) = self.settlement.take() {
            settlement.finish(Some(&self.meter), ending);
        }
    }
}

impl Stream for MeteredBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            let out = this.meter.pass(first);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(out)));
            }
        }
        loop {
            match this.upstream.poll_next_unpin(cx) {
                Poll::Pending => {
                    let Some((limit, timer)) = &mut this.idle else { return Poll::Pending };
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let message = format!("no data from the upstream for {}s", limit.as_secs());
                    tracing::warn!(error = %message, "cutting a stalled upstream stream");
                    this.done = true;
                    this.end(Ending::UpstreamBroke(message.clone()));
                    return Poll::Ready(Some(Err(std::io::Error::other(message))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    this.rearm_idle();
                    let out = this.meter.pass(chunk);
                    if let Some(entry) = this.settlement.as_mut().and_then(|s| s.journal.as_mut()) {
                        entry.progress(this.meter.output_bytes());
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let message = e.to_string();
                    this.end(Ending::UpstreamBroke(message.clone()));
                    return Poll::Ready(Some(Err(std::io::Error::other(message))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.meter.finish();
                    this.end(Ending::Completed);
                    return Poll::Ready(if tail.is_empty() { None } else { Some(Ok(tail)) });
                }
            }
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the server is stopping).
        self.end(Ending::ClientGone);
    }
}
