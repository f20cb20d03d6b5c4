//! The 30-day spend chart of the dashboard, drawn by the server as inline SVG: one
//! stacked bar per business day (package allowance below, balance above).

use crate::billing::usage::DaySpend;
use crate::money::Money;

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

impl SpendChart {
    pub fn new(days: &[DaySpend]) -> Self {
        let span = HEIGHT - TOP - BOTTOM;
        let base_y = HEIGHT - BOTTOM;
        let max = days.iter().map(|d| d.total.micros()).max().unwrap_or(0).max(10_000);
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
                    title: format!("{}: {} + {} USD", d.date, d.package.format_2dp(), d.balance.format_2dp()),
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
            max_label: Money::from_micros(max).format_2dp(),
            half_label: Money::from_micros(max / 2).format_2dp(),
            base_y,
            top_y: TOP,
            half_y: TOP + span / 2,
            left: LEFT,
            right: WIDTH,
            label_y: HEIGHT - 6,
            total: total.format_2dp(),
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
    }
}
