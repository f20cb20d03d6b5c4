//! Billing: admit a request against what the user can pay, then settle its real cost —
//! package allowance first, then balance — in one transaction with the usage log and
//! the ledger entry.
//!
//! Concurrency: every billing transaction begins by touching the user's row
//! (`UPDATE users SET held = held ...`), which takes the row lock on PostgreSQL (and
//! SQLite serialises writers anyway), so the reads that follow are consistent for that
//! user across instances. Overspend is bounded by the holds: admission requires
//! `allowance left today + balance − held ≥ hold`, so the only way past zero is a
//! request whose real cost exceeds its own hold (settlement never refuses a served
//! request; the excess is at most `cost − hold` per such request).
//!
//! Day boundary: a request is billed to the business day (and the package) in force
//! when it was admitted, even if it finishes after midnight.
//!
//! Admissions and settlements run through the instance's [`writer::BillingWriter`],
//! which commits every job waiting at the moment in one transaction ([`batch`]).
//!
//! Admission on a hint: once a user's admission on this instance left at least 16
//! holds' worth of headroom, their next requests are admitted at once against that
//! hint (each takes its hold from it) and forwarded while the writer commits their
//! holds ([`admit_speculative`]); a commit refreshes the hint from the database. No
//! database round trip is left on the request path. Such an admission is forced: the
//! hold is written and the request charged even if, by then, the rules would refuse
//! it. That happens only when the hint went stale without this instance being told
//! (every gateway change that makes a user poorer or a key unusable calls
//! [`user_changed`], which drops the hint here and, on PostgreSQL, on every instance),
//! so the excess is bounded by what one instance admits on a hint before the next
//! commit (≤ 10 ms plus any writer backlog) or notice. The holds an instance has taken
//! on a hint but not yet committed keep counting against it, and an admission that
//! waits counts them too (and is counted by the hint until it commits), so one
//! instance's admissions, on the hint or not, never together exceed the user's funds.

pub mod allowance;
mod batch;
pub mod caps;
pub mod env;
pub mod holds;
pub mod quota;
pub mod rules;
pub mod usage;
pub mod writer;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::AnyConnection;

use crate::domain::auth::api_keys::KeyRefusal;
use crate::foundation::clock::{self, date_key, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use batch::{Job, Outcome};
pub use env::Env;
use rules::{Preference, Refusal};

/// How long a hold may live before the janitor job releases it (a crashed instance's
/// holds must not block a user forever; streams longer than this are still settled).
pub const HOLD_LIFETIME_HOURS: i64 = 6;

/// What the proxy asks for before forwarding.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// The request's id when the caller already named it (else one is generated).
    pub request_id: Option<String>,
    pub user_id: i64,
    pub api_key_id: i64,
    /// Worst-case cost the proxy estimates for the request.
    pub hold: Money,
}

/// What an admission takes from the settings and the request besides the hold.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The global per-user daily cap (`Settings.default_daily_cap`).
    pub default_cap: Option<Money>,
    /// The preference of users who chose none (`Settings.default_billing_preference`).
    pub default_preference: Preference,
    /// The requested model: packages pay only for the models they list.
    pub model: Option<String>,
}

impl Policy {
    /// The policy the settings give a request for `model`.
    pub fn new(settings: &crate::domain::settings::Settings, model: Option<&str>) -> Policy {
        Policy {
            default_cap: settings.default_daily_cap,
            default_preference: settings.default_billing_preference,
            model: model.map(str::to_string),
        }
    }
}

/// An admitted request's reservation; pass it back to [`settle`].
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: i64,
    /// The request's id, generated at admission (the usage row of the proxy carries it).
    pub request_id: String,
    pub user_id: i64,
    pub api_key_id: i64,
    pub amount: Money,
    pub admitted_at: DateTime<Utc>,
    pub business_date: NaiveDate,
    /// The package in force at admission (charged first at settlement).
    pub user_package_id: Option<i64>,
    /// Every package in force at admission that pays for the request, in the order
    /// they pay (earliest-ending first); the first is `user_package_id`.
    pub packages: Vec<i64>,
    /// The 5-hour blocks the request counts in: (scope, block start in micro-seconds).
    pub blocks: Vec<(String, i64)>,
    /// Who pays first, as it was at admission.
    pub preference: Preference,
    /// The key has a cap of its own (daily USD or concurrency): its spend is counted
    /// per day, and its requests are never admitted on a hint.
    pub key_capped: bool,
    /// What the user could still have admitted after this hold (allowance left +
    /// balance − held): the proxy's hint for forwarding the next request while its
    /// admission is still being committed.
    pub headroom: Money,
    /// Set on a forced admission (the request was already forwarded on the instance's
    /// headroom hint) that the rules would have refused: the code of the refusal. The
    /// request is still held and charged; the hint was stale and is dropped.
    pub refused: Option<&'static str>,
}

