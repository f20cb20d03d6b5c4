//! Concurrent-stream slots shared by a cluster, as leases: admitting a stream adds a
//! slot that expires after [`LEASE`] unless renewed; the open stream renews it every
//! [`RENEW_EVERY`] and deletes it when it ends. An instance that crashes mid-stream
//! leaks its slots for at most one lease (a plain counter would leak them for good).
//!
//! Admission is atomic: on Redis one Lua script (drop expired, count, add) on a sorted
//! set per user; on PostgreSQL a transaction serialised per user by an advisory lock.

use std::time::Duration;

use sqlx::Row;

use super::{Backing, SharedStore};
use crate::foundation::clock::to_micros;

/// How long a slot outlives its last renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often an open stream renews its slot.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

const REDIS_PREFIX: &str = "cg:streams:";
/// Namespace of the per-user advisory locks.
const LOCK_NAMESPACE: i64 = 7406;

/// ARGV: now, expires, max, slot id, lease ms. Returns 1 when admitted, 0 when full.
const ADMIT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

fn lease_micros() -> i64 {
    i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX)
}

impl SharedStore {
    /// Takes one of `max` stream slots of `user_id` under `slot_id`: Ok(true) admitted,
    /// Ok(false) all taken, Err when the store failed (callers fail open).
    pub async fn admit_stream(&self, user_id: i64, max: i64, slot_id: &str) -> Result<bool, String> {
        let now = to_micros(self.clock.now());
        let expires = now + lease_micros();
        let work = async {
            match &self.backing {
                Backing::Redis(redis) => {
                    let script = redis::Script::new(ADMIT);
                    let mut invocation = script.key(format!("{REDIS_PREFIX}{user_id}"));
                    invocation.arg(now).arg(expires.to_string()).arg(max).arg(slot_id);
                    invocation.arg(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX));
                    let admitted: i64 =
                        redis.run(|mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
                    Ok(admitted == 1)
                }
                Backing::Postgres(db) => {
                    pg_admit(db, user_id, max, slot_id, (now, expires)).await.map_err(|e| e.to_string())
                }
            }
        };
        let result = self.bounded(work).await;
        let outcome = match &result {
            Ok(true) => "admitted",
            Ok(false) => "refused",
            Err(e) => {
                self.warn(e);
                "failed_open"
            }
        };
        metrics::counter!("gateway_stream_slot_checks_total", "backend" => self.backend_name(), "outcome" => outcome)
            .increment(1);
        result
    }

    /// Pushes the slot's expiry one lease ahead (errors only logged by the caller).
    pub async fn renew_stream(&self, user_id: i64, slot_id: &str) -> Result<(), String> {
        let expires = to_micros(self.clock.now()) + lease_micros();
        let work = async {
            match &self.backing {
                Backing::Redis(redis) => {
                    let key = format!("{REDIS_PREFIX}{user_id}");
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZADD").arg(&key).arg("XX").arg(expires.to_string()).arg(slot_id).ignore();
                    pipe.cmd("PEXPIRE").arg(&key).arg(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX)).ignore();
                    redis.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
                }
                Backing::Postgres(db) => sqlx::query("UPDATE stream_slots SET expires_micros = $1 WHERE id = $2")
                    .bind(expires)
                    .bind(slot_id)
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        };
        self.bounded(work).await
    }

    /// Frees the slot.
    pub async fn release_stream(&self, user_id: i64, slot_id: &str) -> Result<(), String> {
        let work = async {
            match &self.backing {
                Backing::Redis(redis) => {
                    let mut cmd = redis::cmd("ZREM");
                    cmd.arg(format!("{REDIS_PREFIX}{user_id}")).arg(slot_id);
                    redis.run(|mut conn| async move { cmd.query_async::<()>(&mut conn).await }).await
                }
                Backing::Postgres(db) => sqlx::query("DELETE FROM stream_slots WHERE id = $1")
                    .bind(slot_id)
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        };
        self.bounded(work).await
    }

    /// Open (unexpired) slots of `user_id` across the cluster.
    pub async fn open_streams(&self, user_id: i64) -> Result<i64, String> {
        let now = to_micros(self.clock.now());
        let work = async {
            match &self.backing {
                Backing::Redis(redis) => {
                    let mut cmd = redis::cmd("ZCOUNT");
                    cmd.arg(format!("{REDIS_PREFIX}{user_id}")).arg(format!("({now}")).arg("+inf");
                    redis.run(|mut conn| async move { cmd.query_async::<i64>(&mut conn).await }).await
                }
                Backing::Postgres(db) => {
                    sqlx::query_scalar("SELECT COUNT(*) FROM stream_slots WHERE user_id = $1 AND expires_micros > $2")
                        .bind(user_id)
                        .bind(now)
                        .fetch_one(db.pool())
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        };
        self.bounded(work).await
    }
}

/// Drop expired, count, insert, in one transaction holding the user's advisory lock
/// (two admissions for one user never both see the last free slot).
async fn pg_admit(
    db: &crate::foundation::db::Db,
    user_id: i64,
    max: i64,
    slot_id: &str,
    (now, expires): (i64, i64),
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(CAST($1 AS INTEGER), CAST(($2 % 2147483647) AS INTEGER))")
        .bind(LOCK_NAMESPACE)
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM stream_slots WHERE user_id = $1 AND expires_micros <= $2")
        .bind(user_id)
        .bind(now)
        .execute(tx.conn())
        .await?;
    let open: i64 = sqlx::query("SELECT COUNT(*) FROM stream_slots WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(tx.conn())
        .await?
        .try_get(0)?;
    if open >= max {
        return Ok(false);
    }
    sqlx::query("INSERT INTO stream_slots (id, user_id, expires_micros) VALUES ($1, $2, $3)")
        .bind(slot_id)
        .bind(user_id)
        .bind(expires)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(true)
}
