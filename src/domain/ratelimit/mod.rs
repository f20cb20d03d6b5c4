//! Request-rate counters shared by every instance of a cluster.
//!
//! With several instances behind a load balancer, per-instance limiters let a client
//! get N times its budget. [`SharedStore`] keeps the counters where every instance
//! sees them: in Redis when `REDIS_URL` is set, otherwise in PostgreSQL (table
//! `rate_limit_buckets`). On SQLite (one instance) the callers keep their in-memory
//! limiters and no store is built.
//!
//! ## Algorithm: GCRA
//! Each bucket stores one number, its *theoretical arrival time* (TAT, micros). A rule
//! allows `burst` requests back to back and refills one every `interval`
//! (`per_minute(n, n)` = n per minute, the same quota as the in-memory `governor`).
//! A hit is allowed iff `max(tat, now) + interval - now <= interval * burst`; then
//! `tat = max(tat, now) + interval`. The decision and the write are one atomic step:
//! one `INSERT .. ON CONFLICT DO UPDATE .. RETURNING` statement on PostgreSQL (the row
//! lock serialises concurrent hits), one Lua script on Redis.
//!
//! Error bound: with one store the count is exact, in any window of length `w` at most
//! `burst + floor(w / interval)` hits are allowed, across all instances. `now` is
//! each instance's own clock, so a skew of `s` between instances can allow at most
//! `ceil(s / interval)` extra hits (NTP keeps `s` in milliseconds: 0 extra for limits
//! below 60 000/min). While the store is unreachable limits are not enforced at all
//! (fail open, see below).
//!
//! ## Failure policy: fail open
//! If the store errors or takes longer than [`STORE_TIMEOUT`], the hit is *allowed*,
//! a warning is logged (at most every 10 s) and
//! `gateway_rate_limit_checks_total{outcome="failed_open"}` counts it. Rate limits
//! protect capacity, not money: billing holds still refuse what a user cannot pay.

mod redis_store;
mod sql_store;
pub mod streams;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sha2::Digest;

pub use redis_store::RedisStore;

use crate::foundation::clock::{to_micros, SharedClock};
use crate::foundation::config::Config;
use crate::foundation::db::{Backend, Db};

/// Longest a limiter check may take before the request goes ahead unchecked.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// Buckets longer than this are hashed (emails and addresses come from clients).
const MAX_BUCKET_LEN: usize = 96;

/// A GCRA quota: `burst` hits back to back, one more every `interval_micros`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval_micros: i64,
    pub burst: i64,
}

impl Gcra {
    /// `per_minute` hits a minute with `burst` allowed at once (both at least 1).
    pub fn per_minute(per_minute: i64, burst: i64) -> Gcra {
        Gcra { interval_micros: (60_000_000 / per_minute.max(1)).max(1), burst: burst.max(1) }
    }

    /// How far ahead of `now` the TAT may run: `interval * burst`.
    pub fn span_micros(&self) -> i64 {
        self.interval_micros.saturating_mul(self.burst)
    }

    /// The pure rule: the verdict and the TAT to store for a bucket holding `tat`
    /// (None when absent). Stores implement the same arithmetic atomically.
    pub fn decide(&self, tat: Option<i64>, now: i64) -> (Verdict, i64) {
        let base = tat.map_or(now, |t| if t > now { t } else { now });
        let next = base + self.interval_micros;
        if next - now <= self.span_micros() {
            (Verdict::Allowed, next)
        } else {
            (self.refused(base, now), base)
        }
    }

    /// The refusal for a bucket whose TAT (at least `now`) is `base`.
    fn refused(&self, base: i64, now: i64) -> Verdict {
        let wait = base + self.interval_micros - now - self.span_micros();
        Verdict::Refused { retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)) }
    }
}

/// The outcome of one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the next hit would be allowed after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

impl Verdict {
    /// Whole seconds a client should wait (at least 1), for `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Verdict::Allowed => 0,
            Verdict::Refused { retry_after } => {
                (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)
            }
        }
    }
}

#[derive(Clone)]
enum Backing {
    Postgres(Db),
    Redis(RedisStore),
}

/// Where shared limiter counters live; cheap to clone.
#[derive(Clone)]
pub struct SharedStore {
    backing: Backing,
    clock: SharedClock,
    last_warning: Arc<AtomicI64>,
    started: Instant,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedStore({})", self.backend_name())
    }
}

impl SharedStore {
    /// Redis when `REDIS_URL` is set, PostgreSQL when the database is, else None
    /// (SQLite runs one instance: callers keep their in-memory limiters).
    pub fn from_config(config: &Config, db: &Db, clock: SharedClock) -> anyhow::Result<Option<SharedStore>> {
        let backing = match &config.redis_url {
            Some(url) => Backing::Redis(RedisStore::open(url.expose_secret())?),
            None if db.backend() == Backend::Postgres => Backing::Postgres(db.clone()),
            None => return Ok(None),
        };
        Ok(Some(Self::with_backing(backing, clock)))
    }

    /// A store on Redis at `url` (tests, tools).
    pub fn redis(url: &str, clock: SharedClock) -> anyhow::Result<SharedStore> {
        Ok(Self::with_backing(Backing::Redis(RedisStore::open(url)?), clock))
    }

    /// A store in the `rate_limit_buckets` table of `db` (tests, tools).
    pub fn postgres(db: Db, clock: SharedClock) -> SharedStore {
        Self::with_backing(Backing::Postgres(db), clock)
    }

