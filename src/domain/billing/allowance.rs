//! What a package may still pay: its windows (5-hour block, day, week, month, term),
//! each with a limit and what was used in it, and the room left, which is the least any
//! window has left. Pure, so the batch, the dashboards and the tests compute it alike.
//!
//! Usage is kept per *scope* in `window_usage`: `p:<user_package_id>` for a package's
//! windows, `u:<user_id>` for a user's 5-hour cap and `k:<api_key_id>` for a key's daily
//! cap. A request counts in the windows in force when it was admitted (its day, week,
//! month and 5-hour block), even when it settles after they ended.

use chrono::{DateTime, Utc};

use crate::foundation::clock::windows::{Span, WindowKind};
use crate::foundation::clock::{from_micros, BusinessCalendar};
use crate::foundation::money::Money;

/// The room of a package without any limit (none can be created: a package needs at
/// least one window with a limit, see `packages::validate`).
const UNLIMITED: Money = Money::from_micros(i64::MAX / 4);

/// The storage scope of a package's windows.
pub fn package_scope(user_package_id: i64) -> String {
    format!("p:{user_package_id}")
}

/// The storage scope of a user's 5-hour cap.
pub fn user_scope(user_id: i64) -> String {
    format!("u:{user_id}")
}

/// The storage scope of a key's daily cap.
pub fn key_scope(api_key_id: i64) -> String {
    format!("k:{api_key_id}")
}

/// A package's limits per window (micro-units; `None` = no limit in that window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub five_hour: Option<i64>,
    pub daily: Option<i64>,
    pub weekly: Option<i64>,
    pub monthly: Option<i64>,
    pub total: Option<i64>,
}

impl Limits {
    /// The limit of one kind of window.
    pub fn of(&self, kind: WindowKind) -> Option<i64> {
        match kind {
            WindowKind::FiveHour => self.five_hour,
            WindowKind::Day => self.daily,
            WindowKind::Week => self.weekly,
            WindowKind::Month => self.monthly,
            WindowKind::Total => self.total,
        }
    }
}

/// A package a user holds, as billing needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    pub id: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub limits: Limits,
    /// Models the package pays for; `None` = all.
    pub models: Option<Vec<String>>,
}

impl Terms {
    /// Whether the package pays for `model` (`None`: not known yet, counted as paid).
    pub fn covers(&self, model: Option<&str>) -> bool {
        match (&self.models, model) {
            (Some(models), Some(model)) => models.iter().any(|m| m == model),
            _ => true,
        }
    }

    /// Whether the package is in force at `at` (micro-seconds).
    pub fn in_force(&self, at: i64) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// The windows of the package at `at`: those with a limit, shortest first. `block`
    /// is the start of the package's current 5-hour block, if one runs; `used` says
    /// what was spent in a window so far.
    pub fn windows(
        &self,
        calendar: &BusinessCalendar,
        at: DateTime<Utc>,
        block: Option<DateTime<Utc>>,
        used: &dyn Fn(&Span) -> Money,
    ) -> Vec<Window> {
        WindowKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let limit = Money::from_micros(self.limits.of(kind)?);
                let span = match kind {
                    WindowKind::FiveHour => calendar.five_hour_block(block, at),
                    WindowKind::Total => calendar.total_span(from_micros(self.starts_at), from_micros(self.ends_at)),
                    _ => calendar.calendar_span(kind, at)?,
                };
                let used = used(&span);
                Some(Window { span, limit, used })
            })
            .collect()
    }
}

/// The columns of `user_packages` that [`TermsRow`] reads, in its order.
pub const TERMS_COLUMNS: &str = "id, user_id, name, status, daily_limit, five_hour_limit, weekly_limit, \
    monthly_limit, total_limit, models, starts_at, ends_at";

/// A row of `user_packages` as billing and the quota views read it: the one mapping
/// from the stored limits to [`Terms`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TermsRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub status: String,
    pub daily_limit: Option<i64>,
    pub five_hour_limit: Option<i64>,
    pub weekly_limit: Option<i64>,
    pub monthly_limit: Option<i64>,
    pub total_limit: Option<i64>,
    pub models: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
}

