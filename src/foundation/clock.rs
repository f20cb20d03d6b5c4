//! The one place that says what time it is and which business day that falls on.
//!
//! Daily package allowances reset at 00:00 in the business zone (default
//! Asia/Shanghai, UTC+8). Everything that needs "now" or "today" asks a [`Clock`]
//! and the [`BusinessCalendar`], so tests can drive a fake clock across midnight.
//! The windows package limits count in (5-hour block, day, week, month, term) are
//! computed here too, in [`windows`].

pub mod windows;

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

/// Source of the current instant; production uses [`SystemClock`], tests a fake.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Shared handle to the clock.
pub type SharedClock = Arc<dyn Clock>;

/// Maps instants to business days in the configured zone.
#[derive(Debug, Clone, Copy)]
pub struct BusinessCalendar {
    zone: Tz,
}

impl BusinessCalendar {
    pub fn new(zone: Tz) -> Self {
        Self { zone }
    }

    /// Parses an IANA zone name such as `Asia/Shanghai`.
    pub fn from_name(name: &str) -> Result<Self, String> {
        name.parse::<Tz>()
            .map(Self::new)
            .map_err(|_| format!("`{name}` is not an IANA time zone name (e.g. Asia/Shanghai)"))
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// The business date an instant belongs to (a request is billed to the day it started).
    pub fn business_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        instant.with_timezone(&self.zone).date_naive()
    }

    /// The instant a business day begins (00:00 local; the earliest valid local time if
    /// a DST gap swallows midnight).
    pub fn day_start(&self, date: NaiveDate) -> DateTime<Utc> {
        let mut local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        for _ in 0..4 {
            if let Some(start) = self.zone.from_local_datetime(&local).earliest() {
                return start.with_timezone(&Utc);
            }
            local += chrono::Duration::minutes(30);
        }
        Utc.from_utc_datetime(&local)
    }

    /// When the daily allowance next resets after `instant`.
    pub fn next_reset(&self, instant: DateTime<Utc>) -> DateTime<Utc> {
        let today = self.business_date(instant);
        self.day_start(today.checked_add_days(Days::new(1)).unwrap_or(today))
    }

    /// RFC 3339 in the business zone, the format the API prints times in.
    pub fn format(&self, instant: DateTime<Utc>) -> String {
        instant.with_timezone(&self.zone).to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

/// Converts storage micro-second timestamps to instants and back.
pub fn to_micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

/// See [`to_micros`].
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Business dates are stored as `YYYY-MM-DD` text, which sorts like the dates.
pub fn date_key(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai() -> BusinessCalendar {
        BusinessCalendar::from_name("Asia/Shanghai").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_business_day_turns_at_midnight_utc_plus_8() {
        let cal = shanghai();
        // 15:59:59 UTC is 23:59:59 in Shanghai; one second later is the next day.
        assert_eq!(cal.business_date(utc("2026-01-01T15:59:59Z")).to_string(), "2026-01-01");
        assert_eq!(cal.business_date(utc("2026-01-01T16:00:00Z")).to_string(), "2026-01-02");
    }

    #[test]
    fn next_reset_is_the_coming_local_midnight() {
        let cal = shanghai();
        assert_eq!(cal.next_reset(utc("2026-01-01T15:59:59Z")), utc("2026-01-01T16:00:00Z"));
        assert_eq!(cal.next_reset(utc("2026-01-01T16:00:00Z")), utc("2026-01-02T16:00:00Z"));
        assert_eq!(cal.format(utc("2026-01-01T16:00:00Z")), "2026-01-02T00:00:00+08:00");
    }

    #[test]
    fn other_zones_are_configurable() {
        let cal = BusinessCalendar::from_name("UTC").unwrap();
        assert_eq!(cal.business_date(utc("2026-01-01T23:59:59Z")).to_string(), "2026-01-01");
        assert!(BusinessCalendar::from_name("Mars/Olympus").is_err());
    }

    #[test]
    fn a_dst_gap_at_midnight_still_has_a_day_start() {
        // America/Santiago skipped 00:00 on 2022-09-11.
        let cal = BusinessCalendar::from_name("America/Santiago").unwrap();
        let date = NaiveDate::from_ymd_opt(2022, 9, 11).unwrap();
        let start = cal.day_start(date);
        assert_eq!(cal.business_date(start), date);
    }

    #[test]
    fn micros_round_trip() {
        let t = utc("2026-03-04T05:06:07.123456Z");
        assert_eq!(from_micros(to_micros(t)), t);
    }
}
