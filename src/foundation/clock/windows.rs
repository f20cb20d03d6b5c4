//! The windows a package's limits count in: a 5-hour block, the business day, the week
//! (from Monday 00:00), the month (from the 1st, 00:00) and the package's whole term.
//!
//! Every window is a half-open span `[start, end)` of instants. Day, week and month are
//! local to the business zone, so across a DST change a day is 23 or 25 hours long and
//! a week or month one hour shorter or longer; the 5-hour block is 5 elapsed hours
//! whatever the clocks on the wall say (it is a rate window, as Codex and Claude count
//! it). Each window also has a storage key (`period`) that names it among the windows
//! of its kind: the business date of the day, the date of the week's Monday, `YYYY-MM`
//! of the month, `total`, and the start (micro-seconds) of a 5-hour block.

use chrono::{DateTime, Datelike, Days, Duration, Months, NaiveDate, Utc};
use serde::Serialize;

use super::{date_key, to_micros, BusinessCalendar};

/// The length of a 5-hour block.
pub const BLOCK_HOURS: i64 = 5;

/// A kind of window a package may limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WindowKind {
    #[serde(rename = "5h")]
    FiveHour,
    #[serde(rename = "day")]
    Day,
    #[serde(rename = "week")]
    Week,
    #[serde(rename = "month")]
    Month,
    #[serde(rename = "total")]
    Total,
}

impl WindowKind {
    /// Every kind, shortest first (the order the API lists them in).
    pub const ALL: [WindowKind; 5] =
        [WindowKind::FiveHour, WindowKind::Day, WindowKind::Week, WindowKind::Month, WindowKind::Total];

    /// The name used in the API and in storage (`window_usage.window`).
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::FiveHour => "5h",
            WindowKind::Day => "day",
            WindowKind::Week => "week",
            WindowKind::Month => "month",
            WindowKind::Total => "total",
        }
    }

    /// Parses [`WindowKind::as_str`].
    pub fn parse(name: &str) -> Option<WindowKind> {
        WindowKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One window: the instants `[start, end)` and its storage key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub kind: WindowKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub period: String,
}

impl Span {
    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// The storage key of the 5-hour block that started at `start`.
pub fn block_period(start: DateTime<Utc>) -> String {
    to_micros(start).to_string()
}

impl BusinessCalendar {
    /// The business day `at` belongs to.
    pub fn day_span(&self, at: DateTime<Utc>) -> Span {
        let date = self.business_date(at);
        Span {
            kind: WindowKind::Day,
            start: self.day_start(date),
            end: self.day_start(next_day(date)),
            period: date_key(date),
        }
    }

    /// The week (Monday 00:00 to the next Monday 00:00, local) `at` belongs to.
    pub fn week_span(&self, at: DateTime<Utc>) -> Span {
        let date = self.business_date(at);
        let monday = date - Days::new(u64::from(date.weekday().num_days_from_monday()));
        let next = monday.checked_add_days(Days::new(7)).unwrap_or(monday);
        Span {
            kind: WindowKind::Week,
            start: self.day_start(monday),
            end: self.day_start(next),
            period: date_key(monday),
        }
    }

    /// The calendar month (the 1st 00:00 to the next 1st 00:00, local) `at` belongs to.
    pub fn month_span(&self, at: DateTime<Utc>) -> Span {
        let date = self.business_date(at);
        let first = date.with_day(1).unwrap_or(date);
        let next = first.checked_add_months(Months::new(1)).unwrap_or(first);
        Span {
            kind: WindowKind::Month,
            start: self.day_start(first),
            end: self.day_start(next),
            period: first.format("%Y-%m").to_string(),
        }
    }

