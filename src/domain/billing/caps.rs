//! When a cap starts counting. A key's daily USD cap counts what the key spent during
//! the whole business day, even when the cap is set in the middle of it. Spend is
//! tracked per key only while the key has a cap (an extra window row per key and batch
//! for every key would cost every request a write). So setting a cap derives the day's
//! spend so far from `usage_logs`, once.

use chrono::{DateTime, Utc};

use super::allowance::key_scope;
use crate::foundation::clock::{to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;

/// Sets the key's day window to what its settled requests of the day cost, and returns
/// that figure.
///
/// Runs under the user's lock, like every billing batch, so it serialises with the
/// settlements of the user on every instance. A batch that committed before it is in
/// `usage_logs` and counted here. A batch after it sees the cap and adds to the row.
/// Replacing the row, rather than adding to it, is therefore right in every order,
/// also when the key was already tracked.
pub async fn start_key_day(
    db: &Db,
    calendar: &BusinessCalendar,
    user_id: i64,
    api_key_id: i64,
    now: DateTime<Utc>,
) -> Result<Money> {
    let span = calendar.day_span(now);
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE users SET held = held WHERE id = $1").bind(user_id).execute(tx.conn()).await?;
    let spent: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM usage_logs \
         WHERE user_id = $1 AND api_key_id = $2 AND business_date = $3",
    )
    .bind(user_id)
    .bind(api_key_id)
    .bind(&span.period)
    .fetch_one(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO window_usage (scope, kind, period, starts_at, used, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (scope, kind, period) DO UPDATE SET used = excluded.used, updated_at = excluded.updated_at",
    )
    .bind(key_scope(api_key_id))
    .bind(span.kind.as_str())
    .bind(&span.period)
    .bind(to_micros(span.start))
    .bind(spent)
    .bind(to_micros(now))
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Money::from_micros(spent))
}
