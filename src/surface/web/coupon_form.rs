//! The `/admin/coupons` form as typed, and its translation into a [`CouponInput`]:
//! the discount as a kind and a value, what it applies to as a scope with package
//! checkboxes, and the validity window as business dates (the "until" day included).

use chrono::NaiveDate;

use crate::domain::coupons::{Coupon, CouponInput};
use crate::foundation::clock::{from_micros, BusinessCalendar};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// The coupon form; built from the posted pairs because package checkboxes repeat a name.
#[derive(Debug, Clone, Default)]
pub struct CouponForm {
    pub code: String,
    /// `percent` or `amount`.
    pub kind: String,
    pub value: String,
    /// `all` packages, `selected` packages, or `none` (top-ups only).
    pub scope: String,
    pub package_ids: Vec<i64>,
    pub topup: bool,
    pub valid_from: String,
    pub valid_until: String,
    pub max_uses: String,
    pub max_uses_per_user: String,
    pub enabled: bool,
}

impl CouponForm {
    /// The empty form of the create card.
    pub fn blank() -> Self {
        CouponForm { kind: "percent".into(), scope: "all".into(), enabled: true, ..Default::default() }
    }

    /// A stored coupon as the edit form shows it (the stored end is the start of the day
    /// after the last valid day).
    pub fn from_coupon(c: &Coupon, calendar: &BusinessCalendar) -> Self {
        let day = |m: i64| calendar.business_date(from_micros(m)).to_string();
        let (kind, value) = match (c.percent_off, c.amount_off) {
            (Some(p), _) => {
                let p = Money::from_micros(p).to_string();
                ("percent", p.strip_suffix(".00").map(str::to_string).unwrap_or(p))
            }
            (None, a) => ("amount", Money::from_micros(a.unwrap_or(0)).format_2dp()),
        };
        let ids = c.package_ids();
        let scope = match &ids {
            None => "all",
            Some(list) if list.is_empty() => "none",
            Some(_) => "selected",
        };
        let text = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        CouponForm {
            code: c.code.clone(),
            kind: kind.into(),
            value,
            scope: scope.into(),
            package_ids: ids.unwrap_or_default(),
            topup: c.applies_to_topup != 0,
            valid_from: c.valid_from.map(day).unwrap_or_default(),
            valid_until: c.valid_until.map(|m| day(m - 1)).unwrap_or_default(),
            max_uses: text(c.max_uses),
            max_uses_per_user: text(c.max_uses_per_user),
            enabled: c.enabled != 0,
        }
    }

    /// Reads the posted `(name, value)` pairs (unticked checkboxes are absent).
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut form = CouponForm::default();
        for (key, value) in pairs {
            match key.as_str() {
                "code" => form.code = value.clone(),
                "kind" => form.kind = value.clone(),
                "value" => form.value = value.clone(),
                "scope" => form.scope = value.clone(),
                "package_ids" => form.package_ids.extend(value.trim().parse::<i64>().ok()),
                "topup" => form.topup = !value.is_empty(),
                "valid_from" => form.valid_from = value.clone(),
                "valid_until" => form.valid_until = value.clone(),
                "max_uses" => form.max_uses = value.clone(),
                "max_uses_per_user" => form.max_uses_per_user = value.clone(),
                "enabled" => form.enabled = !value.is_empty(),
                _ => {}
            }
        }
        form
    }

    /// Whether the package checkbox `id` is ticked (for re-showing the form).
    pub fn has_package(&self, id: &i64) -> bool {
        self.package_ids.contains(id)
    }

    /// The validated coupon; errors name the form's fields.
    pub fn input(&self, calendar: &BusinessCalendar) -> Result<CouponInput> {
        let value = Money::parse(self.value.trim())
            .map_err(|_| Error::validation("value", "must be an amount such as 1.50"))?;
        let (percent_off, amount_off) = match self.kind.as_str() {
            "amount" => (None, Some(value)),
            _ => (Some(value), None),
        };
        let package_ids = match self.scope.as_str() {
            "selected" if self.package_ids.is_empty() => {
                return Err(Error::validation("package_ids", "choose at least one package"));
            }
            "selected" => Some(self.package_ids.clone()),
            "none" if !self.topup => {
                return Err(Error::validation("scope", "the coupon would apply to nothing"));
            }
            "none" => Some(Vec::new()),
            _ => None,
        };
        let valid_until = date("valid_until", &self.valid_until)?.and_then(|d| d.succ_opt());
        let mut input = CouponInput {
            code: self.code.clone(),
            percent_off,
            amount_off,
            package_ids,
            applies_to_topup: self.topup,
            valid_from: date("valid_from", &self.valid_from)?.map(|d| calendar.day_start(d)),
            valid_until: valid_until.map(|d| calendar.day_start(d)),
            max_uses: optional_whole("max_uses", &self.max_uses)?,
            max_uses_per_user: optional_whole("max_uses_per_user", &self.max_uses_per_user)?,
            enabled: self.enabled,
        };
        input.validate().map_err(|e| match e {
            Error::Validation { field, message } if field == "percent_off" || field == "amount_off" => {
                Error::validation("value", message)
            }
            Error::Validation { field, message } if field == "valid_until" => Error::validation(
                "valid_until",
                if message.contains("after") { "must not be before the start date".into() } else { message },
            ),
            other => other,
        })?;
        Ok(input)
    }
}