/// A request's hold: committed before forwarding, or being committed while the
/// request is already upstream (see [`admit_speculative`]).
pub struct HoldTicket(Ticket);

enum Ticket {
    Ready(Hold),
    Pending {
        answer: tokio::sync::oneshot::Receiver<Outcome>,
        /// Settles the request if its admission could not be written at all (the
        /// database was away): a served request is charged even without a hold.
        fallback: Hold,
    },
}

impl HoldTicket {
    /// A hold already committed.
    pub fn ready(hold: Hold) -> HoldTicket {
        HoldTicket(Ticket::Ready(hold))
    }

    /// The hold to settle against, once its admission has committed.
    pub async fn resolve(self) -> Hold {
        match self.0 {
            Ticket::Ready(hold) => hold,
            Ticket::Pending { answer, fallback } => resolved(answer.await.map_err(|_| ()), fallback),
        }
    }
}

/// The hold an admission's outcome gives (`Err`: the writer stopped), else `fallback`.
fn resolved(outcome: std::result::Result<Outcome, ()>, fallback: Hold) -> Hold {
    match outcome {
        Ok(Outcome::Admit(Ok(Ok(hold)))) => {
            if let Some(code) = hold.refused {
                tracing::warn!(request_id = %hold.request_id, user_id = hold.user_id, refusal = code,
                        "a request forwarded on a stale headroom hint would have been refused; it is charged as served");
            }
            hold
        }
        other => {
            let error = match other {
                Ok(Outcome::Admit(Err(e))) => e.to_string(),
                Ok(_) => "unexpected outcome".to_string(),
                Err(_) => "the billing writer stopped".to_string(),
            };
            tracing::error!(request_id = %fallback.request_id, error = %error,
                    "the admission of a forwarded request failed; settling it without a hold");
            fallback
        }
    }
}

/// What a finished request used and cost, as measured by the proxy (also written to
/// the proxy's crash journal, hence serialisable).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    /// Unique per request; settling the same id twice changes nothing the second time.
    pub request_id: String,
    pub endpoint: String,
    pub model: String,
    pub upstream_id: Option<i64>,
    pub status_code: u16,
    pub streamed: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: Money,
    /// True when usage was estimated because the upstream never reported it.
    pub estimated: bool,
    pub first_byte_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub error: Option<String>,
}

/// How a settled charge was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub package: Money,
    pub balance: Money,
    pub balance_after: Money,
    /// False when this request id had already been settled (nothing changed).
    pub applied: bool,
}

/// The package that applies to a user at an instant (see the packages module's
/// activation contract: active or queued rows whose window contains the instant).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApplicablePackage {
    pub id: i64,
    pub name: String,
    /// `None` = no daily limit.
    pub daily_limit: Option<i64>,
    pub starts_at: i64,
    pub ends_at: i64,
}

/// What an admission at `at` would have put on a hold besides the money: the packages
/// that pay, the 5-hour blocks running, the preference and whether the key has caps.
/// Used to rebuild the hold of a request whose admission was lost (crash recovery);
/// the preference is the user's own, else the admin default the caller read from the settings.
#[derive(Debug, Clone, Default)]
pub struct AdmissionContext {
    pub packages: Vec<i64>,
    pub blocks: Vec<(String, i64)>,
    pub preference: Preference,
    pub key_capped: bool,
}

