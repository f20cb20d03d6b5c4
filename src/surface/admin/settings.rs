//! Run-time settings: what the admin sees of them (secrets write-only), a partial
//! update merged into them and checked against every rule, and the audited save.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Actor;
use crate::domain::audit::{self, Change};
use crate::domain::settings::Settings;
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;

/// Merges a partial settings document, validates, saves and audits it.
pub async fn update(state: &AppState, actor: &Actor, patch: Value) -> Result<Arc<Settings>> {
    let current = state.settings.get().await?;
    let next = apply_patch(&current, patch)?;
    let now = state.now();
    let saved = state.settings.save(next, now).await?;
    let public_url = &state.config.public_url;
    let change = Change {
        before: Some(public_view(&current, public_url)),
        after: Some(public_view(&saved, public_url)),
        ..Change::new("settings.update", "settings")
    };
    audit::record_change(&state.db, actor, change, now).await?;
    Ok(saved)
}

/// Settings as the API shows them: the merchant key replaced by `key_set`.
pub fn public_view(settings: &Settings, public_url: &str) -> Value {
    let mut value = serde_json::to_value(settings).unwrap_or(Value::Null);
    if let Some(credit) = value.get_mut("credit").and_then(Value::as_object_mut) {
        credit.remove("key");
        credit.insert("key_set".into(), json!(!settings.credit.key.is_empty()));
        credit.insert("effective_notify_url".into(), json!(settings.credit.notify_url_or_default(public_url)));
        credit.insert("effective_return_url".into(), json!(settings.credit.return_url_or_default(public_url)));
        credit.insert("usable".into(), json!(settings.credit.is_usable()));
    }
    if let Some(oauth) = value.get_mut("oauth").and_then(Value::as_object_mut) {
        oauth.remove("client_secret");
        oauth.insert("client_secret_set".into(), json!(!settings.oauth.client_secret.is_empty()));
        oauth.insert("usable".into(), json!(settings.oauth.is_usable()));
        oauth.insert("redirect_uri".into(), json!(crate::domain::oauth::redirect_uri(public_url)));
    }
    value
}

/// Merges `patch` into `base` (objects recursively, everything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Refuses a patch key the settings do not have (`credit.gateway_ulr`), named by its path:
/// stored settings load leniently (old documents keep working), so the check is on the patch
/// against the current settings' shape, which serialises every field (no maps, no skipped ones).
fn reject_unknown(shape: &Value, patch: &Value, prefix: &str) -> Result<(), Error> {
    let (Value::Object(shape), Value::Object(patch)) = (shape, patch) else { return Ok(()) };
    for (key, value) in patch {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match shape.get(key) {
            None => return Err(Error::unknown_field(path, "the settings")),
            Some(inner) => reject_unknown(inner, value, &path)?,
        }
    }
    Ok(())
}

/// Applies a partial update to settings and checks the result (the first problem).
pub fn apply_patch(current: &Settings, patch: Value) -> Result<Settings, Error> {
    let settings = merged(current, patch)?;
    validate(&settings)?;
    Ok(settings)
}

/// The settings a partial update would give, not yet checked (see [`problems`]).
pub fn merged(current: &Settings, mut patch: Value) -> Result<Settings, Error> {
    if !patch.is_object() {
        return Err(Error::bad_request("invalid_body", "settings must be a JSON object"));
    }
    // The key is write-only: an empty or absent key keeps the stored one.
    if let Some(credit) = patch.get_mut("credit").and_then(Value::as_object_mut) {
        credit.remove("key_set");
        credit.remove("usable");
        credit.remove("effective_notify_url");
        credit.remove("effective_return_url");
        if credit.get("key").and_then(Value::as_str).is_some_and(str::is_empty) {
            credit.remove("key");
        }
    }
    if let Some(oauth) = patch.get_mut("oauth").and_then(Value::as_object_mut) {
        oauth.remove("client_secret_set");
        oauth.remove("usable");
        oauth.remove("redirect_uri");
        if oauth.get("client_secret").and_then(Value::as_str).is_some_and(str::is_empty) {
            oauth.remove("client_secret");
        }
    }
    let mut merged = serde_json::to_value(current).map_err(|e| Error::internal(e.to_string()))?;
    reject_unknown(&merged, &patch, "")?;
    merge(&mut merged, patch);
    // Through text, so money fields are parsed exactly from their JSON tokens.
    let settings: Settings = serde_json::from_str(&merged.to_string())
        .map_err(|e| Error::bad_request("invalid_body", format!("settings do not match the expected shape: {e}")))?;
    Ok(settings)
}

