//! The `/admin/settings` form: the settings as text fields, and back into the partial
//! JSON document `PUT /api/admin/settings` takes, so both share `apply_patch`'s checks.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::domain::settings::Settings;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// The settings form as typed (checkboxes are present only when ticked).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SettingsForm {
    #[serde(deserialize_with = "checkbox")]
    pub registration_enabled: bool,
    pub max_keys_per_user: String,
    pub default_daily_cap: String,
    pub markup: String,
    pub package_switch_mode: String,
    #[serde(deserialize_with = "checkbox")]
    pub credit_enabled: bool,
    pub credit_gateway_url: String,
    pub credit_pid: String,
    /// Write-only: blank keeps the stored key.
    pub credit_key: String,
    pub credit_pay_type: String,
    pub credit_notify_url: String,
    pub credit_return_url: String,
    pub credit_order_ttl_minutes: String,
    pub credit_flavour: String,
    #[serde(deserialize_with = "checkbox")]
    pub credit_topup_enabled: bool,
    pub credit_topup_min: String,
    pub credit_topup_max: String,
    pub credit_topup_rate: String,
    #[serde(deserialize_with = "checkbox")]
    pub oauth_enabled: bool,
    pub oauth_client_id: String,
    /// Write-only: blank keeps the stored secret.
    pub oauth_client_secret: String,
    #[serde(deserialize_with = "checkbox")]
    pub oauth_allow_registration: bool,
    pub oauth_min_trust_level: String,
    #[serde(deserialize_with = "checkbox")]
    pub oauth_linuxdo_only: bool,
}

fn checkbox<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<bool, D::Error> {
    let value = String::deserialize(deserializer)?;
    Ok(!value.is_empty() && value != "off")
}

fn amount(field: &str, text: &str) -> Result<String> {
    Money::parse(text.trim())
        .map(|m| m.to_string())
        .map_err(|_| Error::validation(field, "must be an amount such as 1.50"))
}

fn whole(field: &str, text: &str) -> Result<i64> {
    text.trim().parse::<i64>().map_err(|_| Error::validation(field, "must be a whole number"))
}

impl SettingsForm {
    /// The stored settings as the form shows them (never the merchant key).
    pub fn from_settings(s: &Settings) -> Self {
        let c = &s.credit;
        SettingsForm {
            registration_enabled: s.registration_enabled,
            max_keys_per_user: s.max_keys_per_user.to_string(),
            default_daily_cap: s.default_daily_cap.map(|m| m.to_string()).unwrap_or_default(),
            markup: s.markup.to_string(),
            package_switch_mode: s.package_switch_mode.clone(),
            credit_enabled: c.enabled,
            credit_gateway_url: c.gateway_url.clone(),
            credit_pid: c.pid.clone(),
            credit_key: String::new(),
            credit_pay_type: c.pay_type.clone(),
            credit_notify_url: c.notify_url.clone(),
            credit_return_url: c.return_url.clone(),
            credit_order_ttl_minutes: c.order_ttl_minutes.to_string(),
            credit_flavour: c.flavour.clone(),
            credit_topup_enabled: c.topup_enabled,
            credit_topup_min: c.topup_min.format_2dp(),
            credit_topup_max: c.topup_max.format_2dp(),
            credit_topup_rate: c.topup_rate.to_string(),
            oauth_enabled: s.oauth.enabled,
            oauth_client_id: s.oauth.client_id.clone(),
            oauth_client_secret: String::new(),
            oauth_allow_registration: s.oauth.allow_oauth_registration,
            oauth_min_trust_level: s.oauth.min_trust_level.to_string(),
            oauth_linuxdo_only: s.oauth.linuxdo_only,
        }
    }

    /// The partial settings document; text that is not a number fails on its field.
    pub fn to_patch(&self) -> Result<Value> {
        self.to_patch_checked().map_err(|mut all| all.remove(0))
    }

