//! Brute-force protection for password logins: a budget of attempts per client IP and
//! per account, refilled over time. In memory per instance (an attacker spreading
//! attempts over N instances gets at most N times the budget).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;

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

impl LoginThrottle {
    pub fn new() -> Self {
        LoginThrottle {
            by_account: Arc::new(RateLimiter::keyed(quota(PER_ACCOUNT_PER_MINUTE, ACCOUNT_BURST))),
            by_ip: Arc::new(RateLimiter::keyed(quota(PER_IP_PER_MINUTE, IP_BURST))),
        }
    }

    /// Spends one attempt for this IP and account, or refuses with 429 and a wait.
    pub fn check(&self, ip: Option<&str>, email: &str) -> Result<(), Error> {
        let account = email.trim().to_lowercase();
        let ip_result = match ip {
            Some(ip) => self.by_ip.check_key(&ip.to_string()),
            None => Ok(()),
        };
        let result = ip_result.and_then(|_| self.by_account.check_key(&account));
        result.map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited {
                message: "too many login attempts; wait a minute and try again".into(),
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }

    /// Drops idle keys so memory stays bounded under a spray of addresses.
    pub fn shrink(&self) {
        self.by_account.retain_recent();
        self.by_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_gets_its_burst_then_waits() {
        let t = LoginThrottle::new();
        for _ in 0..ACCOUNT_BURST {
            assert!(t.check(Some("10.0.0.1"), "a@example.com").is_ok());
        }
        let err = t.check(Some("10.0.0.2"), "A@example.com").unwrap_err();
        assert_eq!(err.status_code().as_u16(), 429);
        assert!(t.check(Some("10.0.0.2"), "b@example.com").is_ok(), "other accounts are unaffected");
    }

    #[test]
    fn an_ip_spraying_many_accounts_is_stopped() {
        let t = LoginThrottle::new();
        let refused =
            (0..IP_BURST + 5).filter(|i| t.check(Some("10.9.9.9"), &format!("u{i}@example.com")).is_err()).count();
        assert_eq!(refused, 5);
    }
}