impl TermsRow {
    /// The package's terms: its span, its limit per window and its models.
    pub fn terms(&self) -> Terms {
        Terms {
            id: self.id,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            limits: Limits {
                five_hour: self.five_hour_limit,
                daily: self.daily_limit,
                weekly: self.weekly_limit,
                monthly: self.monthly_limit,
                total: self.total_limit,
            },
            models: parse_models(self.models.as_deref()),
        }
    }
}

/// The models list as stored: names separated by commas; empty or absent = all.
pub fn parse_models(stored: Option<&str>) -> Option<Vec<String>> {
    let models: Vec<String> = stored?.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect();
    (!models.is_empty()).then_some(models)
}

/// One window of a package: its span, limit and use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub span: Span,
    pub limit: Money,
    pub used: Money,
}

impl Window {
    /// What is left in the window (never negative).
    pub fn remaining(&self) -> Money {
        self.limit.saturating_sub(self.used).max(Money::ZERO)
    }
}

/// What a package can still pay: the least any of its windows has left.
pub fn room(windows: &[Window]) -> Money {
    windows.iter().map(Window::remaining).min().unwrap_or(UNLIMITED)
}

/// When the package next has more room: the earliest end among its windows with
/// nothing (or less than `needed`) left.
pub fn next_room_at(windows: &[Window], needed: Money) -> Option<DateTime<Utc>> {
    windows.iter().filter(|w| w.remaining() < needed || !w.remaining().is_positive()).map(|w| w.span.end).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(units: &str) -> Money {
        Money::parse(units).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn terms(limits: Limits) -> Terms {
        Terms {
            id: 1,
            starts_at: crate::foundation::clock::to_micros(utc("2026-01-01T00:00:00Z")),
            ends_at: crate::foundation::clock::to_micros(utc("2026-03-01T00:00:00Z")),
            limits,
            models: None,
        }
    }

    #[test]
    fn the_room_is_the_tightest_window() {
        let cal = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let limits = Limits {
            five_hour: Some(m("2").micros()),
            daily: Some(m("5").micros()),
            weekly: Some(m("20").micros()),
            ..Limits::default()
        };
        let at = utc("2026-01-15T10:00:00Z");
        let used = |span: &Span| match span.kind {
            WindowKind::FiveHour => m("0.5"),
            WindowKind::Day => m("4"),
            WindowKind::Week => m("19.9"),
            _ => Money::ZERO,
        };
        let windows = terms(limits).windows(&cal, at, None, &used);
        assert_eq!(windows.len(), 3);
        assert_eq!(room(&windows), m("0.1"), "the week is the tightest");
        assert_eq!(next_room_at(&windows, m("0.2")), Some(cal.week_span(at).end));
        assert_eq!(next_room_at(&windows, m("0.05")), None);
    }

    #[test]
    fn a_daily_only_package_has_the_seed_allowance() {
        let cal = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let t = terms(Limits { daily: Some(m("5").micros()), ..Limits::default() });
        let windows = t.windows(&cal, utc("2026-01-15T10:00:00Z"), None, &|_| m("4.5"));
        assert_eq!(room(&windows), crate::domain::billing::rules::remaining_allowance(Some(m("5")), m("4.5")));
        assert_eq!(room(&[]), UNLIMITED);
    }

    #[test]
    fn models_limit_what_a_package_pays_for() {
        let mut t = terms(Limits::default());
        assert!(t.covers(Some("gpt-5")));
        t.models = parse_models(Some(" gpt-5, gpt-5-codex ,"));
        assert_eq!(t.models.as_deref(), Some(&["gpt-5".to_string(), "gpt-5-codex".to_string()][..]));
        assert!(t.covers(Some("gpt-5-codex")) && !t.covers(Some("o3")) && t.covers(None));
        assert_eq!(parse_models(Some(" , ")), None);
        assert!(t.in_force(t.starts_at) && !t.in_force(t.ends_at));
    }
}