    /// [`SettingsForm::to_patch`] with every field that is not a number reported, not
    /// only the first (never an empty list).
    pub fn to_patch_checked(&self) -> std::result::Result<Value, Vec<Error>> {
        let mut errors = Vec::new();
        let mut take = |parsed: Result<Value>| {
            parsed.unwrap_or_else(|e| {
                errors.push(e);
                Value::Null
            })
        };
        let cap = if self.default_daily_cap.trim().is_empty() {
            Value::Null
        } else {
            take(amount("default_daily_cap", &self.default_daily_cap).map(Value::from))
        };
        let max_keys = take(whole("max_keys_per_user", &self.max_keys_per_user).map(Value::from));
        let markup = take(amount("markup", &self.markup).map(Value::from));
        let ttl = take(whole("credit.order_ttl_minutes", &self.credit_order_ttl_minutes).map(Value::from));
        let topup_min = take(amount("credit.topup_min", &self.credit_topup_min).map(Value::from));
        let topup_max = take(amount("credit.topup_max", &self.credit_topup_max).map(Value::from));
        let topup_rate = take(amount("credit.topup_rate", &self.credit_topup_rate).map(Value::from));
        // Blank = 0, everyone (also when an older form lacks the field).
        let trust = if self.oauth_min_trust_level.trim().is_empty() {
            Value::from(0)
        } else {
            take(whole("oauth.min_trust_level", &self.oauth_min_trust_level).map(Value::from))
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(json!({
            "registration_enabled": self.registration_enabled,
            "max_keys_per_user": max_keys,
            "default_daily_cap": cap,
            "markup": markup,
            "package_switch_mode": self.package_switch_mode.trim(),
            "credit": {
                "enabled": self.credit_enabled,
                "gateway_url": self.credit_gateway_url.trim(),
                "pid": self.credit_pid.trim(),
                "key": self.credit_key.trim(),
                "pay_type": self.credit_pay_type.trim(),
                "notify_url": self.credit_notify_url.trim(),
                "return_url": self.credit_return_url.trim(),
                "order_ttl_minutes": ttl,
                "flavour": self.credit_flavour.trim(),
                "topup_enabled": self.credit_topup_enabled,
                "topup_min": topup_min,
                "topup_max": topup_max,
                "topup_rate": topup_rate,
            },
            "oauth": {
                "enabled": self.oauth_enabled,
                "client_id": self.oauth_client_id.trim(),
                "client_secret": self.oauth_client_secret.trim(),
                "allow_oauth_registration": self.oauth_allow_registration,
                "min_trust_level": trust,
                "linuxdo_only": self.oauth_linuxdo_only,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surface::admin::settings::apply_patch;

    #[test]
    fn the_form_round_trips_the_settings_and_keeps_a_blank_key() {
        let mut stored = Settings::default();
        stored.credit.key = "SECRET".into();
        let form = SettingsForm::from_settings(&stored);
        assert!(form.credit_key.is_empty());
        let next = apply_patch(&stored, form.to_patch().unwrap()).unwrap();
        assert_eq!(next.credit.key, "SECRET");
        assert_eq!(next.markup, stored.markup);
        assert_eq!(next.credit.topup_max, stored.credit.topup_max);
    }

    #[test]
    fn the_oauth_secret_is_write_only_and_the_other_oauth_fields_round_trip() {
        let mut stored = Settings::default();
        stored.oauth.client_secret = "OAUTH-SECRET".into();
        stored.oauth.client_id = "client-1".into();
        stored.oauth.enabled = true;
        stored.oauth.min_trust_level = 2;
        let form = SettingsForm::from_settings(&stored);
        assert!(form.oauth_client_secret.is_empty());
        assert_eq!(form.oauth_min_trust_level, "2");
        let next = apply_patch(&stored, form.to_patch().unwrap()).unwrap();
        assert_eq!(next.oauth.client_secret, "OAUTH-SECRET");
        assert_eq!(next.oauth.client_id, "client-1");
        assert_eq!(next.oauth.min_trust_level, 2);
        assert_eq!(next.oauth.authorize_url, stored.oauth.authorize_url, "endpoints not on the form stay");
        let form = SettingsForm { oauth_min_trust_level: "high".into(), ..SettingsForm::from_settings(&stored) };
        assert_eq!(form.to_patch().unwrap_err().field(), Some("oauth.min_trust_level"));
    }

    #[test]
    fn text_that_is_not_a_number_names_its_field() {
        let form = SettingsForm { markup: "abc".into(), ..SettingsForm::from_settings(&Settings::default()) };
        assert_eq!(form.to_patch().unwrap_err().field(), Some("markup"));
        let form = SettingsForm {
            credit_order_ttl_minutes: "soon".into(),
            ..SettingsForm::from_settings(&Settings::default())
        };
        assert_eq!(form.to_patch().unwrap_err().field(), Some("credit.order_ttl_minutes"));
    }

    #[test]
    fn every_field_that_is_not_a_number_is_reported_at_once() {
        let form = SettingsForm {
            markup: "abc".into(),
            max_keys_per_user: "many".into(),
            credit_topup_rate: "x".into(),
            ..SettingsForm::from_settings(&Settings::default())
        };
        let fields: Vec<_> =
            form.to_patch_checked().unwrap_err().iter().map(|e| e.field().unwrap_or_default().to_string()).collect();
        assert_eq!(fields, ["max_keys_per_user", "markup", "credit.topup_rate"]);
    }

    #[test]
    fn unticked_checkboxes_are_absent_from_the_form() {
        let form: SettingsForm = serde_urlencoded::from_str("markup=1&registration_enabled=on").unwrap();
        assert!(form.registration_enabled);
        assert!(!form.credit_enabled);
    }
}
