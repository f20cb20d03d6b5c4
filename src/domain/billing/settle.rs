//! Settling a finished request: the charge goes to the instance's billing writer (one
//! transaction with the usage log, the package/balance split, the ledger entry and the
//! hold release), and while the database is away it is retried before it is left to
//! the crash journal.

use chrono::{DateTime, Utc};

use super::batch::{Job, Outcome};
use super::{resolved, writer, Env, Hold, HoldTicket, Settlement, Ticket, UsageRecord};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Charges a finished request: usage log, package/balance split, ledger entry, key
/// spend, hold release — one transaction (shared with the other jobs of its batch).
/// Settling the same `request_id` twice applies it once.
pub async fn settle(env: Env<'_>, hold: &Hold, record: &UsageRecord) -> Result<Settlement> {
    settle_with(env.billing, hold, record, env.now()).await
}

/// [`settle`] with only what it needs: the writer and the instant (the journal replay
/// at start runs before the application state exists).
pub async fn settle_with(
    writer: &writer::BillingWriter,
    hold: &Hold,
    record: &UsageRecord,
    now: DateTime<Utc>,
) -> Result<Settlement> {
    let job = Job::Settle { hold: hold.clone(), record: Box::new(record.clone()), now };
    let settlement = match writer.submit(job).await? {
        Outcome::Settle(result) => result?,
        _ => return Err(Error::internal("billing writer answered a settlement with an admission")),
    };
    settled(writer, record, &settlement);
    Ok(settlement)
}

/// What an applied settlement teaches the instance (metrics, hold sizes).
fn settled(writer: &writer::BillingWriter, record: &UsageRecord, settlement: &Settlement) {
    if settlement.applied {
        record_settlement_metrics(record, settlement.package, settlement.balance);
        if record.status_code == 200 && !record.estimated {
            writer.hold_sizes().observe(&record.model, record.output_tokens);
        }
    }
}

/// Settles a finished request from its ticket: when its admission is still being
/// committed, the settlement is sent by request id so that, landing in the same
/// writer batch as the admission, the two are netted and no hold row is written at
/// all (see [`super::batch::Job::SettleAdmitted`]). Otherwise — the admission committed
/// already, or it was in another batch, or that batch failed — the request is settled
/// against its committed hold with [`settle_with_retry`], exactly as before.
pub async fn settle_ticket_with_retry(env: Env<'_>, ticket: HoldTicket, record: &UsageRecord) -> Result<Settlement> {
    use tokio::sync::oneshot::error::TryRecvError;
    let (mut answer, fallback) = match ticket.0 {
        Ticket::Ready(hold) => return settle_with_retry(env, &hold, record).await,
        Ticket::Pending { answer, fallback } => (answer, fallback),
    };
    match answer.try_recv() {
        Ok(outcome) => return settle_with_retry(env, &resolved(Ok(outcome), fallback), record).await,
        Err(TryRecvError::Closed) => return settle_with_retry(env, &resolved(Err(()), fallback), record).await,
        Err(TryRecvError::Empty) => {}
    }
    if fallback.request_id == record.request_id {
        let job = Job::SettleAdmitted { user_id: fallback.user_id, record: Box::new(record.clone()), now: env.now() };
        if let Ok(Outcome::Settle(Ok(settlement))) = env.billing.submit(job).await {
            settled(env.billing, record, &settlement);
            return Ok(settlement);
        }
    }
    let hold = resolved(answer.await.map_err(|_| ()), fallback);
    settle_with_retry(env, &hold, record).await
}

/// Requests by model and status, billed amounts by source, upstream latencies.
fn record_settlement_metrics(record: &UsageRecord, package: Money, balance: Money) {
    let model = record.model.clone();
    let status = record.status_code.to_string();
    metrics::counter!("gateway_proxy_requests_total", "model" => model.clone(), "status" => status).increment(1);
    metrics::counter!("gateway_billed_micros_total", "model" => model.clone(), "source" => "package")
        .increment(package.micros().unsigned_abs());
    metrics::counter!("gateway_billed_micros_total", "model" => model.clone(), "source" => "balance")
        .increment(balance.micros().unsigned_abs());
    if let Some(ms) = record.first_byte_ms {
        metrics::histogram!("gateway_upstream_first_byte_seconds", "model" => model.clone()).record(ms as f64 / 1000.0);
    }
    if let Some(ms) = record.total_ms {
        metrics::histogram!("gateway_upstream_total_seconds", "model" => model).record(ms as f64 / 1000.0);
    }
    if record.estimated {
        metrics::counter!("gateway_usage_estimated_total").increment(1);
    }
}

/// How long a settlement keeps retrying while the database is away before it is left
/// to the crash journal (replayed at the next start).
pub const SETTLE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Settles in the background of a request, retrying while the database is away (an
/// outage, a restart), so a served request's charge is never dropped: the request was
/// already written to the crash journal, so if the outage outlasts
/// [`SETTLE_RETRY_FOR`] or the instance is shutting down, the charge waits there.
pub async fn settle_with_retry(env: Env<'_>, hold: &Hold, record: &UsageRecord) -> Result<Settlement> {
    let started = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match settle(env, hold, record).await {
            Ok(s) => {
                if attempt > 1 {
                    tracing::info!(request_id = %record.request_id, attempt, "settlement caught up after the database came back");
                }
                return Ok(s);
            }
            Err(e)
                if e.status_code().as_u16() == 503
                    && started.elapsed() < SETTLE_RETRY_FOR
                    && !env.tasks.is_closed() =>
            {
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(request_id = %record.request_id, attempt, error = %e, "settlement failed; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(request_id = %record.request_id, error = ?e, "settlement failed; left to the crash journal");
                return Err(e);
            }
        }
    }
}