fn date(field: &str, text: &str) -> Result<Option<NaiveDate>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Error::validation(field, "must be a date such as 2026-01-31"))
}

fn optional_whole(field: &str, text: &str) -> Result<Option<i64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| Error::validation(field, "must be a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_form_becomes_a_coupon_with_an_inclusive_until_day() {
        let calendar = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let form = CouponForm::from_pairs(&pairs(&[
            ("code", "spring"),
            ("kind", "percent"),
            ("value", "20"),
            ("scope", "selected"),
            ("package_ids", "3"),
            ("package_ids", "1"),
            ("valid_from", "2026-03-01"),
            ("valid_until", "2026-03-31"),
            ("max_uses", "10"),
            ("enabled", "on"),
        ]));
        let input = form.input(&calendar).unwrap();
        assert_eq!(input.code, "SPRING");
        assert_eq!(input.percent_off, Some(Money::units(20)));
        assert_eq!(input.package_ids, Some(vec![1, 3]));
        assert_eq!(input.valid_until.unwrap().to_rfc3339(), "2026-03-31T16:00:00+00:00", "end of 31 March, +08:00");
        assert_eq!(input.max_uses, Some(10));
        assert_eq!(input.max_uses_per_user, None);
        assert!(input.enabled);
    }

    #[test]
    fn a_stored_coupon_comes_back_as_the_form_that_made_it() {
        let calendar = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let form = CouponForm::from_pairs(&pairs(&[
            ("code", "TOPUP"),
            ("kind", "amount"),
            ("value", "1.50"),
            ("scope", "none"),
            ("topup", "on"),
            ("valid_from", "2026-03-01"),
            ("valid_until", "2026-03-31"),
            ("max_uses_per_user", "2"),
        ]));
        let input = form.input(&calendar).unwrap();
        let stored = Coupon {
            id: 1,
            code: input.code.clone(),
            percent_off: None,
            amount_off: input.amount_off.map(Money::micros),
            package_ids: Some("[]".into()),
            applies_to_topup: 1,
            valid_from: input.valid_from.map(crate::foundation::clock::to_micros),
            valid_until: input.valid_until.map(crate::foundation::clock::to_micros),
            max_uses: None,
            max_uses_per_user: Some(2),
            used: 0,
            enabled: 0,
            created_at: 0,
            updated_at: 0,
        };
        let back = CouponForm::from_coupon(&stored, &calendar);
        assert_eq!((back.kind.as_str(), back.value.as_str(), back.scope.as_str()), ("amount", "1.50", "none"));
        assert_eq!((back.valid_from.as_str(), back.valid_until.as_str()), ("2026-03-01", "2026-03-31"));
        assert!(back.topup && !back.enabled);
        assert_eq!(back.max_uses_per_user, "2");
    }

    #[test]
    fn form_errors_name_the_form_fields() {
        let calendar = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let base = [("code", "OK-1"), ("kind", "amount"), ("value", "5"), ("scope", "all")];
        let field = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            let form = CouponForm::from_pairs(&pairs(&all));
            form.input(&calendar).unwrap_err().field().map(str::to_string)
        };
        assert_eq!(field(&[("value", "0")]).as_deref(), Some("value"));
        assert_eq!(field(&[("value", "abc")]).as_deref(), Some("value"));
        assert_eq!(field(&[("scope", "selected")]).as_deref(), Some("package_ids"));
        assert_eq!(field(&[("scope", "none")]).as_deref(), Some("scope"));
        assert_eq!(
            field(&[("valid_from", "2026-03-05"), ("valid_until", "2026-03-01")]).as_deref(),
            Some("valid_until")
        );
        assert_eq!(field(&[("max_uses", "two")]).as_deref(), Some("max_uses"));
        assert_eq!(field(&[("code", "a b")]).as_deref(), Some("code"));
    }
}
