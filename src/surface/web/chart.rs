//! The 30-day spend chart of the dashboard, drawn by the server as inline SVG: one
//! stacked bar per business day (package allowance below, balance above).

use crate::domain::billing::usage::DaySpend;
use crate::foundation::money::Money;

/// Drawing area in SVG units (the SVG scales to its container).
pub const WIDTH: i64 = 720;
pub const HEIGHT: i64 = 180;
const TOP: i64 = 10;
const LEFT: i64 = 44;
const BOTTOM: i64 = 22;

/// One day's bar, in SVG coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub x: i64,
    pub width: i64,
    pub package_y: i64,
    pub package_h: i64,
    pub balance_y: i64,
    pub balance_h: i64,
    /// Hover text: date and amounts.
    pub title: String,
    /// `MM-DD` under every fifth bar and the last one, else empty.
    pub label: String,
    /// A label a phone leaves out so labels never overlap: the 11th, 21st and last day keep
    /// theirs (the first day's would touch the y axis's `0`).
    pub minor: bool,
}

/// The chart: bars, the value of the top grid line and where the axis sits.
#[derive(Debug, Clone)]
pub struct SpendChart {
    pub bars: Vec<Bar>,
    pub max_label: String,
    pub half_label: String,
    pub base_y: i64,
    pub top_y: i64,
    pub half_y: i64,
    pub left: i64,
    pub right: i64,
    pub label_y: i64,
    pub total: String,
}

/// Pixel height of `value` on a scale where `max` fills `span` (integer math, no floats).
fn scale(value: Money, max: i64, span: i64) -> i64 {
    if max <= 0 {
        return 0;
    }
    let h = i128::from(value.micros().max(0)) * i128::from(span) / i128::from(max);
    i64::try_from(h).unwrap_or(span)
}

/// The top of the y-axis: the smallest 1, 2 or 5 × 10ⁿ micros at or above the
/// tallest day (at least one cent). Its half is then a short exact decimal as well,
/// so the three tick labels (0, half, top) are always distinct and readable
/// (`0.01 / 0.005 / 0`, never `0.01 / 0.01 / 0`).
pub fn nice_top(tallest: i64) -> i64 {
    let mut step: i64 = 10_000;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= tallest || candidate == i64::MAX {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

impl SpendChart {
    pub fn new(days: &[DaySpend]) -> Self {
        let span = HEIGHT - TOP - BOTTOM;
        let base_y = HEIGHT - BOTTOM;
        let max = nice_top(days.iter().map(|d| d.total.micros()).max().unwrap_or(0));
        let count = i64::try_from(days.len()).unwrap_or(1).max(1);
        let slot = (WIDTH - LEFT) / count;
        let width = (slot * 7 / 10).max(1);
        let last = days.len().saturating_sub(1);
        let bars = days
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let package_h = scale(d.package, max, span);
                let balance_h = scale(d.total, max, span) - package_h;
                let x = LEFT + i64::try_from(i).unwrap_or(0) * slot + (slot - width) / 2;
                Bar {
                    x,
                    width,
                    package_y: base_y - package_h,
                    package_h,
                    balance_y: base_y - package_h - balance_h,
                    balance_h,
                    title: format!("{}: {} + {} USD", d.date, d.package, d.balance),
                    minor: (i % 10 != 0 || i == 0) && i != last,
                    label: if i % 5 == 0 || i == last {
                        d.date.get(5..).unwrap_or("").to_string()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        let total = days.iter().fold(Money::ZERO, |sum, d| sum.saturating_add(d.total));
        SpendChart {
            bars,
            max_label: Money::from_micros(max).to_string(),
            half_label: Money::from_micros(max / 2).to_string(),
            base_y,
            top_y: TOP,
            half_y: TOP + span / 2,
            left: LEFT,
            right: WIDTH,
            label_y: HEIGHT - 6,
            total: total.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, package: i64, balance: i64) -> DaySpend {
        DaySpend {
            date: date.into(),
            package: Money::from_micros(package),
            balance: Money::from_micros(balance),
            total: Money::from_micros(package + balance),
            requests: 1,
        }
    }

    #[test]
    fn the_tallest_day_fills_the_chart_and_bars_stack() {
        let chart = SpendChart::new(&[day("2026-01-14", 1_000_000, 1_000_000), day("2026-01-15", 500_000, 0)]);
        let span = HEIGHT - TOP - BOTTOM;
        let first = &chart.bars[0];
        assert_eq!(first.package_h + first.balance_h, span);
        assert_eq!(first.balance_y + first.balance_h, first.package_y);
        assert_eq!(chart.bars[1].package_h, span / 4);
        assert_eq!(chart.half_label, "1.00");
        assert_eq!(chart.max_label, "2.00");
        assert_eq!(chart.total, "2.50");
        assert_eq!(chart.bars[0].label, "01-14");
    }

    #[test]
    fn an_empty_month_draws_flat_bars() {
        let chart = SpendChart::new(&[day("2026-01-15", 0, 0)]);
        assert_eq!(chart.bars[0].package_h, 0);
        assert_eq!(chart.bars[0].balance_h, 0);
        assert_eq!(chart.max_label, "0.01");
        assert_eq!(chart.half_label, "0.005");
    }

    #[test]
    fn tick_labels_are_distinct_and_the_tallest_day_fits_under_the_top() {
        for tallest in [0, 1, 4_025, 12_500, 10_001, 99_999, 2_000_000, 7_654_321, 123_456_789_012] {
            let chart = SpendChart::new(&[day("2026-01-15", tallest, 0)]);
            let labels = [chart.max_label.as_str(), chart.half_label.as_str(), "0"];
            assert_ne!(labels[0], labels[1], "top and half differ for {tallest}");
            assert_ne!(labels[1], "0.00", "half is not zero for {tallest}");
            let top = Money::parse(labels[0]).unwrap().micros();
            assert!(top >= tallest, "{top} < {tallest}");
            assert!(top <= tallest.max(10_000) * 5, "the top is close to the tallest day");
        }
        assert_eq!(nice_top(12_500), 20_000);
        assert_eq!(SpendChart::new(&[day("2026-01-15", 12_500, 0)]).half_label, "0.01");
        let exact = SpendChart::new(&[day("2026-01-15", 4_025, 0)]);
        assert_eq!(exact.bars[0].title, "2026-01-15: 0.004025 + 0.00 USD", "hover text is exact");
    }
}
