//! Per-key and per-user request rates and per-user concurrent streams, checked at
//! admission so an abusive client is refused before it costs an upstream call.
//! The limits come from [`RateLimitSettings`] (0 = unlimited); refusals are
//! OpenAI-shaped 429s with `Retry-After`. Request rates and concurrent streams are
//! counted in the cluster's [`SharedStore`] (Redis or PostgreSQL) when there is one,
//! else in memory. Shared stream slots are leases renewed while the stream runs (see
//! [`crate::domain::ratelimit::streams`]), so a crashed instance cannot lock a user out for good.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::error::ProxyError;
use crate::domain::ratelimit::{Gcra, SharedStore, Verdict};
use crate::domain::settings::RateLimitSettings;

type Keyed = RateLimiter<i64, DefaultKeyedStateStore<i64>, DefaultClock>;

/// Keys above which idle limiter entries are swept (bounds memory for many keys).
const SWEEP_ABOVE: usize = 10_000;

/// The limiters of this instance; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct ProxyLimits {
    rates: Arc<Mutex<Rates>>,
    streams: Arc<Mutex<HashMap<i64, i64>>>,
    /// Where request rates are counted cluster-wide (None: in memory, this instance).
    shared: Option<SharedStore>,
}

impl std::fmt::Debug for ProxyLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyLimits")
    }
}

#[derive(Default)]
struct Rates {
    key: Option<(u32, Arc<Keyed>)>,
    user: Option<(u32, Arc<Keyed>)>,
}

/// The limiter for `per_minute`, rebuilt when the setting changed (0 = none).
fn limiter(slot: &mut Option<(u32, Arc<Keyed>)>, per_minute: i64) -> Option<Arc<Keyed>> {
    let rate = NonZeroU32::new(u32::try_from(per_minute).unwrap_or(u32::MAX))?;
    match slot {
        Some((current, l)) if *current == rate.get() => Some(l.clone()),
        _ => {
            let l = Arc::new(RateLimiter::keyed(Quota::per_minute(rate)));
            *slot = Some((rate.get(), l.clone()));
            Some(l)
        }
    }
}

fn check(limiter: Option<Arc<Keyed>>, id: i64, what: &str, per_minute: i64) -> Result<(), ProxyError> {
    let Some(limiter) = limiter else { return Ok(()) };
    if limiter.len() > SWEEP_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(&id).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        rate_refusal(what, per_minute, secs)
    })
}

fn rate_refusal(what: &str, per_minute: i64, secs: u64) -> ProxyError {
    refusal(
        format!("Rate limit reached for this {what}: {per_minute} requests per minute. Try again in {secs}s."),
        secs,
    )
}

/// One shared-store hit for `bucket` at `per_minute` (0 = unlimited).
async fn check_shared(store: &SharedStore, bucket: String, what: &str, per_minute: i64) -> Result<(), ProxyError> {
    if per_minute <= 0 {
        return Ok(());
    }
    match store.hit(&bucket, Gcra::per_minute(per_minute, per_minute)).await {
        Verdict::Allowed => Ok(()),
        refused => Err(rate_refusal(what, per_minute, refused.retry_after_secs())),
    }
}

fn refusal(message: String, retry_after_secs: u64) -> ProxyError {
    let mut e = ProxyError::new(StatusCode::TOO_MANY_REQUESTS, "requests", "rate_limit_exceeded", message);
    e.retry_after_secs = Some(retry_after_secs.max(1));
    e
}

impl ProxyLimits {
    /// Limits counting request rates in `shared` when given (cluster-wide), else in memory.
    pub fn new(shared: Option<SharedStore>) -> ProxyLimits {
        ProxyLimits { shared, ..Default::default() }
    }

    /// Where request rates are counted: `redis`, `postgres` or `memory` (this instance).
    pub fn backend_name(&self) -> &'static str {
        self.shared.as_ref().map_or("memory", SharedStore::backend_name)
    }

    /// Counts one request against the key's and the user's per-minute budgets.
    pub async fn check_rate(&self, limits: &RateLimitSettings, user_id: i64, key_id: i64) -> Result<(), ProxyError> {
        if let Some(store) = &self.shared {
            check_shared(store, format!("key:{key_id}"), "API key", limits.key_requests_per_minute).await?;
            return check_shared(store, format!("user:{user_id}"), "account", limits.user_requests_per_minute).await;
        }
        let (key, user) = {
            let mut rates = self.rates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                limiter(&mut rates.key, limits.key_requests_per_minute),
                limiter(&mut rates.user, limits.user_requests_per_minute),
            )
        };
        check(key, key_id, "API key", limits.key_requests_per_minute)?;
        check(user, user_id, "account", limits.user_requests_per_minute)
    }

    /// Takes one of the user's concurrent stream slots (`max` 0 = unlimited); the slot
    /// is given back when the returned guard drops (attach it to the response body).
    /// With a shared store the slot is a cluster-wide lease (fail open if the store is down).
    pub async fn open_stream(&self, max: i64, user_id: i64) -> Result<StreamSlot, ProxyError> {
        let mut shared = None;
        if let (Some(store), true) = (&self.shared, max > 0) {
            let id = crate::domain::auth::random_token(16);
            match store.admit_stream(user_id, max, &id).await {
                Ok(true) => shared = Some(SharedSlot::start(store.clone(), user_id, id)),
                Ok(false) => return Err(streams_refusal(max)),
                Err(_) => {} // fail open: warned and counted by the store
            }
        }
        let mut streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = streams.entry(user_id).or_insert(0);
        if self.shared.is_none() && max > 0 && *open >= max {
            return Err(streams_refusal(max));
        }
        *open += 1;
        Ok(StreamSlot { streams: self.streams.clone(), user_id, shared })
    }

    /// Streams the user has open on this instance.
    pub fn open_streams(&self, user_id: i64) -> i64 {
        let streams = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.get(&user_id).copied().unwrap_or(0)
    }
}

