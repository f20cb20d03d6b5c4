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

pub mod rules;
pub mod usage;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::AnyConnection;

use crate::app::AppState;
use crate::clock::{date_key, to_micros};
use crate::error::{Error, Result};
use crate::ledger::{self, EntryDetails};
use crate::money::Money;
use rules::{AdmissionFacts, Refusal};

/// How long a hold may live before the janitor job releases it (a crashed instance's
/// holds must not block a user forever; streams longer than this are still settled).
pub const HOLD_LIFETIME_HOURS: i64 = 6;

/// What the proxy asks for before forwarding.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    pub user_id: i64,
    pub api_key_id: i64,
    /// Worst-case cost the proxy estimates for the request.
    pub hold: Money,
}

/// An admitted request's reservation; pass it back to [`settle`].
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: i64,
    pub user_id: i64,
    pub api_key_id: i64,
    pub amount: Money,
    pub admitted_at: DateTime<Utc>,
    pub business_date: NaiveDate,
    /// The package in force at admission (charged first at settlement).
    pub user_package_id: Option<i64>,
}

/// What a finished request used and cost, as measured by the proxy.
#[derive(Debug, Clone, Default)]
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
    pub daily_limit: i64,
    pub starts_at: i64,
    pub ends_at: i64,
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

/// Locks the user's row for the rest of the transaction and reads what billing needs.
async fn lock_user(conn: &mut AnyConnection, user_id: i64) -> Result<(Money, Money, Option<Money>, String)> {
    let row: Option<(i64, i64, Option<i64>, String)> =
        sqlx::query_as("UPDATE users SET held = held WHERE id = $1 RETURNING balance, held, daily_cap, status")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    let (balance, held, cap, status) = row.ok_or(Error::NotFound("user"))?;
    Ok((Money::from_micros(balance), Money::from_micros(held), cap.map(Money::from_micros), status))
}

