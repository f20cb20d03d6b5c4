//! The user's allowance as the Codex CLI reads it: quota windows from the package in
//! force and the daily spending cap, and the balance as "credits".
//!
//! Codex (openai/codex `codex-rs/codex-api/src/rate_limits.rs`) parses, on every
//! `/v1/responses` answer, `x-codex-primary-*` / `x-codex-secondary-*` (used percent,
//! window minutes, reset-at in Unix seconds) and `x-codex-credits-*`; on a WebSocket
//! it reads the same figures from a `codex.rate_limits` event. It shows them in
//! `/status`. A refusal that cannot change in seconds is answered in the shape Codex
//! maps to its terminal "usage limit reached … try again at …" error
//! (`api_bridge.rs`: HTTP 429 whose `error.type` is `usage_limit_reached`, with
//! `error.resets_at`), which it does not retry.
//!
//! [`windows`] is the one place that computes the windows: the package's daily window,
//! the user's daily cap, and the plan windows of issue 19 (5-hour block, week, month,
//! term of every package in force, from `billing::quota`); the header and event
//! builders pick the two tightest of whatever it returns.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::domain::billing::{self, rules};
use crate::domain::proxy::error::{ProxyError, UsageLimit};
use crate::foundation::clock::BusinessCalendar;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// Minutes in a business day (the daily windows; a DST day is still shown as 1440).
const DAY_MINUTES: i64 = 24 * 60;

/// One allowance window: how much may be spent in it, how much was, and when it resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaWindow {
    /// What the window is (`package_daily`, `daily_cap`, …), for logs and tests.
    pub kind: &'static str,
    pub limit: Money,
    pub used: Money,
    pub resets_at: DateTime<Utc>,
    pub window_minutes: i64,
}

impl QuotaWindow {
    /// What is left in the window (never negative).
    pub fn remaining(&self) -> Money {
        self.limit.saturating_sub(self.used).max(Money::ZERO)
    }

    /// Used share in tenths of a percent, 0..=1000 (integer: money never goes through floats).
    pub fn used_permille(&self) -> i64 {
        if self.limit.micros() <= 0 {
            return 1000;
        }
        let used = i128::from(self.used.micros().max(0));
        let permille = used * 1000 / i128::from(self.limit.micros());
        i64::try_from(permille.min(1000)).unwrap_or(1000)
    }

    /// The used share as Codex parses it (`12.5`).
    pub fn used_percent_text(&self) -> String {
        let p = self.used_permille();
        format!("{}.{}", p / 10, p % 10)
    }
}

/// A user's windows and balance at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Every window that applies, in no particular order (see [`Quota::tightest`]).
    pub windows: Vec<QuotaWindow>,
    pub balance: Money,
}

/// Computes every allowance window of a user at `now`: the daily window of the
/// package in force (its daily limit and today's package spend), the daily spending
/// cap (the user's own, else the default) and the plan windows, from the user's
/// standing as this instance caches it ([`billing::standing`]: read again after each
/// of the user's settlements committed here, and at least every second).
pub async fn windows(state: &AppState, user_id: i64, default_cap: Option<Money>) -> Result<Quota> {
    let now = state.now();
    let standing = state.billing.standings().get(&state.db, state.calendar(), user_id, now).await?;
    Ok(quota_of(&standing, state.calendar(), now, default_cap))
}

/// [`windows`] read from the database, not the cache (a refusal names exact figures).
pub async fn windows_fresh(state: &AppState, user_id: i64, default_cap: Option<Money>) -> Result<Quota> {
    let now = state.now();
    let standing = billing::standing::read(&state.db, state.calendar(), user_id, now).await?;
    Ok(quota_of(&standing, state.calendar(), now, default_cap))
}

fn quota_of(
    standing: &billing::standing::Standing,
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
    default_cap: Option<Money>,
) -> Quota {
    let facts = DayFacts {
        package_daily_limit: standing.package_daily_limit,
        package_used: standing.package_used,
        spent_today: standing.package_used.saturating_add(standing.balance_used),
        daily_cap: standing.own_cap.or(default_cap),
    };
    let mut windows = daily_windows(&facts, calendar, now);
    windows.extend(plan_windows(&standing.plans, now));
    Quota { windows, balance: standing.balance }
}

/// The plan windows of the packages in force besides the day (issue 19): the 5-hour
/// block, week, month and term. A block not started yet counts as a fresh 5 hours.
fn plan_windows(plans: &[billing::quota::PackageWindows], now: DateTime<Utc>) -> Vec<QuotaWindow> {
    use crate::foundation::clock::windows::WindowKind;
    let mut out = Vec::new();
    for w in plans.iter().flat_map(|p| &p.windows) {
        let kind = match w.window {
            WindowKind::Day => continue,
            WindowKind::FiveHour => "package_5h",
            WindowKind::Week => "package_weekly",
            WindowKind::Month => "package_monthly",
            WindowKind::Total => "package_total",
        };
        let resets_at = w.resets.unwrap_or(now + chrono::Duration::minutes(w.minutes));
        out.push(QuotaWindow { kind, limit: w.limit, used: w.used, resets_at, window_minutes: w.minutes });
    }
    out
}