/// Reads the [`AdmissionContext`] of a request admitted at `at`; `default_preference`
/// is `Settings.default_billing_preference` (for users who chose none).
pub async fn admission_context(
    conn: &mut AnyConnection,
    user_id: i64,
    api_key_id: i64,
    at: DateTime<Utc>,
    default_preference: Preference,
) -> Result<AdmissionContext> {
    let t = to_micros(at);
    let packages: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM user_packages WHERE user_id = $1 AND status IN ('active', 'queued', 'expired', 'ended') \
           AND starts_at <= $2 AND ends_at > $2 ORDER BY ends_at, id",
    )
    .bind(user_id)
    .bind(t)
    .fetch_all(&mut *conn)
    .await?;
    let packages: Vec<i64> = packages.into_iter().map(|(id,)| id).collect();
    let since = t - chrono::Duration::hours(clock::windows::BLOCK_HOURS).num_microseconds().unwrap_or(0);
    let mut blocks = Vec::new();
    let scopes = packages.iter().map(|id| allowance::package_scope(*id)).chain([allowance::user_scope(user_id)]);
    for scope in scopes {
        let start: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(starts_at) FROM window_usage WHERE scope = $1 AND kind = '5h' AND starts_at > $2 AND starts_at <= $3",
        )
        .bind(&scope)
        .bind(since)
        .bind(t)
        .fetch_one(&mut *conn)
        .await?;
        blocks.extend(start.map(|start| (scope, start)));
    }
    let user: Option<(Option<String>,)> = sqlx::query_as("SELECT billing_preference FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    let preference = Preference::stored_or(user.and_then(|(p,)| p).as_deref(), default_preference);
    let caps: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT daily_cap, max_concurrency FROM api_keys WHERE id = $1")
            .bind(api_key_id)
            .fetch_optional(&mut *conn)
            .await?;
    let key_capped = caps.is_some_and(|(cap, max)| cap.is_some() || max.is_some());
    Ok(AdmissionContext { packages, blocks, preference, key_capped })
}

/// Finds the package in force for `user_id` at `at`.
pub async fn applicable_package(
    conn: &mut AnyConnection,
    user_id: i64,
    at: DateTime<Utc>,
) -> Result<Option<ApplicablePackage>> {
    Ok(sqlx::query_as::<_, ApplicablePackage>(
        "SELECT id, name, daily_limit, starts_at, ends_at FROM user_packages \
         WHERE user_id = $1 AND status IN ('active', 'queued') AND starts_at <= $2 AND ends_at > $2 \
         ORDER BY starts_at, id LIMIT 1",
    )
    .bind(user_id)
    .bind(to_micros(at))
    .fetch_optional(conn)
    .await?)
}

/// Today's package and balance usage of a user (zeros when nothing was billed yet).
pub async fn day_usage(conn: &mut AnyConnection, user_id: i64, date: NaiveDate) -> Result<(Money, Money)> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT package_used, balance_used FROM daily_usage WHERE user_id = $1 AND business_date = $2")
            .bind(user_id)
            .bind(date_key(date))
            .fetch_optional(conn)
            .await?;
    let (package, balance) = row.unwrap_or((0, 0));
    Ok((Money::from_micros(package), Money::from_micros(balance)))
}

/// Reserves `hold` for a request, or refuses it with an error the proxy shows as-is
/// (402 when the user cannot pay, 429 when a daily cap is reached, 401/403 for a key
/// revoked, expired or over its limit, or a suspended user).
pub async fn admit(env: Env<'_>, request: &AdmissionRequest) -> Result<Hold> {
    admit_checked(env, request).await?.map_err(|refusal| Error::forbidden(refusal.code(), refusal.message()))
}

/// [`admit`], with the key's refusal kept apart so the proxy can answer it in the
/// OpenAI shape of an authentication error.
pub async fn admit_checked(env: Env<'_>, request: &AdmissionRequest) -> Result<std::result::Result<Hold, KeyRefusal>> {
    let settings = env.settings.get().await?;
    admit_with(env, request, &Policy::new(&settings, None)).await
}

/// [`admit_checked`] with the policy already taken from the settings.
pub async fn admit_with(
    env: Env<'_>,
    request: &AdmissionRequest,
    policy: &Policy,
) -> Result<std::result::Result<Hold, KeyRefusal>> {
    let job = Job::Admit { request: request.clone(), now: env.now(), policy: policy.clone(), forced: false };
    let result = match env.billing.submit(job).await {
        Ok(Outcome::Admit(result)) => result,
        Ok(_) => Err(Error::internal("billing writer answered an admission with a settlement")),
        Err(e) => Err(e),
    };
    result
}