fn validate(s: &Settings) -> Result<(), Error> {
    problems(s).into_iter().next().map_or(Ok(()), Err)
}

/// Every rule the settings break, one error per field, so the settings page can show
/// them all at once (the API answers the first).
pub fn problems(s: &Settings) -> Vec<Error> {
    let mut found = Vec::new();
    if s.max_keys_per_user < 1 {
        found.push(Error::validation("max_keys_per_user", "must be at least 1"));
    }
    if !s.markup.is_positive() {
        found.push(Error::validation("markup", "must be greater than 0"));
    }
    if s.default_daily_cap.is_some_and(|c| c.is_negative()) {
        found.push(Error::validation("default_daily_cap", "must not be negative"));
    }
    if !["queue", "switch", "stack"].contains(&s.package_switch_mode.as_str()) {
        found.push(Error::validation("package_switch_mode", "must be queue, switch or stack"));
    }
    let c = &s.credit;
    if !(1..=1440).contains(&c.order_ttl_minutes) {
        found.push(Error::validation("credit.order_ttl_minutes", "must be between 1 and 1440"));
    }
    for (field, value) in [
        ("credit.gateway_url", &c.gateway_url),
        ("credit.notify_url", &c.notify_url),
        ("credit.return_url", &c.return_url),
    ] {
        if !value.is_empty() && url::Url::parse(value).map(|u| !u.scheme().starts_with("http")).unwrap_or(true) {
            found.push(Error::validation(field, "must be an http(s) URL"));
        }
    }
    if c.enabled {
        // Switched on without the merchant fields, payments would silently stay off.
        for (field, value) in [("credit.gateway_url", &c.gateway_url), ("credit.pid", &c.pid), ("credit.key", &c.key)] {
            if value.trim().is_empty() {
                found.push(Error::validation(field, "is required to switch payments on"));
            }
        }
    }
    if c.pay_type.trim().is_empty() {
        found.push(Error::validation("credit.pay_type", "must not be empty (epay for LINUX DO Credit)"));
    }
    if !["linuxdo", "classic"].contains(&c.flavour.as_str()) {
        found.push(Error::validation("credit.flavour", "must be linuxdo or classic"));
    }
    if !c.topup_min.is_positive()
        || c.topup_max < c.topup_min
        || !c.topup_min.is_whole_cents()
        || !c.topup_max.is_whole_cents()
    {
        found.push(Error::validation("credit.topup_min", "top-up bounds must be whole cents with 0 < min <= max"));
    }
    if !(1..=43_200).contains(&c.reconcile_window_minutes) {
        found.push(Error::validation("credit.reconcile_window_minutes", "must be between 1 and 43200"));
    }
    if !c.topup_rate.is_positive() {
        found.push(Error::validation("credit.topup_rate", "must be greater than 0"));
    }
    if !(1..=1_000_000).contains(&s.hold_output_tokens) {
        found.push(Error::validation("hold_output_tokens", "must be between 1 and 1000000"));
    }
    if !(0..=1_000_000).contains(&s.hold_floor_tokens) {
        found.push(Error::validation("hold_floor_tokens", "must be between 0 and 1000000"));
    }
    if s.hold_floors.iter().any(|f| f.model.trim().is_empty() || !(0..=1_000_000).contains(&f.output_tokens)) {
        found.push(Error::validation("hold_floors", "each needs a model and output_tokens between 0 and 1000000"));
    }
    if !(1..=10).contains(&s.upstream_max_attempts) {
        found.push(Error::validation("upstream_max_attempts", "must be between 1 and 10"));
    }
    let o = &s.oauth;
    for (field, value) in [
        ("oauth.authorize_url", &o.authorize_url),
        ("oauth.token_url", &o.token_url),
        ("oauth.userinfo_url", &o.userinfo_url),
    ] {
        if url::Url::parse(value).map(|u| !u.scheme().starts_with("http")).unwrap_or(true) {
            found.push(Error::validation(field, "must be an http(s) URL"));
        }
    }
    if !(0..=4).contains(&o.min_trust_level) {
        found.push(Error::validation("oauth.min_trust_level", "must be between 0 and 4"));
    }
    if o.linuxdo_only && !o.enabled {
        found.push(Error::validation("oauth.linuxdo_only", "needs LINUX DO sign-in enabled (oauth.enabled)"));
    }
    let r = &s.rate_limits;
    for (field, value) in [
        ("rate_limits.key_requests_per_minute", r.key_requests_per_minute),
        ("rate_limits.user_requests_per_minute", r.user_requests_per_minute),
        ("rate_limits.user_max_concurrent_streams", r.user_max_concurrent_streams),
    ] {
        if !(0..=1_000_000).contains(&value) {
            found.push(Error::validation(field, "must be between 0 (unlimited) and 1000000"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_write_only_and_kept_when_blank() {
        let mut s = Settings::default();
        s.credit.key = "SECRET".into();
        let view = public_view(&s, "http://x");
        assert!(view["credit"].get("key").is_none());
        assert_eq!(view["credit"]["key_set"], json!(true));
        let next = apply_patch(&s, json!({"credit": {"key": "", "pid": "1001"}})).unwrap();
        assert_eq!(next.credit.key, "SECRET");
        assert_eq!(next.credit.pid, "1001");
    }

    #[test]
    fn the_oauth_client_secret_is_write_only_and_kept_when_blank() {
        let mut s = Settings::default();
        s.oauth.client_secret = "OAUTH-SECRET".into();
        let view = public_view(&s, "http://x");
        assert!(view["oauth"].get("client_secret").is_none());
        assert_eq!(view["oauth"]["client_secret_set"], json!(true));
        assert_eq!(view["oauth"]["redirect_uri"], json!("http://x/api/auth/oauth/linuxdo/callback"));
        let next = apply_patch(&s, json!({"oauth": {"client_secret": "", "client_id": "abc"}})).unwrap();
        assert_eq!(next.oauth.client_secret, "OAUTH-SECRET");
        assert_eq!(next.oauth.client_id, "abc");
        let err = apply_patch(&s, json!({"oauth": {"min_trust_level": 5}})).unwrap_err();
        assert_eq!(err.field(), Some("oauth.min_trust_level"));
        let err = apply_patch(&s, json!({"oauth": {"linuxdo_only": true}})).unwrap_err();
        assert_eq!(err.field(), Some("oauth.linuxdo_only"), "users would have no way to sign in");
    }

    #[test]
    fn unknown_keys_are_refused_by_their_path() {
        let s = Settings::default();
        let err = apply_patch(&s, json!({"markupp": 2})).unwrap_err();
        assert_eq!((err.code(), err.field()), ("unknown_field", Some("markupp")));
        let err = apply_patch(&s, json!({"credit": {"gateway_ulr": "https://x"}})).unwrap_err();
        assert_eq!((err.code(), err.field()), ("unknown_field", Some("credit.gateway_ulr")));
        // What GET shows (read-only extras included) can be sent back as it is.
        let view = public_view(&s, "http://x");
        assert!(apply_patch(&s, view).is_ok());
    }

    #[test]
    fn invalid_values_name_the_field() {
        let s = Settings::default();
        let err = apply_patch(&s, json!({"markup": "0"})).unwrap_err();
        assert_eq!(err.field(), Some("markup"));
        let err = apply_patch(&s, json!({"credit": {"gateway_url": "ftp://x"}})).unwrap_err();
        assert_eq!(err.field(), Some("credit.gateway_url"));
        let ok = apply_patch(&s, json!({"markup": 1.5, "registration_enabled": false})).unwrap();
        assert_eq!(ok.markup.micros(), 1_500_000);
        assert!(!ok.registration_enabled);
    }
}