/// Today's figures the daily windows are made of.
#[derive(Debug, Clone, Copy)]
struct DayFacts {
    package_daily_limit: Option<Money>,
    package_used: Money,
    spent_today: Money,
    daily_cap: Option<Money>,
}

fn daily_windows(f: &DayFacts, calendar: &BusinessCalendar, now: DateTime<Utc>) -> Vec<QuotaWindow> {
    let resets_at = calendar.next_reset(now);
    let mut out = Vec::new();
    if let Some(limit) = f.package_daily_limit {
        let used = limit.saturating_sub(rules::remaining_allowance(Some(limit), f.package_used));
        out.push(QuotaWindow { kind: "package_daily", limit, used, resets_at, window_minutes: DAY_MINUTES });
    }
    if let Some(cap) = f.daily_cap {
        out.push(QuotaWindow {
            kind: "daily_cap",
            limit: cap,
            used: f.spent_today.min(cap),
            resets_at,
            window_minutes: DAY_MINUTES,
        });
    }
    out
}

impl Quota {
    /// The two windows Codex shows: the most used first (ties: the shorter window).
    pub fn tightest(&self) -> Vec<&QuotaWindow> {
        let mut sorted: Vec<&QuotaWindow> = self.windows.iter().collect();
        sorted.sort_by_key(|w| (std::cmp::Reverse(w.used_permille()), w.window_minutes, w.resets_at));
        sorted.truncate(2);
        sorted
    }

    /// The earliest instant one of the windows standing in the way of a request
    /// costing up to `hold` resets; `None` when no window blocks it (then only a
    /// top-up helps).
    pub fn blocking_reset(&self, hold: Money) -> Option<DateTime<Utc>> {
        self.windows.iter().filter(|w| w.remaining() < hold.max(Money::from_micros(1))).map(|w| w.resets_at).min()
    }

    /// The `x-codex-*` response headers (names lower-case, values ASCII).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let names = [
            ("x-codex-primary-used-percent", "x-codex-primary-window-minutes", "x-codex-primary-reset-at"),
            ("x-codex-secondary-used-percent", "x-codex-secondary-window-minutes", "x-codex-secondary-reset-at"),
        ];
        for (window, (percent, minutes, reset)) in self.tightest().into_iter().zip(names) {
            out.push((percent, window.used_percent_text()));
            out.push((minutes, window.window_minutes.to_string()));
            out.push((reset, window.resets_at.timestamp().to_string()));
        }
        out.push(("x-codex-credits-has-credits", self.balance.is_positive().to_string()));
        out.push(("x-codex-credits-unlimited", "false".to_string()));
        out.push(("x-codex-credits-balance", self.balance.to_string()));
        out
    }

    /// The same figures as the `codex.rate_limits` event of the WebSocket transport.
    pub fn rate_limits_event(&self) -> Value {
        let window = |w: &QuotaWindow| {
            // The text is digits, a dot and one digit: always a valid JSON number.
            let percent: Value = serde_json::from_str(&w.used_percent_text()).unwrap_or(Value::from(0));
            json!({ "used_percent": percent, "window_minutes": w.window_minutes, "reset_at": w.resets_at.timestamp() })
        };
        let tightest = self.tightest();
        json!({
            "type": "codex.rate_limits",
            "rate_limits": {
                "primary": tightest.first().map(|w| window(w)),
                "secondary": tightest.get(1).map(|w| window(w)),
            },
            "credits": {
                "has_credits": self.balance.is_positive(),
                "unlimited": false,
                "balance": self.balance.to_string(),
            },
        })
    }
}