    fn with_backing(backing: Backing, clock: SharedClock) -> SharedStore {
        SharedStore { backing, clock, last_warning: Arc::new(AtomicI64::new(i64::MIN)), started: Instant::now() }
    }

    /// `redis` or `postgres`, for logs, metrics and the admin page.
    pub fn backend_name(&self) -> &'static str {
        match self.backing {
            Backing::Postgres(_) => "postgres",
            Backing::Redis(_) => "redis",
        }
    }

    /// Spends one hit of `rule` in `bucket`. Never fails: a store error or timeout
    /// allows the hit (fail open) with a warning and a metric.
    pub async fn hit(&self, bucket: &str, rule: Gcra) -> Verdict {
        self.hit_telling(bucket, rule).await.0
    }

    /// [`SharedStore::hit`], also saying whether the verdict is the store's or a fail-open
    /// (`true`): what tells a contended store that timed out from a lost update.
    pub async fn hit_telling(&self, bucket: &str, rule: Gcra) -> (Verdict, bool) {
        let bucket = bucket_name(bucket);
        let now = to_micros(self.clock.now());
        let started = Instant::now();
        let result = self.bounded(self.try_hit(&bucket, rule, now)).await;
        let backend = self.backend_name();
        metrics::histogram!("gateway_rate_limit_check_seconds", "backend" => backend)
            .record(started.elapsed().as_secs_f64());
        let failed_open = result.is_err();
        let (verdict, outcome) = match result {
            Ok(v @ Verdict::Allowed) => (v, "allowed"),
            Ok(v @ Verdict::Refused { .. }) => (v, "refused"),
            Err(error) => {
                self.warn(&error);
                (Verdict::Allowed, "failed_open")
            }
        };
        metrics::counter!("gateway_rate_limit_checks_total", "backend" => backend, "outcome" => outcome).increment(1);
        (verdict, failed_open)
    }

    /// Runs store work within [`STORE_TIMEOUT`].
    async fn bounded<T>(&self, work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
        match tokio::time::timeout(STORE_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", STORE_TIMEOUT.as_millis())),
        }
    }

    async fn try_hit(&self, bucket: &str, rule: Gcra, now: i64) -> Result<Verdict, String> {
        match &self.backing {
            Backing::Postgres(db) => sql_store::hit(db, bucket, rule, now).await.map_err(|e| e.to_string()),
            Backing::Redis(redis) => redis.hit(bucket, rule, now).await,
        }
    }

    /// Logs a store failure, at most once every 10 s per store.
    fn warn(&self, error: &str) {
        let secs = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == i64::MIN || secs - last >= 10)
            && self.last_warning.compare_exchange(last, secs, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                backend = self.backend_name(),
                %error,
                "rate limiter store unreachable: allowing requests unchecked (fail open)"
            );
        }
    }
}

/// The bucket as stored: client-controlled tails longer than [`MAX_BUCKET_LEN`] are hashed.
fn bucket_name(bucket: &str) -> String {
    if bucket.len() <= MAX_BUCKET_LEN {
        return bucket.to_string();
    }
    let (scope, _) = bucket.split_once(':').unwrap_or(("b", ""));
    let scope: String = scope.chars().take(32).collect();
    format!("{scope}:sha256:{}", hex::encode(sha2::Sha256::digest(bucket.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let rule = Gcra::per_minute(3, 3);
        assert_eq!(rule.interval_micros, 20_000_000);
        let mut tat = None;
        for _ in 0..3 {
            let (v, next) = rule.decide(tat, 0);
            assert_eq!(v, Verdict::Allowed);
            tat = Some(next);
        }
        let (v, kept) = rule.decide(tat, 0);
        assert_eq!(v, Verdict::Refused { retry_after: Duration::from_secs(20) });
        assert_eq!(v.retry_after_secs(), 20);
        assert_eq!(Some(kept), tat, "a refusal spends nothing");
        assert_eq!(rule.decide(tat, 19_999_999).0.retry_after_secs(), 1);
        assert_eq!(rule.decide(tat, 20_000_000).0, Verdict::Allowed);
    }

    #[test]
    fn gcra_never_allows_more_than_burst_plus_refill_in_a_window() {
        let rule = Gcra::per_minute(10, 4);
        let mut tat = None;
        let mut allowed = 0;
        for step in 0..600 {
            let now = step * 1_000_000;
            if let (Verdict::Allowed, next) = rule.decide(tat, now) {
                allowed += 1;
                tat = Some(next);
            }
        }
        // 600 s at one hit per second: burst 4 plus one per 6 s.
        assert_eq!(allowed, 4 + 599 / 6);
    }

    #[tokio::test]
    async fn an_unreachable_store_allows_the_hit_quickly() {
        // Nothing listens on port 1: the hit fails open instead of refusing or hanging.
        let store =
            SharedStore::redis("redis://127.0.0.1:1/0", Arc::new(crate::foundation::clock::SystemClock)).unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            assert_eq!(store.hit("key:1", Gcra::per_minute(1, 1)).await, Verdict::Allowed);
        }
        assert!(started.elapsed() < STORE_TIMEOUT * 3, "{:?}", started.elapsed());
    }

    #[test]
    fn long_client_supplied_buckets_are_hashed() {
        assert_eq!(bucket_name("login-ip:10.0.0.1"), "login-ip:10.0.0.1");
        let long = format!("login-account:{}", "x".repeat(500));
        let stored = bucket_name(&long);
        assert!(stored.starts_with("login-account:sha256:") && stored.len() < 100, "{stored}");
    }
}