/// Reserves `hold` for a request, or refuses it with an error the proxy shows as-is
/// (402 when the user cannot pay, 429 when a daily cap is reached).
pub async fn admit(state: &AppState, request: &AdmissionRequest) -> Result<Hold> {
    let now = state.now();
    let today = state.calendar().business_date(now);
    let settings = state.settings.get().await?;
    let mut tx = state.db.begin().await?;
    let (balance, held, user_cap, status) = lock_user(tx.conn(), request.user_id).await?;
    if status != "active" {
        return Err(Error::forbidden("account_suspended", "this account is suspended"));
    }
    let package = applicable_package(tx.conn(), request.user_id, now).await?;
    let (package_used, balance_used) = day_usage(tx.conn(), request.user_id, today).await?;
    let facts = AdmissionFacts {
        hold: request.hold,
        balance,
        held,
        daily_limit: package.as_ref().map(|p| Money::from_micros(p.daily_limit)),
        package_used_today: package_used,
        spent_today: package_used.saturating_add(balance_used),
        daily_cap: user_cap.or(settings.default_daily_cap),
    };
    if let Err(refusal) = rules::decide(&facts) {
        let reason = match refusal {
            Refusal::CannotPay { .. } => "cannot_pay",
            Refusal::CapReached => "cap_reached",
        };
        metrics::counter!("gateway_billing_admissions_total", "outcome" => reason).increment(1);
        return Err(refusal_error(refusal, state, now));
    }
    let hold_id: i64 = sqlx::query_scalar(
        "INSERT INTO holds (user_id, api_key_id, amount, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(request.user_id)
    .bind(request.api_key_id)
    .bind(request.hold.micros())
    .bind(to_micros(now))
    .bind(to_micros(now + Duration::hours(HOLD_LIFETIME_HOURS)))
    .fetch_one(tx.conn())
    .await?;
    sqlx::query("UPDATE users SET held = held + $1 WHERE id = $2")
        .bind(request.hold.micros())
        .bind(request.user_id)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    metrics::counter!("gateway_billing_admissions_total", "outcome" => "admitted").increment(1);
    metrics::counter!("gateway_billing_held_micros_total").increment(request.hold.micros().unsigned_abs());
    Ok(Hold {
        id: hold_id,
        user_id: request.user_id,
        api_key_id: request.api_key_id,
        amount: request.hold,
        admitted_at: now,
        business_date: today,
        user_package_id: package.map(|p| p.id),
    })
}

fn refusal_error(refusal: Refusal, state: &AppState, now: DateTime<Utc>) -> Error {
    match refusal {
        Refusal::CannotPay { has_package: true } => Error::PaymentRequired {
            code: "insufficient_quota",
            message: "daily package allowance used up and balance too low for this request; \
                      top up or wait for the daily reset"
                .into(),
        },
        Refusal::CannotPay { has_package: false } => Error::PaymentRequired {
            code: "insufficient_balance",
            message: "insufficient balance for this request; top up or buy a package".into(),
        },
        Refusal::CapReached => {
            let reset = state.calendar().next_reset(now);
            Error::RateLimited {
                message: format!("daily spending cap reached; it resets at {}", state.calendar().format(reset)),
                retry_after_secs: (reset - now).num_seconds().max(1) as u64,
            }
        }
    }
}

/// Charges a finished request: usage log, package/balance split, ledger entry, key
/// spend, hold release — one transaction. Settling the same `request_id` twice
/// applies it once.
pub async fn settle(state: &AppState, hold: &Hold, record: &UsageRecord) -> Result<Settlement> {
    let now = state.now();
    let date = date_key(hold.business_date);
    let mut tx = state.db.begin().await?;
    let (balance, _, _, _) = lock_user(tx.conn(), hold.user_id).await?;
    let usage_id: Option<i64> = insert_usage_log(tx.conn(), hold, record, &date, now).await?;
    let Some(usage_id) = usage_id else {
        // Already settled (a retry after an ambiguous commit): change nothing.
        return Ok(Settlement { package: Money::ZERO, balance: Money::ZERO, balance_after: balance, applied: false });
    };
    let released = sqlx::query("DELETE FROM holds WHERE id = $1").bind(hold.id).execute(tx.conn()).await?;
    let release = if released.rows_affected() == 1 { hold.amount } else { Money::ZERO };

    let package = match hold.user_package_id {
        Some(id) => sqlx::query_scalar::<_, i64>("SELECT daily_limit FROM user_packages WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?
            .map(Money::from_micros),
        None => None,
    };
    let (package_used, _) = day_usage(tx.conn(), hold.user_id, hold.business_date).await?;
    let split = rules::split_charge(record.cost, package, package_used);

    sqlx::query(
        "INSERT INTO daily_usage (user_id, business_date, package_used, balance_used, requests, user_package_id, updated_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6) \
         ON CONFLICT (user_id, business_date) DO UPDATE SET \
           package_used = daily_usage.package_used + excluded.package_used, \
           balance_used = daily_usage.balance_used + excluded.balance_used, \
           requests = daily_usage.requests + 1, \
           user_package_id = CASE WHEN excluded.user_package_id IS NULL THEN daily_usage.user_package_id \
                                  ELSE excluded.user_package_id END, \
           updated_at = excluded.updated_at",
    )
    .bind(hold.user_id)
    .bind(&date)
    .bind(split.package.micros())
    .bind(split.balance.micros())
    .bind(hold.user_package_id)
    .bind(to_micros(now))
    .execute(tx.conn())
    .await?;

    let balance_after: i64 = sqlx::query_scalar(
        "UPDATE users SET balance = balance - $1, held = CASE WHEN held >= $2 THEN held - $2 ELSE 0 END, \
           updated_at = $3 WHERE id = $4 RETURNING balance",
    )
    .bind(split.balance.micros())
    .bind(release.micros())
    .bind(to_micros(now))
    .bind(hold.user_id)
    .fetch_one(tx.conn())
    .await?;
    let balance_after = Money::from_micros(balance_after);

    if record.cost.is_positive() {
        let reference = format!("usage:{}", record.request_id);
        let details = EntryDetails {
            reference: Some(&reference),
            note: Some(&record.model),
            package_amount: split.package,
            user_package_id: hold.user_package_id.filter(|_| split.package.is_positive()),
            business_date: Some(&date),
            actor_id: None,
        };
        ledger::record(
            tx.conn(),
            hold.user_id,
            ledger::kind::USAGE,
            Money::ZERO.saturating_sub(split.balance),
            balance_after,
            &details,
            now,
        )
        .await?;
        sqlx::query("UPDATE api_keys SET spent = spent + $1, last_used_at = $2 WHERE id = $3")
            .bind(record.cost.micros())
            .bind(to_micros(now))
            .bind(hold.api_key_id)
            .execute(tx.conn())
            .await?;
    }
    sqlx::query("UPDATE usage_logs SET package_cost = $1, balance_cost = $2 WHERE id = $3")
        .bind(split.package.micros())
        .bind(split.balance.micros())
        .bind(usage_id)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    record_settlement_metrics(record, &split);
    Ok(Settlement { package: split.package, balance: split.balance, balance_after, applied: true })
}

/// Requests by model and status, billed amounts by source, upstream latencies.
fn record_settlement_metrics(record: &UsageRecord, split: &rules::Split) {
    let model = record.model.clone();
    let status = record.status_code.to_string();
    metrics::counter!("gateway_proxy_requests_total", "model" => model.clone(), "status" => status).increment(1);
    metrics::counter!("gateway_billed_micros_total", "model" => model.clone(), "source" => "package")
        .increment(split.package.micros().unsigned_abs());
    metrics::counter!("gateway_billed_micros_total", "model" => model.clone(), "source" => "balance")
        .increment(split.balance.micros().unsigned_abs());
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

async fn insert_usage_log(
    conn: &mut AnyConnection,
    hold: &Hold,
    r: &UsageRecord,
    date: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let total_ms = r.total_ms.or_else(|| Some((now - hold.admitted_at).num_milliseconds()));
    Ok(sqlx::query_scalar(
        "INSERT INTO usage_logs (request_id, user_id, api_key_id, upstream_id, endpoint, model, status_code, streamed, \
           input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost, package_cost, balance_cost, estimated, \
           first_byte_ms, total_ms, business_date, error, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (request_id) DO NOTHING RETURNING id",
    )
    .bind(&r.request_id)
    .bind(hold.user_id)
    .bind(hold.api_key_id)
    .bind(r.upstream_id)
    .bind(&r.endpoint)
    .bind(&r.model)
    .bind(i64::from(r.status_code))
    .bind(i64::from(r.streamed))
    .bind(r.input_tokens)
    .bind(r.cached_tokens)
    .bind(r.output_tokens)
    .bind(r.reasoning_tokens)
    .bind(r.cost.micros())
    .bind(i64::from(r.estimated))
    .bind(r.first_byte_ms)
    .bind(total_ms)
    .bind(date)
    .bind(r.error.as_deref())
    .bind(to_micros(hold.admitted_at))
    .fetch_optional(conn)
    .await?)
}

/// Settles in the background of a request, retrying while the database is away, so
/// a served request's charge is never dropped because of a transient outage.
pub async fn settle_with_retry(state: &AppState, hold: &Hold, record: &UsageRecord) -> Result<Settlement> {
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match settle(state, hold, record).await {
            Ok(s) => return Ok(s),
            Err(e) if attempt < 8 && e.status_code().as_u16() == 503 => {
                tracing::warn!(request_id = %record.request_id, attempt, error = %e, "settlement failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(request_id = %record.request_id, error = ?e, "settlement failed; charge not recorded");
                return Err(e);
            }
        }
    }
}

/// Releases holds whose request never settled (an instance died mid-request).
pub async fn release_expired_holds(state: &AppState) -> Result<u64> {
    let now = to_micros(state.now());
    let expired: Vec<(i64, i64, i64)> = sqlx::query_as("SELECT id, user_id, amount FROM holds WHERE expires_at <= $1")
        .bind(now)
        .fetch_all(state.db.pool())
        .await?;
    let mut released = 0;
    for (id, user_id, amount) in expired {
        let mut tx = state.db.begin().await?;
        lock_user(tx.conn(), user_id).await?;
        let deleted = sqlx::query("DELETE FROM holds WHERE id = $1").bind(id).execute(tx.conn()).await?;
        if deleted.rows_affected() == 1 {
            sqlx::query("UPDATE users SET held = CASE WHEN held >= $1 THEN held - $1 ELSE 0 END WHERE id = $2")
                .bind(amount)
                .bind(user_id)
                .execute(tx.conn())
                .await?;
            released += 1;
        }
        tx.commit().await?;
    }
    Ok(released)
}
