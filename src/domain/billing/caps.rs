//! When a cap starts counting. A key's daily USD cap counts what the key spent during
//! the whole business day, even when the cap is set in the middle of it. Spend is
//! tracked per key only while the key has a cap (an extra window row per key and batch
//! for every key would cost every request a write). So setting a cap derives the day's
//! spend so far from `usage_logs`, once.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::allowance::key_scope;
use crate::domain::auth::api_keys::{self, ApiKey, KeyPatch};
use crate::foundation::clock::{to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;

/// Changes a key and, when the patch sets a daily cap, starts the cap's day window, in
/// ONE transaction: the cap and the figure it counts from commit together or not at all
/// (two transactions could leave a cap counting from zero after a failed second step).
///
/// The user's row is locked first, like every billing batch, so this serialises with the
/// settlements of the user on every instance. A batch that committed before it is in
/// `usage_logs` and counted here. A batch after it sees the cap and adds to the row.
/// Replacing the row, rather than adding to it, is therefore right in every order,
/// also when the key was already tracked.
pub async fn update_key(
    db: &Db,
    calendar: &BusinessCalendar,
    change: KeyChange<'_>,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE users SET held = held WHERE id = $1").bind(change.user_id).execute(tx.conn()).await?;
    let key = api_keys::update_on(tx.conn(), change.user_id, change.key_id, change.patch).await?;
    if matches!(change.patch.daily_cap, Some(Some(_))) {
        start_key_day_on(tx.conn(), calendar, &key, now).await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Which key of which user changes, and how.
#[derive(Debug, Clone, Copy)]
pub struct KeyChange<'a> {
    pub user_id: i64,
    pub key_id: i64,
    pub patch: &'a KeyPatch,
}

/// Sets the key's day window to what its settled requests of the day cost, and returns
/// that figure. The caller holds the user's lock inside `conn`'s transaction.
async fn start_key_day_on(
    conn: &mut AnyConnection,
    calendar: &BusinessCalendar,
    key: &ApiKey,
    now: DateTime<Utc>,
) -> Result<Money> {
    let span = calendar.day_span(now);
    let spent: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM usage_logs \
         WHERE user_id = $1 AND api_key_id = $2 AND business_date = $3",
    )
    .bind(key.user_id)
    .bind(key.id)
    .bind(&span.period)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO window_usage (scope, kind, period, starts_at, used, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (scope, kind, period) DO UPDATE SET used = excluded.used, updated_at = excluded.updated_at",
    )
    .bind(key_scope(key.id))
    .bind(span.kind.as_str())
    .bind(&span.period)
    .bind(to_micros(span.start))
    .bind(spent)
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(Money::from_micros(spent))
}