/// Admits without waiting when this instance's last admission of the user left at
/// least `needed` (several holds' worth) to spare: the hold is taken from that hint at
/// once and written by the billing writer while the request goes upstream. The written
/// admission is forced — the request is served and charged whatever it finds — so
/// overspend is bounded by what one instance admits before its next commit on a hint
/// gone stale without it being told (another instance's requests, a package expiring,
/// a direct database edit). Gateway changes that make a user poorer or a key unusable
/// drop the hint at once ([`user_changed`]). `None`: admit synchronously instead.
pub async fn admit_speculative(
    env: Env<'_>,
    request: &AdmissionRequest,
    needed: Money,
    policy: &Policy,
) -> Option<HoldTicket> {
    if !env.billing.take_headroom(request.user_id, request.api_key_id, needed, request.hold) {
        return None;
    }
    let now = env.now();
    let request_id = request.request_id.clone().unwrap_or_else(crate::domain::telemetry::new_request_id);
    let request = AdmissionRequest { request_id: Some(request_id.clone()), ..request.clone() };
    let fallback = Hold {
        id: 0,
        request_id,
        user_id: request.user_id,
        api_key_id: request.api_key_id,
        amount: Money::ZERO,
        admitted_at: now,
        business_date: env.calendar().business_date(now),
        user_package_id: None,
        packages: Vec::new(),
        blocks: Vec::new(),
        preference: policy.default_preference,
        key_capped: false,
        headroom: Money::ZERO,
        refused: None,
    };
    let request_hold = request.hold;
    let job = Job::Admit { request, now, policy: policy.clone(), forced: true };
    match env.billing.enqueue(job).await {
        Ok(answer) => Some(HoldTicket(Ticket::Pending { answer, fallback })),
        Err(_) => {
            env.billing.untake_headroom(fallback.user_id, request_hold);
            None
        }
    }
}

/// Call after any change that may make a user poorer or one of their keys unusable
/// (debit, refund, suspension, cap, key revoked or limited): their next request on any
/// instance is admitted before it is forwarded, so the change takes effect at once.
pub async fn user_changed(env: Env<'_>, user_id: i64) {
    env.billing.forget_headroom(user_id);
    crate::foundation::cluster::publish(env.db, crate::foundation::cluster::Topic::User(user_id)).await;
}

/// When what refused a request frees up again (for the message and `Retry-After`),
/// and the figures a refusal for want of money names.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Resets {
    /// The first package that has room for the hold again (`package_only`).
    pub packages: Option<DateTime<Utc>>,
    /// The end of the user's 5-hour block (5-hour cap).
    pub block: Option<DateTime<Utc>>,
    /// What the request reserves for its worst case, and what the user has left for it.
    pub hold: Money,
    pub available: Money,
}

fn rate_limited(what: &str, calendar: &BusinessCalendar, now: DateTime<Utc>, reset: DateTime<Utc>) -> Error {
    Error::RateLimited {
        message: format!("{what}; it resets at {}", calendar.format(reset)),
        retry_after_secs: (reset - now).num_seconds().max(1) as u64,
    }
}

/// The part of a cap refusal that names the request's reserve and what to do about it.
fn reserve(hold: Money) -> String {
    format!(" (this request reserves {hold} USD for its worst case; a smaller max_output_tokens may fit)")
}

pub(crate) fn refusal_error(
    refusal: Refusal,
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
    resets: Resets,
) -> Error {
    match refusal {
        Refusal::CannotPay { has_package: true } => Error::PaymentRequired {
            code: "insufficient_quota",
            message: format!(
                "daily package allowance used up and balance too low for this request: it reserves {} USD \
                 for its worst case and {} USD is left; send a smaller max_output_tokens, top up, or wait \
                 for the daily reset",
                resets.hold,
                resets.available.max(Money::ZERO)
            ),
        },
        Refusal::CannotPay { has_package: false } => Error::PaymentRequired {
            code: "insufficient_balance",
            message: format!(
                "insufficient balance for this request: it reserves {} USD for its worst case and the \
                 balance leaves {} USD; send a smaller max_output_tokens, top up, or buy a package",
                resets.hold,
                resets.available.max(Money::ZERO)
            ),
        },
        Refusal::CapReached => rate_limited(
            &format!("daily spending cap reached{}", reserve(resets.hold)),
            calendar,
            now,
            calendar.next_reset(now),
        ),
        Refusal::PackageExhausted => match resets.packages {
            Some(reset) => rate_limited(
                "package allowance used up and the billing preference is package_only",
                calendar,
                now,
                reset,
            ),
            None => Error::PaymentRequired {
                code: "insufficient_quota",
                message: "no package pays for this request and the billing preference is package_only; \
                          buy a package or change the preference"
                    .into(),
            },
        },
        Refusal::BlockCapReached => {
            let reset = resets.block.unwrap_or_else(|| now + chrono::Duration::hours(clock::windows::BLOCK_HOURS));
            rate_limited(&format!("5-hour spending cap reached{}", reserve(resets.hold)), calendar, now, reset)
        }
        Refusal::KeyCapReached => rate_limited(
            &format!("this key's daily spending cap reached{}", reserve(resets.hold)),
            calendar,
            now,
            calendar.next_reset(now),
        ),
        Refusal::KeyBusy => Error::RateLimited {
            message: "this key already runs as many requests as it may at once; retry when one ends".into(),
            retry_after_secs: 1,
        },
    }
}

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
/// all (see [`batch::Job::SettleAdmitted`]). Otherwise — the admission committed
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