    /// The 5-hour block a request at `at` counts in: the block that started at
    /// `current` if `at` is still inside it, otherwise a new block starting at `at`
    /// (a block starts with the first request after the previous one ended).
    pub fn five_hour_block(&self, current: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Span {
        let start = match current {
            Some(start) if start <= at && at < start + Duration::hours(BLOCK_HOURS) => start,
            _ => at,
        };
        Span {
            kind: WindowKind::FiveHour,
            start,
            end: start + Duration::hours(BLOCK_HOURS),
            period: block_period(start),
        }
    }

    /// The whole term of a package, `[starts_at, ends_at)`.
    pub fn total_span(&self, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Span {
        Span { kind: WindowKind::Total, start: starts_at, end: ends_at, period: "total".to_string() }
    }

    /// The calendar window of `kind` that `at` belongs to; `None` for the kinds that
    /// depend on more than the instant (the 5-hour block and the term).
    pub fn calendar_span(&self, kind: WindowKind, at: DateTime<Utc>) -> Option<Span> {
        match kind {
            WindowKind::Day => Some(self.day_span(at)),
            WindowKind::Week => Some(self.week_span(at)),
            WindowKind::Month => Some(self.month_span(at)),
            WindowKind::FiveHour | WindowKind::Total => None,
        }
    }
}

fn next_day(date: NaiveDate) -> NaiveDate {
    date.checked_add_days(Days::new(1)).unwrap_or(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(zone: &str) -> BusinessCalendar {
        BusinessCalendar::from_name(zone).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_block_lasts_five_hours_from_its_first_request_and_the_next_starts_with_the_next_request() {
        let c = cal("Asia/Shanghai");
        let first = utc("2026-01-15T10:17:00Z");
        let block = c.five_hour_block(None, first);
        assert_eq!((block.start, block.end), (first, utc("2026-01-15T15:17:00Z")));
        let inside = c.five_hour_block(Some(first), utc("2026-01-15T15:16:59Z"));
        assert_eq!(inside, block, "4:59:59 into the block is still the block");
        let after = c.five_hour_block(Some(first), utc("2026-01-15T15:17:00Z"));
        assert_eq!(after.start, utc("2026-01-15T15:17:00Z"), "5:00:00 in, a new block starts at the request");
        let late = c.five_hour_block(Some(first), utc("2026-01-16T09:00:00Z"));
        assert_eq!(late.start, utc("2026-01-16T09:00:00Z"), "an idle gap does not carry blocks forward");
        assert_eq!(late.period, to_micros(late.start).to_string());
    }

    #[test]
    fn a_block_is_five_elapsed_hours_across_a_dst_change() {
        let c = cal("America/New_York");
        // 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let block = c.five_hour_block(None, utc("2026-03-08T05:30:00Z"));
        assert_eq!(block.end - block.start, Duration::hours(5));
    }

    #[test]
    fn the_day_ends_after_23_59_59_local() {
        let c = cal("Asia/Shanghai");
        let day = c.day_span(utc("2026-01-15T15:59:59Z"));
        assert_eq!(day.period, "2026-01-15");
        assert_eq!((day.start, day.end), (utc("2026-01-14T16:00:00Z"), utc("2026-01-15T16:00:00Z")));
        assert!(day.contains(utc("2026-01-15T15:59:59Z")));
        assert!(!day.contains(utc("2026-01-15T16:00:00Z")));
        assert_eq!(c.day_span(utc("2026-01-15T16:00:00Z")).period, "2026-01-16");
    }

    #[test]
    fn the_week_turns_after_sunday_23_59_59() {
        let c = cal("Asia/Shanghai");
        // 2026-01-18 is a Sunday; 23:59:59 there is 15:59:59 UTC.
        let sunday = c.week_span(utc("2026-01-18T15:59:59Z"));
        assert_eq!(sunday.period, "2026-01-12", "the week of Monday the 12th");
        assert_eq!((sunday.start, sunday.end), (utc("2026-01-11T16:00:00Z"), utc("2026-01-18T16:00:00Z")));
        let monday = c.week_span(utc("2026-01-18T16:00:00Z"));
        assert_eq!(monday.period, "2026-01-19");
        assert_eq!(monday.start, sunday.end);
        // A Monday morning belongs to its own week.
        assert_eq!(c.week_span(utc("2026-01-18T16:00:01Z")).period, "2026-01-19");
    }

    #[test]
    fn the_month_turns_after_the_last_day_of_february() {
        let c = cal("Asia/Shanghai");
        let feb = c.month_span(utc("2026-02-28T15:59:59Z"));
        assert_eq!(feb.period, "2026-02");
        assert_eq!((feb.start, feb.end), (utc("2026-01-31T16:00:00Z"), utc("2026-02-28T16:00:00Z")));
        assert_eq!(c.month_span(utc("2026-02-28T16:00:00Z")).period, "2026-03");
        // A leap year keeps the 29th in February.
        let leap = c.month_span(utc("2028-02-29T15:59:59Z"));
        assert_eq!((leap.period.as_str(), leap.end), ("2028-02", utc("2028-02-29T16:00:00Z")));
        // December rolls into the next year.
        assert_eq!(c.month_span(utc("2026-12-31T12:00:00Z")).end, utc("2026-12-31T16:00:00Z"));
    }

    #[test]
    fn day_week_and_month_follow_new_york_across_both_dst_changes() {
        let c = cal("America/New_York");
        // Spring forward on Sunday 2026-03-08: that day has 23 hours.
        let spring = c.day_span(utc("2026-03-08T12:00:00Z"));
        assert_eq!((spring.start, spring.end), (utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z")));
        assert_eq!(spring.end - spring.start, Duration::hours(23));
        // 23:59:59 EDT on the 8th is still the 8th; one second later the 9th, a Monday.
        assert_eq!(c.day_span(utc("2026-03-09T03:59:59Z")).period, "2026-03-08");
        let week = c.week_span(utc("2026-03-09T04:00:00Z"));
        assert_eq!((week.period.as_str(), week.start), ("2026-03-09", utc("2026-03-09T04:00:00Z")));
        let before = c.week_span(utc("2026-03-09T03:59:59Z"));
        assert_eq!((before.start, before.end), (utc("2026-03-02T05:00:00Z"), utc("2026-03-09T04:00:00Z")));
        assert_eq!(before.end - before.start, Duration::hours(7 * 24 - 1));
        // Fall back on Sunday 2026-11-01: that day has 25 hours.
        let fall = c.day_span(utc("2026-11-01T12:00:00Z"));
        assert_eq!((fall.start, fall.end), (utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z")));
        assert_eq!(fall.end - fall.start, Duration::hours(25));
        // The repeated hour 01:00-02:00 belongs to the same day, either time.
        assert_eq!(c.day_span(utc("2026-11-01T05:30:00Z")).period, "2026-11-01");
        assert_eq!(c.day_span(utc("2026-11-01T06:30:00Z")).period, "2026-11-01");
        // November (EDT then EST) is one hour longer than 30 × 24.
        let nov = c.month_span(utc("2026-11-15T12:00:00Z"));
        assert_eq!((nov.start, nov.end), (utc("2026-11-01T04:00:00Z"), utc("2026-12-01T05:00:00Z")));
        let march = c.month_span(utc("2026-03-31T12:00:00Z"));
        assert_eq!(march.end - march.start, Duration::hours(31 * 24 - 1));
    }

    #[test]
    fn the_term_is_the_package_span_and_kinds_round_trip() {
        let c = cal("UTC");
        let t = c.total_span(utc("2026-01-01T00:00:00Z"), utc("2026-01-31T00:00:00Z"));
        assert!(t.contains(utc("2026-01-30T23:59:59Z")) && !t.contains(utc("2026-01-31T00:00:00Z")));
        for kind in WindowKind::ALL {
            assert_eq!(WindowKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WindowKind::parse("year"), None);
        assert!(c.calendar_span(WindowKind::FiveHour, t.start).is_none());
    }
}
