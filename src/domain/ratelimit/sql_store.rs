//! GCRA buckets in the `rate_limit_buckets` table: one atomic statement per hit.

use sqlx::Row;

use super::{Gcra, Verdict};
use crate::foundation::db::Db;

/// One hit: insert the bucket or advance its TAT if the rule allows it, and return the
/// TAT the decision was made on. The row lock taken by `ON CONFLICT DO UPDATE`
/// serialises concurrent hits on one bucket, so there is no read-modify-write race.
/// `$2` now, `$3` interval, `$4` span (interval * burst), all micros.
const HIT: &str = "INSERT INTO rate_limit_buckets (bucket, tat_micros, allowed) VALUES ($1, $2 + $3, 1) \
     ON CONFLICT (bucket) DO UPDATE SET \
     tat_micros = CASE \
         WHEN rate_limit_buckets.tat_micros <= $2 THEN $2 + $3 \
         WHEN rate_limit_buckets.tat_micros + $3 - $2 <= $4 THEN rate_limit_buckets.tat_micros + $3 \
         ELSE rate_limit_buckets.tat_micros END, \
     allowed = CASE \
         WHEN rate_limit_buckets.tat_micros <= $2 THEN 1 \
         WHEN rate_limit_buckets.tat_micros + $3 - $2 <= $4 THEN 1 \
         ELSE 0 END \
     RETURNING tat_micros, allowed";

/// Rows whose TAT is past mean the same as no row; one hit in this many sweeps them.
const SWEEP_ONE_IN: u32 = 1000;

/// Spends one hit of `rule` in `bucket` at `now` (micros).
pub(super) async fn hit(db: &Db, bucket: &str, rule: Gcra, now: i64) -> Result<Verdict, sqlx::Error> {
    let row = sqlx::query(HIT)
        .bind(bucket)
        .bind(now)
        .bind(rule.interval_micros)
        .bind(rule.span_micros())
        .fetch_one(db.pool())
        .await?;
    let tat: i64 = row.try_get(0)?;
    let allowed: i64 = row.try_get(1)?;
    if rand::random::<u32>().is_multiple_of(SWEEP_ONE_IN) {
        sweep(db, now).await?;
    }
    Ok(if allowed == 1 { Verdict::Allowed } else { rule.refused(tat.max(now), now) })
}

/// Deletes buckets that have fully refilled (their TAT is in the past).
pub(super) async fn sweep(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_limit_buckets WHERE tat_micros < $1").bind(now).execute(db.pool()).await?;
    Ok(done.rows_affected())
}
