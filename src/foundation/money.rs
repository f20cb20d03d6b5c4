//! Money as integer micro-units.
//!
//! Every amount the gateway stores, adds or compares is an `i64` of micro-units
//! (1.00 = 1_000_000), so that sums are exact and SQL can do the arithmetic. Text
//! enters through [`Money::parse`] (or the serde impl, which reads the raw JSON
//! token, never an `f64`) and leaves through `Display`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units in one currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An exact amount of money (USD of usage, or the payment currency) in micro-units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

/// Why a piece of text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a decimal number")]
    NotANumber(String),
    #[error("amount `{0}` has more than {1} decimals")]
    TooPrecise(String, u32),
    #[error("amount `{0}` is too large")]
    TooLarge(String),
}

impl Money {
    pub const ZERO: Money = Money(0);

    /// Wraps micro-units read from storage.
    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// Whole units, for constants and tests (`Money::units(30)` = 30.00).
    pub const fn units(units: i64) -> Self {
        Money(units * MICROS_PER_UNIT)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Saturating sum, for display totals where overflow is impossible in practice.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn min(self, other: Money) -> Money {
        Money(self.0.min(other.0))
    }

    pub fn max(self, other: Money) -> Money {
        Money(self.0.max(other.0))
    }

    /// Parses a decimal like `30`, `30.5`, `-1.25` or `0.000001` exactly (at most 6 decimals).
    pub fn parse(text: &str) -> Result<Money, MoneyParseError> {
        Self::parse_with_scale(text, 6)
    }

    /// Parses an amount that must be whole cents (prices and payment amounts: `30.00`).
    pub fn parse_cents(text: &str) -> Result<Money, MoneyParseError> {
        Self::parse_with_scale(text, 2)
    }

    fn parse_with_scale(text: &str, max_decimals: u32) -> Result<Money, MoneyParseError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(MoneyParseError::Empty);
        }
        let not_a_number = || MoneyParseError::NotANumber(trimmed.to_string());
        let (negative, digits) = match trimmed.as_bytes()[0] {
            b'-' => (true, &trimmed[1..]),
            b'+' => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(not_a_number());
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_number());
        }
        if digits.ends_with('.') && fraction.is_empty() && whole.is_empty() {
            return Err(not_a_number());
        }
        // Trailing zeros beyond the allowed scale carry no value (`30.000000000`).
        let significant = fraction.trim_end_matches('0');
        if significant.len() > max_decimals as usize {
            return Err(MoneyParseError::TooPrecise(trimmed.to_string(), max_decimals));
        }
        let too_large = || MoneyParseError::TooLarge(trimmed.to_string());
        let whole_value: i64 = if whole.is_empty() { 0 } else { whole.parse::<i64>().map_err(|_| too_large())? };
        let mut fraction_value: i64 = 0;
        for (i, b) in significant.bytes().enumerate() {
            fraction_value += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        let micros = whole_value
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|m| m.checked_add(fraction_value))
            .ok_or_else(too_large)?;
        Ok(Money(if negative { -micros } else { micros }))
    }

    /// True when the amount has no sub-cent part (payment amounts must be whole cents).
    pub fn is_whole_cents(self) -> bool {
        self.0 % 10_000 == 0
    }

    /// Exactly two decimals, rounding half away from zero: `30.00`. Used for payment
    /// amounts (always whole cents) and for compact display.
    pub fn format_2dp(self) -> String {
        let cents = {
            let rem = self.0 % 10_000;
            let base = self.0 / 10_000;
            if rem.abs() >= 5_000 {
                base + self.0.signum()
            } else {
                base
            }
        };
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl fmt::Display for Money {
    /// At least two decimals, more only when they carry value: `30.00`, `0.001234`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let fraction = abs % MICROS_PER_UNIT as u64;
        let mut digits = format!("{fraction:06}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        write!(f, "{sign}{whole}.{digits}")
    }
}

impl FromStr for Money {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Reads the raw JSON token (`30`, `30.00` or `"30.00"`) so no float is ever involved.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(deserializer)?;
        let token = raw.get().trim();
        let text = if token.starts_with('"') {
            serde_json::from_str::<String>(token).map_err(serde::de::Error::custom)?
        } else {
            token.to_string()
        };
        if text.contains(['e', 'E']) {
            return Err(serde::de::Error::custom(format!(
                "amount `{text}` must be a plain decimal, not exponent notation"
            )));
        }
        Money::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_users_type() {
        assert_eq!(Money::parse("30").unwrap(), Money::units(30));
        assert_eq!(Money::parse("30.5").unwrap().micros(), 30_500_000);
        assert_eq!(Money::parse("30.00").unwrap(), Money::units(30));
        assert_eq!(Money::parse(".5").unwrap().micros(), 500_000);
        assert_eq!(Money::parse("-1.25").unwrap().micros(), -1_250_000);
        assert_eq!(Money::parse("0.000001").unwrap().micros(), 1);
        assert_eq!(Money::parse("5.100000000").unwrap().micros(), 5_100_000);
    }

    #[test]
    fn rejects_what_is_not_an_exact_amount() {
        assert!(matches!(Money::parse(""), Err(MoneyParseError::Empty)));
        assert!(matches!(Money::parse("abc"), Err(MoneyParseError::NotANumber(_))));
        assert!(matches!(Money::parse("1.2.3"), Err(MoneyParseError::NotANumber(_))));
        assert!(matches!(Money::parse("."), Err(MoneyParseError::NotANumber(_))));
        assert!(matches!(Money::parse("1e3"), Err(MoneyParseError::NotANumber(_))));
        assert!(matches!(Money::parse("0.0000001"), Err(MoneyParseError::TooPrecise(..))));
        assert!(matches!(Money::parse_cents("29.999"), Err(MoneyParseError::TooPrecise(..))));
        assert!(matches!(Money::parse("99999999999999999"), Err(MoneyParseError::TooLarge(_))));
    }

    #[test]
    fn formats_with_two_decimals_and_more_only_when_needed() {
        assert_eq!(Money::units(30).to_string(), "30.00");
        assert_eq!(Money::from_micros(1_234).to_string(), "0.001234");
        assert_eq!(Money::from_micros(-1_500_000).to_string(), "-1.50");
        assert_eq!(Money::from_micros(29_999_999).format_2dp(), "30.00");
        assert_eq!(Money::from_micros(10_004_999).format_2dp(), "10.00");
        assert_eq!(Money::from_micros(-5_000).format_2dp(), "-0.01");
    }

    #[test]
    fn deserializes_numbers_and_strings_without_floats() {
        let v: Vec<Money> = serde_json::from_str(r#"[30, 30.00, "30.00", 0.1, "0.000001"]"#).unwrap();
        assert_eq!(
            v.iter().map(|m| m.micros()).collect::<Vec<_>>(),
            vec![30_000_000, 30_000_000, 30_000_000, 100_000, 1]
        );
        assert!(serde_json::from_str::<Money>("1e2").is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
        assert_eq!(serde_json::to_string(&Money::units(5)).unwrap(), r#""5.00""#);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(micros in -1_000_000_000_000_000i64..1_000_000_000_000_000i64) {
            let m = Money::from_micros(micros);
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn whole_cents_round_trip_through_2dp(cents in -100_000_000_000i64..100_000_000_000i64) {
            let m = Money::from_micros(cents * 10_000);
            prop_assert_eq!(Money::parse_cents(&m.format_2dp()).unwrap(), m);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = Money::parse(&s);
        }
    }
}
