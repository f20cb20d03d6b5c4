//! Brute-force protection for password logins: a budget of attempts per client IP and
//! per account, refilled over time. Counted in the cluster's [`SharedStore`] (Redis or
//! PostgreSQL) when there is one, so spreading attempts over instances gains nothing;
//! in memory on a single SQLite instance.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::ratelimit::{Gcra, SharedStore, Verdict};
use crate::foundation::error::Error;

/// Attempts per account per minute, and the burst allowed.
const PER_ACCOUNT_PER_MINUTE: u32 = 5;
const ACCOUNT_BURST: u32 = 10;
/// Attempts per IP per minute, and the burst allowed.
const PER_IP_PER_MINUTE: u32 = 20;
const IP_BURST: u32 = 40;

/// Keyed limiters for login attempts.
#[derive(Clone)]
pub struct LoginThrottle {
    by_account: Arc<DefaultKeyedRateLimiter<String>>,
    by_ip: Arc<DefaultKeyedRateLimiter<String>>,
    /// Cluster-wide counters; when set, the in-memory limiters above are unused.
    shared: Option<SharedStore>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

fn refusal(retry_after_secs: u64) -> Error {
    Error::RateLimited {
        message: "too many login attempts; wait a minute and try again".into(),
        retry_after_secs: retry_after_secs.max(1),
    }
}

impl LoginThrottle {
    /// An in-memory throttle for this instance alone.
    pub fn new() -> Self {
        Self::with_store(None)
    }

    /// A throttle counting in `shared` when given (cluster-wide), else in memory.
    pub fn with_store(shared: Option<SharedStore>) -> Self {
        LoginThrottle {
            by_account: Arc::new(RateLimiter::keyed(quota(PER_ACCOUNT_PER_MINUTE, ACCOUNT_BURST))),
            by_ip: Arc::new(RateLimiter::keyed(quota(PER_IP_PER_MINUTE, IP_BURST))),
            shared,
        }
    }

    /// Spends one attempt for this IP and account, or refuses with 429 and a wait.
    pub async fn check(&self, ip: Option<&str>, email: &str) -> Result<(), Error> {
        let account = email.trim().to_lowercase();
        if let Some(store) = &self.shared {
            let mut buckets = Vec::with_capacity(2);
            if let Some(ip) = ip {
                buckets.push((format!("login-ip:{ip}"), Gcra::per_minute(PER_IP_PER_MINUTE.into(), IP_BURST.into())));
            }
            let account_rule = Gcra::per_minute(PER_ACCOUNT_PER_MINUTE.into(), ACCOUNT_BURST.into());
            buckets.push((format!("login-account:{account}"), account_rule));
            for (bucket, rule) in buckets {
                if let refused @ Verdict::Refused { .. } = store.hit(&bucket, rule).await {
                    return Err(refusal(refused.retry_after_secs()));
                }
            }
            return Ok(());
        }
        let ip_result = match ip {
            Some(ip) => self.by_ip.check_key(&ip.to_string()),
            None => Ok(()),
        };
        let result = ip_result.and_then(|_| self.by_account.check_key(&account));
        result.map_err(|not_until| refusal(not_until.wait_time_from(DefaultClock::default().now()).as_secs()))
    }

    /// Drops idle keys so memory stays bounded under a spray of addresses.
    pub fn shrink(&self) {
        self.by_account.retain_recent();
        self.by_ip.retain_recent();
    }
}

/// A per-client-address budget for an unauthenticated endpoint that writes (the payment
/// notify): cluster-wide in the [`SharedStore`] when there is one, else in memory.
#[derive(Clone)]
pub struct IpThrottle {
    name: &'static str,
    per_minute: u32,
    burst: u32,
    memory: Arc<DefaultKeyedRateLimiter<String>>,
    shared: Option<SharedStore>,
}

impl IpThrottle {
    /// `name` prefixes the shared buckets (`{name}:{ip}`).
    pub fn new(name: &'static str, per_minute: u32, burst: u32, shared: Option<SharedStore>) -> Self {
        IpThrottle { name, per_minute, burst, memory: Arc::new(RateLimiter::keyed(quota(per_minute, burst))), shared }
    }

    /// Spends one request of `ip`'s budget; false when it is spent (answer 429).
    /// A request without a known address is not limited (there is nothing to key on).
    pub async fn allow(&self, ip: Option<&str>) -> bool {
        let Some(ip) = ip else { return true };
        match &self.shared {
            Some(store) => {
                let rule = Gcra::per_minute(self.per_minute.into(), self.burst.into());
                !matches!(store.hit(&format!("{}:{ip}", self.name), rule).await, Verdict::Refused { .. })
            }
            None => self.memory.check_key(&ip.to_string()).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_account_gets_its_burst_then_waits() {
        let t = LoginThrottle::new();
        for _ in 0..ACCOUNT_BURST {
            assert!(t.check(Some("10.0.0.1"), "a@example.com").await.is_ok());
        }
        let err = t.check(Some("10.0.0.2"), "A@example.com").await.unwrap_err();
        assert_eq!(err.status_code().as_u16(), 429);
        assert!(t.check(Some("10.0.0.2"), "b@example.com").await.is_ok(), "other accounts are unaffected");
    }

    #[tokio::test]
    async fn an_ip_spraying_many_accounts_is_stopped() {
        let t = LoginThrottle::new();
        let mut refused = 0;
        for i in 0..IP_BURST + 5 {
            refused += usize::from(t.check(Some("10.9.9.9"), &format!("u{i}@example.com")).await.is_err());
        }
        assert_eq!(refused, 5);
    }
}