/// Turns an admission refused for money or a cap into the usage-limit refusal Codex
/// shows with its reset time ([`ProxyError::usage_limit`]); other errors pass as they are.
pub async fn admission_refusal(
    state: &AppState,
    user_id: i64,
    default_cap: Option<Money>,
    hold: Money,
    err: Error,
) -> ProxyError {
    let promo = match &err {
        Error::PaymentRequired { code: "insufficient_quota", .. } => {
            "Your package's allowance is used up and your balance cannot pay for this request: top up"
        }
        Error::PaymentRequired { .. } => "Your balance cannot pay for this request: top up or buy a package",
        Error::RateLimited { .. } => "Your daily spending cap is reached: raise it in your account",
        _ => return ProxyError::from(err),
    };
    let (resets_at, mut headers) = match windows_fresh(state, user_id, default_cap).await {
        Ok(quota) => (quota.blocking_reset(hold).map(|t| t.timestamp()), quota.headers()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the quota windows of a refused request");
            (None, Vec::new())
        }
    };
    headers.push(("x-codex-promo-message", promo.to_string()));
    ProxyError::usage_limit(err.code(), err.public_message(), UsageLimit { resets_at, headers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn shanghai() -> BusinessCalendar {
        BusinessCalendar::from_name("Asia/Shanghai").unwrap()
    }

    #[test]
    fn the_package_day_and_the_cap_are_two_windows_resetting_at_the_business_midnight() {
        let facts = DayFacts {
            package_daily_limit: Some(Money::units(10)),
            package_used: Money::from_micros(2_500_000),
            spent_today: Money::units(4),
            daily_cap: Some(Money::units(5)),
        };
        let now = at("2026-12-03T10:00:00Z");
        let w = daily_windows(&facts, &shanghai(), now);
        let midnight = Utc.with_ymd_and_hms(2026, 12, 3, 16, 0, 0).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].kind, w[0].used_percent_text(), w[0].resets_at), ("package_daily", "25.0".into(), midnight));
        assert_eq!((w[1].kind, w[1].used_percent_text(), w[1].window_minutes), ("daily_cap", "80.0".into(), 1440));
        let none = DayFacts { package_daily_limit: None, daily_cap: None, ..facts };
        assert!(daily_windows(&none, &shanghai(), now).is_empty());
    }

    #[test]
    fn percent_is_integer_math_clamped_to_a_hundred() {
        let w = |limit: i64, used: i64| QuotaWindow {
            kind: "t",
            limit: Money::from_micros(limit),
            used: Money::from_micros(used),
            resets_at: at("2026-12-03T16:00:00Z"),
            window_minutes: 300,
        };
        assert_eq!(w(3, 1).used_percent_text(), "33.3");
        assert_eq!(w(1_000_000, 999_999).used_percent_text(), "99.9");
        assert_eq!(w(10, 50).used_percent_text(), "100.0");
        assert_eq!(w(0, 0).used_percent_text(), "100.0");
        assert_eq!(w(10, 0).used_percent_text(), "0.0");
    }

    #[test]
    fn headers_name_the_tightest_window_primary_and_the_balance_as_credits() {
        let reset = at("2026-12-03T16:00:00Z");
        let window = |kind, limit, used, minutes| QuotaWindow {
            kind,
            limit: Money::units(limit),
            used: Money::units(used),
            resets_at: reset,
            window_minutes: minutes,
        };
        let quota = Quota {
            windows: vec![window("a", 10, 1, 1440), window("b", 10, 9, 10080), window("c", 10, 5, 300)],
            balance: Money::from_micros(12_340_000),
        };
        let h = quota.headers();
        let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(get("x-codex-primary-used-percent").as_deref(), Some("90.0"));
        assert_eq!(get("x-codex-primary-window-minutes").as_deref(), Some("10080"));
        assert_eq!(get("x-codex-secondary-used-percent").as_deref(), Some("50.0"));
        assert_eq!(get("x-codex-secondary-reset-at"), Some(reset.timestamp().to_string()));
        assert_eq!(get("x-codex-credits-balance").as_deref(), Some("12.34"));
        assert_eq!(get("x-codex-credits-has-credits").as_deref(), Some("true"));
        let event = quota.rate_limits_event();
        assert_eq!(event["rate_limits"]["primary"]["used_percent"], json!(90.0));
        assert_eq!(event["rate_limits"]["secondary"]["window_minutes"], 300);
        assert_eq!(event["credits"]["balance"], "12.34");
    }

    #[test]
    fn the_blocking_reset_is_the_earliest_window_that_cannot_cover_the_hold() {
        let window = |limit, used, reset: &str| QuotaWindow {
            kind: "t",
            limit: Money::units(limit),
            used: Money::units(used),
            resets_at: at(reset),
            window_minutes: 1440,
        };
        let quota = Quota {
            windows: vec![window(10, 10, "2026-12-05T00:00:00Z"), window(10, 2, "2026-12-04T00:00:00Z")],
            balance: Money::ZERO,
        };
        assert_eq!(quota.blocking_reset(Money::units(1)), Some(at("2026-12-05T00:00:00Z")));
        assert_eq!(quota.blocking_reset(Money::units(9)), Some(at("2026-12-04T00:00:00Z")));
        let free = Quota { windows: vec![window(10, 0, "2026-12-04T00:00:00Z")], balance: Money::ZERO };
        assert_eq!(free.blocking_reset(Money::units(1)), None);
    }
}