/// Releases holds whose request never settled within [`HOLD_LIFETIME_HOURS`]. A dead
/// instance's requests are normally charged long before, by the replay of its crash
/// journal when it starts again; what is left here belongs to an instance that never
/// came back (or lost its data directory), so each release is reported with its
/// request id and amount: the operator can tell what went uncharged.
pub async fn release_expired_holds(env: Env<'_>) -> Result<u64> {
    let now = to_micros(env.now());
    let expired: Vec<(i64, i64, i64, Option<String>)> =
        sqlx::query_as("SELECT id, user_id, amount, request_id FROM holds WHERE expires_at <= $1")
            .bind(now)
            .fetch_all(env.db.pool())
            .await?;
    let mut released = 0;
    let mut amount = Money::ZERO;
    for (id, user_id, held, request_id) in expired {
        if release_hold(env.db, id, user_id).await? {
            released += 1;
            amount = amount.saturating_add(Money::from_micros(held));
            tracing::warn!(user_id, request_id = request_id.as_deref().unwrap_or("-"), amount = %Money::from_micros(held),
                "released an expired hold uncharged: no journal replay settled its request");
        }
    }
    if released > 0 {
        metrics::counter!("gateway_expired_holds_released_total").increment(released);
        metrics::counter!("gateway_expired_holds_released_micros_total").increment(amount.micros().unsigned_abs());
    }
    Ok(released)
}

/// At the start of the only instance a SQLite file serves (`foundation::db::single_instance`),
/// after its crash journal was replayed: every hold still written belongs to a process
/// that died between committing the hold and journalling its request — and since the
/// journal line is written before any byte goes upstream, that request never reached an
/// upstream. Each is released uncharged now (logged with its request id and counted like
/// an expired one) instead of blocking the user's money for 6 h. Returns how many and how much.
pub async fn release_holds_of_dead_processes(db: &Db) -> Result<(u64, Money)> {
    let left: Vec<(i64, i64, i64, Option<String>)> =
        sqlx::query_as("SELECT id, user_id, amount, request_id FROM holds ORDER BY id").fetch_all(db.pool()).await?;
    let mut released = 0;
    let mut amount = Money::ZERO;
    for (id, user_id, held, request_id) in left {
        if release_hold(db, id, user_id).await? {
            released += 1;
            amount = amount.saturating_add(Money::from_micros(held));
            tracing::warn!(user_id, request_id = request_id.as_deref().unwrap_or("-"), amount = %Money::from_micros(held),
                "released the hold of a request a killed process admitted and never forwarded (not in its journal)");
        }
    }
    if released > 0 {
        metrics::counter!("gateway_expired_holds_released_total").increment(released);
        metrics::counter!("gateway_expired_holds_released_micros_total").increment(amount.micros().unsigned_abs());
    }
    Ok((released, amount))
}

/// Deletes one hold and gives its amount back to the user's available funds, under
/// the user's lock; false when it was already gone (settled or released).
pub async fn release_hold(db: &Db, hold_id: i64, user_id: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE users SET held = held WHERE id = $1").bind(user_id).execute(tx.conn()).await?;
    let amount: Option<i64> = sqlx::query_scalar("DELETE FROM holds WHERE id = $1 RETURNING amount")
        .bind(hold_id)
        .fetch_optional(tx.conn())
        .await?;
    if let Some(amount) = amount {
        sqlx::query("UPDATE users SET held = CASE WHEN held >= $1 THEN held - $1 ELSE 0 END WHERE id = $2")
            .bind(amount)
            .bind(user_id)
            .execute(tx.conn())
            .await?;
    }
    tx.commit().await?;
    Ok(amount.is_some())
}