fn streams_refusal(max: i64) -> ProxyError {
    refusal(format!("Too many concurrent streams for this account: at most {max} at a time."), 1)
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<i64, i64>>>,
    user_id: i64,
    shared: Option<SharedSlot>,
}

/// A cluster-wide stream lease: renewed while held, deleted on drop.
#[derive(Debug)]
struct SharedSlot {
    store: SharedStore,
    user_id: i64,
    id: String,
    /// Dropping it stops the renewal task.
    _renewing: tokio::sync::oneshot::Sender<()>,
}

impl SharedSlot {
    fn start(store: SharedStore, user_id: i64, id: String) -> SharedSlot {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (renewer, slot) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(crate::domain::ratelimit::streams::RENEW_EVERY);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        if let Err(error) = renewer.renew_stream(user_id, &slot).await {
                            tracing::warn!(%error, "could not renew a stream slot lease");
                        }
                    }
                }
            }
        });
        SharedSlot { store, user_id, id, _renewing: stop }
    }
}

impl StreamSlot {
    /// Keeps the slot until the response body is finished or dropped.
    pub fn attach(self, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _slot = &self;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(stream))
    }
}

impl Drop for StreamSlot {
    /// Frees the slot; a cluster-wide lease is deleted first, and only then is the slot
    /// counted free here, so [`ProxyLimits::open_streams`] never reports a slot free
    /// that the cluster still counts.
    fn drop(&mut self) {
        let (streams, user_id) = (self.streams.clone(), self.user_id);
        let free_here = move || {
            let mut streams = streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(open) = streams.get_mut(&user_id) {
                *open -= 1;
                if *open <= 0 {
                    streams.remove(&user_id);
                }
            }
        };
        let runtime = tokio::runtime::Handle::try_current();
        match (self.shared.take(), runtime) {
            (Some(shared), Ok(runtime)) => {
                runtime.spawn(async move {
                    // Stops the renewal task before the lease goes.
                    let SharedSlot { store, user_id, id, _renewing } = shared;
                    drop(_renewing);
                    if let Err(error) = store.release_stream(user_id, &id).await {
                        tracing::warn!(%error, "could not release a stream slot (its lease will expire)");
                    }
                    free_here();
                });
            }
            _ => free_here(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(key: i64, user: i64) -> RateLimitSettings {
        RateLimitSettings {
            key_requests_per_minute: key,
            user_requests_per_minute: user,
            user_max_concurrent_streams: 0,
        }
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let l = ProxyLimits::default();
        for _ in 0..1000 {
            assert!(l.check_rate(&limits(0, 0), 1, 1).await.is_ok());
        }
    }

    #[tokio::test]
    async fn the_key_budget_refuses_with_a_retry_after() {
        let l = ProxyLimits::default();
        for _ in 0..3 {
            assert!(l.check_rate(&limits(3, 0), 1, 7).await.is_ok());
        }
        let err = l.check_rate(&limits(3, 0), 1, 7).await.unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!((1..=20).contains(&err.retry_after_secs.unwrap()), "{err:?}");
        assert!(l.check_rate(&limits(3, 0), 1, 8).await.is_ok(), "another key has its own budget");
    }

    #[tokio::test]
    async fn the_user_budget_spans_keys() {
        let l = ProxyLimits::default();
        assert!(l.check_rate(&limits(0, 2), 1, 1).await.is_ok());
        assert!(l.check_rate(&limits(0, 2), 1, 2).await.is_ok());
        assert!(l.check_rate(&limits(0, 2), 1, 3).await.is_err());
        assert!(l.check_rate(&limits(0, 2), 2, 4).await.is_ok());
    }

    #[tokio::test]
    async fn stream_slots_are_given_back_on_drop() {
        let l = ProxyLimits::default();
        let a = l.open_stream(2, 5).await.unwrap();
        let _b = l.open_stream(2, 5).await.unwrap();
        assert!(l.open_stream(2, 5).await.is_err());
        drop(a);
        assert_eq!(l.open_streams(5), 1);
        assert!(l.open_stream(2, 5).await.is_ok());
        assert!(l.open_stream(0, 6).await.is_ok());
    }
}
