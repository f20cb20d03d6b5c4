//! Upstream providers: the admin's CRUD, their health record, and the probe that
//! brings unhealthy ones back.
//!
//! The credential (`api_key`) is write-only: it is stored, sent upstream, and never
//! returned (views show `api_key_set` and a masked hint) nor logged (`Debug` redacts it).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::catalog::Catalog;
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar, SharedClock};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::secrets::SecretBox;

/// Consecutive failures after which an upstream is skipped until a probe succeeds.
pub const UNHEALTHY_AFTER_FAILURES: i64 = 3;

/// A row of `upstreams`.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub id: i64,
    pub name: String,
    /// API root with its version, without trailing `/` (`https://api.openai.com/v1`).
    pub base_url: String,
    pub api_key: SecretString,
    /// Models it serves; `None` = all.
    pub models: Option<Vec<String>>,
    /// Model names rewritten for this upstream (client's name → upstream's name).
    pub model_map: Option<BTreeMap<String, String>>,
    pub priority: i64,
    pub weight: i64,
    pub enabled: bool,
    pub healthy: bool,
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub last_checked_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

type UpstreamRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    i64,
    i64,
    Option<String>,
);

/// Flags are 0/1 integers: the Any driver cannot decode SQLite's BOOLEAN.
const COLUMNS: &str = "id, name, base_url, api_key, models, priority, weight, \
                       enabled, \
                       healthy, consecutive_failures, \
                       last_error, last_checked_at, created_at, updated_at, model_map";

/// Builds an upstream from its row, opening the sealed credential.
fn from_row(r: UpstreamRow, secrets: &SecretBox) -> Upstream {
    let api_key = secrets.open(&r.3).unwrap_or_else(|| {
        tracing::error!(upstream = %r.1, "the upstream credential cannot be decrypted (GATEWAY_SECRET changed?)");
        String::new()
    });
    Upstream {
        id: r.0,
        name: r.1,
        base_url: r.2,
        api_key: SecretString::from(api_key),
        models: r.4.and_then(|m| serde_json::from_str(&m).ok()),
        priority: r.5,
        weight: r.6,
        enabled: r.7 != 0,
        healthy: r.8 != 0,
        consecutive_failures: r.9,
        last_error: r.10,
        last_checked_at: r.11,
        created_at: r.12,
        updated_at: r.13,
        model_map: r.14.and_then(|m| serde_json::from_str(&m).ok()),
    }
}

impl Upstream {
    /// A healthy, enabled upstream with no models or map, for unit tests of the rules that
    /// pick and edit upstreams.
    #[cfg(test)]
    pub(crate) fn for_tests(id: i64, base_url: &str, api_key: &str) -> Self {
        Upstream {
            id,
            name: format!("u{id}"),
            base_url: base_url.into(),
            api_key: SecretString::from(api_key.to_string()),
            models: None,
            model_map: None,
            priority: 0,
            weight: 1,
            enabled: true,
            healthy: true,
            consecutive_failures: 0,
            last_error: None,
            last_checked_at: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Whether this upstream may be asked for `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// The model name to send this upstream for the client's `model`, when it differs.
    pub fn mapped_model(&self, model: &str) -> Option<&str> {
        self.model_map.as_ref()?.get(model).map(String::as_str)
    }

    /// `{base_url}{path}`, e.g. `.../v1` + `/responses`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn view(&self, calendar: &BusinessCalendar) -> UpstreamView {
        let key = self.api_key.expose_secret();
        // Whole characters: a key pasted with multibyte characters must not panic here.
        let hint = crate::foundation::redact::hint(key);
        UpstreamView {
            id: self.id,
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            api_key_set: !key.is_empty(),
            api_key_hint: hint,
            models: self.models.clone(),
            model_map: self.model_map.clone(),
            priority: self.priority,
            weight: self.weight,
            enabled: self.enabled,
            healthy: self.healthy,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.clone(),
            last_checked_at: self.last_checked_at.map(|t| calendar.format(from_micros(t))),
            created_at: calendar.format(from_micros(self.created_at)),
            updated_at: calendar.format(from_micros(self.updated_at)),
        }
    }
}

/// What the admin API shows of an upstream (never the credential).
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamView {
    pub id: i64,
    pub name: String,
    pub base_url: String,
    pub api_key_set: bool,
    pub api_key_hint: String,
    pub models: Option<Vec<String>>,
    pub model_map: Option<BTreeMap<String, String>>,
    pub priority: i64,
    pub weight: i64,
    pub enabled: bool,
    pub healthy: bool,
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub last_checked_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The editable fields of an upstream (all present once merged with the stored row).
#[derive(Debug, Clone)]
pub struct UpstreamInput {
    pub name: String,
    pub base_url: String,
    pub api_key: SecretString,
    pub models: Option<Vec<String>>,
    pub model_map: Option<BTreeMap<String, String>>,
    pub priority: i64,
    pub weight: i64,
    pub enabled: bool,
}

/// Normalises and checks an upstream before it is stored (the first problem found).
pub fn validate(input: &mut UpstreamInput) -> Result<()> {
    problems(input).into_iter().next().map_or(Ok(()), Err)
}

/// Why an edit that moves an upstream to another origin without a new key is refused.
pub const KEY_AGAIN_FOR_NEW_ORIGIN: &str = "must be entered again when the address moves to another host";

/// The key an edit stores. A stored key only ever goes to the origin (scheme, host, port) it
/// was entered for: an edit that moves the address elsewhere must bring a key of its own, or
/// an admin session (a stolen one too) could point the upstream and its "Test connection" at
/// its own server and read the write-only key off the wire. `typed` is the key given with the
/// edit, if any; without one the stored key stays only on the same origin.
/// An address that is not an http(s) URL keeps the stored key here: `problems` refuses it on its
/// own field, so the edit is never saved and nothing is sent anywhere.
pub fn key_for_edit(current: &Upstream, new_base_url: &str, typed: Option<SecretString>) -> Result<SecretString> {
    let origin = |text: &str| {
        let url = url::Url::parse(text.trim()).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
        Some((url.scheme().to_string(), url.host_str().map(str::to_string), url.port_or_known_default()))
    };
    match (typed, origin(new_base_url)) {
        (Some(key), _) => Ok(key),
        (None, Some(new)) if origin(&current.base_url).as_ref() != Some(&new) => {
            Err(Error::validation("api_key", KEY_AGAIN_FOR_NEW_ORIGIN))
        }
        (None, _) => Ok(current.api_key.clone()),
    }
}

/// Normalises an upstream and lists every rule it breaks, one error per field, so a
/// form can show them all at once (the API answers the first).
pub fn problems(input: &mut UpstreamInput) -> Vec<Error> {
    let mut found = Vec::new();
    input.name = input.name.trim().to_string();
    if input.name.is_empty() || input.name.chars().count() > 64 {
        found.push(Error::validation("name", "must be 1 to 64 characters"));
    }
    input.base_url = input.base_url.trim().trim_end_matches('/').to_string();
    match url::Url::parse(&input.base_url) {
        Err(_) => found.push(Error::validation("base_url", "must be a URL")),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
            found.push(Error::validation("base_url", "must be an http(s) URL such as https://api.openai.com/v1"))
        }
        Ok(_) => {}
    }
    if input.api_key.expose_secret().trim().is_empty() {
        found.push(Error::validation("api_key", "must not be empty"));
    }
    if let Some(models) = &mut input.models {
        models.retain(|m| !m.trim().is_empty());
        models.iter_mut().for_each(|m| *m = m.trim().to_string());
    }
    if let Some(map) = &input.model_map {
        if map.iter().any(|(from, to)| from.trim().is_empty() || to.trim().is_empty()) {
            found.push(Error::validation("model_map", "names must not be empty"));
        }
    }
    if !(-1000..=1000).contains(&input.priority) {
        found.push(Error::validation("priority", "must be between -1000 and 1000"));
    }
    if !(1..=1000).contains(&input.weight) {
        found.push(Error::validation("weight", "must be between 1 and 1000"));
    }
    found
}

fn models_json(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::Value::from(m.clone()).to_string())
}

fn model_map_json(map: &Option<BTreeMap<String, String>>) -> Option<String> {
    map.as_ref().and_then(|m| serde_json::to_string(m).ok())
}

pub async fn list(db: &Db, secrets: &SecretBox) -> Result<Vec<Upstream>> {
    let rows: Vec<UpstreamRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM upstreams ORDER BY priority DESC, id"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(|r| from_row(r, secrets)).collect())
}

pub async fn find(db: &Db, secrets: &SecretBox, id: i64) -> Result<Upstream> {
    let row: Option<UpstreamRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM upstreams WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| from_row(r, secrets)).ok_or(Error::NotFound("upstream"))
}

fn name_taken(e: sqlx::Error, name: &str) -> Error {
    if crate::foundation::db::is_unique_violation(&e) {
        Error::conflict("upstream_exists", format!("an upstream named {name} already exists"))
    } else {
        e.into()
    }
}

/// Stores a new upstream; the credential is sealed at rest.
pub async fn create(db: &Db, secrets: &SecretBox, mut input: UpstreamInput, now: DateTime<Utc>) -> Result<Upstream> {
    validate(&mut input)?;
    let row: UpstreamRow = sqlx::query_as(&format!(
        "INSERT INTO upstreams (name, base_url, api_key, models, priority, weight, enabled, healthy, \
           consecutive_failures, created_at, updated_at, model_map) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $8, $9) RETURNING {COLUMNS}"
    ))
    .bind(&input.name)
    .bind(&input.base_url)
    .bind(secrets.seal(input.api_key.expose_secret()))
    .bind(models_json(&input.models))
    .bind(input.priority)
    .bind(input.weight)
    .bind(i64::from(input.enabled))
    .bind(to_micros(now))
    .bind(model_map_json(&input.model_map))
    .fetch_one(db.pool())
    .await
    .map_err(|e| name_taken(e, &input.name))?;
    Ok(from_row(row, secrets))
}

/// Stores merged fields; re-enabling or editing resets the health record.
pub async fn update(
    db: &Db,
    secrets: &SecretBox,
    id: i64,
    mut input: UpstreamInput,
    now: DateTime<Utc>,
) -> Result<Upstream> {
    validate(&mut input)?;
    let row: Option<UpstreamRow> = sqlx::query_as(&format!(
        "UPDATE upstreams SET name = $1, base_url = $2, api_key = $3, models = $4, priority = $5, weight = $6, \
           enabled = $7, healthy = 1, consecutive_failures = 0, updated_at = $8, model_map = $10 \
         WHERE id = $9 RETURNING {COLUMNS}"
    ))
    .bind(&input.name)
    .bind(&input.base_url)
    .bind(secrets.seal(input.api_key.expose_secret()))
    .bind(models_json(&input.models))
    .bind(input.priority)
    .bind(input.weight)
    .bind(i64::from(input.enabled))
    .bind(to_micros(now))
    .bind(id)
    .bind(model_map_json(&input.model_map))
    .fetch_optional(db.pool())
    .await
    .map_err(|e| name_taken(e, &input.name))?;
    row.map(|r| from_row(r, secrets)).ok_or(Error::NotFound("upstream"))
}

pub async fn delete(db: &Db, id: i64) -> Result<()> {
    let r = sqlx::query("DELETE FROM upstreams WHERE id = $1").bind(id).execute(db.pool()).await?;
    if r.rows_affected() == 0 {
        return Err(Error::NotFound("upstream"));
    }
    Ok(())
}

/// Counts a failure; returns true when this one turned the upstream unhealthy.
pub async fn record_failure(db: &Db, id: i64, error: &str, now: DateTime<Utc>) -> Result<bool> {
    let error: String = error.chars().take(500).collect();
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE upstreams SET consecutive_failures = consecutive_failures + 1, last_error = $1, last_checked_at = $2, \
           healthy = CASE WHEN consecutive_failures + 1 >= $3 THEN 0 ELSE healthy END \
         WHERE id = $4 RETURNING consecutive_failures",
    )
    .bind(&error)
    .bind(to_micros(now))
    .bind(UNHEALTHY_AFTER_FAILURES)
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.is_some_and(|(failures,)| failures == UNHEALTHY_AFTER_FAILURES))
}

/// Clears the failure count (called only when the cached row shows failures, so a
/// healthy upstream costs no write per request).
pub async fn record_success(db: &Db, id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE upstreams SET consecutive_failures = 0, healthy = 1, last_checked_at = $1 WHERE id = $2")
        .bind(to_micros(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Probes every enabled, unhealthy upstream once (`GET {base}/models` with its key, within
/// `timeout`) and marks those that answer 2xx healthy again, dropping the cached catalog
/// when one recovered. The job scheduler calls this periodically (`runtime::jobs`);
/// returns how many recovered. Takes what it uses, not the application state.
pub async fn probe_unhealthy_once(
    db: &Db,
    secrets: &SecretBox,
    http: &reqwest::Client,
    catalog: &Catalog,
    timeout: std::time::Duration,
    clock: &SharedClock,
) -> Result<usize> {
    let unhealthy: Vec<Upstream> = list(db, secrets).await?.into_iter().filter(|u| u.enabled && !u.healthy).collect();
    let mut recovered = 0;
    for upstream in unhealthy {
        let response = http
            .get(upstream.url("/models"))
            .bearer_auth(upstream.api_key.expose_secret())
            .timeout(timeout.min(std::time::Duration::from_secs(30)))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                record_success(db, upstream.id, clock.now()).await?;
                tracing::info!(upstream = %upstream.name, "upstream recovered");
                recovered += 1;
            }
            Ok(r) => {
                record_failure(db, upstream.id, &format!("probe: HTTP {}", r.status()), clock.now()).await?;
            }
            Err(e) => {
                let text = crate::foundation::redact::scrub(
                    &crate::foundation::redact::transport_error(e),
                    &[upstream.api_key.expose_secret()],
                );
                record_failure(db, upstream.id, &format!("probe: {text}"), clock.now()).await?;
            }
        }
    }
    if recovered > 0 {
        catalog.invalidate();
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    fn stored(base_url: &str) -> Upstream {
        Upstream::for_tests(1, base_url, "sk-stored")
    }

    #[test]
    fn the_stored_key_stays_on_its_origin_only() {
        let current = stored("https://api.openai.com/v1");
        let kept = |url: &str| key_for_edit(&current, url, None).map(|k| k.expose_secret().to_string());
        assert_eq!(kept("https://api.openai.com/v2").unwrap(), "sk-stored", "another path is the same origin");
        assert_eq!(kept("https://API.openai.com:443/v1/").unwrap(), "sk-stored", "case and the default port");
        for elsewhere in [
            "https://evil.example/v1",
            "http://api.openai.com/v1",
            "https://api.openai.com:8443/v1",
            "https://api.openai.com.evil.example/v1",
            "https://user@evil.example/v1",
        ] {
            let refused = key_for_edit(&current, elsewhere, None).unwrap_err();
            assert!(
                matches!(&refused, Error::Validation { field, message } if field == "api_key" && message == KEY_AGAIN_FOR_NEW_ORIGIN),
                "{elsewhere}: {refused:?}"
            );
        }
        for refused_elsewhere in ["not a url", "ftp://evil.example/v1"] {
            assert_eq!(kept(refused_elsewhere).unwrap(), "sk-stored", "no http(s) URL: refused on its own field");
        }
        let typed = key_for_edit(&current, "https://evil.example/v1", Some(SecretString::from("sk-new".to_string())));
        assert_eq!(typed.unwrap().expose_secret(), "sk-new", "a typed key goes with the new address");
    }

    use super::*;

    #[test]
    fn every_broken_rule_is_reported_once_per_field_and_validate_gives_the_first() {
        let mut input = UpstreamInput {
            name: "  ".into(),
            base_url: "ftp://x".into(),
            api_key: SecretString::from(" "),
            models: None,
            model_map: None,
            priority: 5000,
            weight: 0,
            enabled: true,
        };
        let fields: Vec<String> = problems(&mut input.clone())
            .iter()
            .filter_map(|e| match e {
                Error::Validation { field, .. } => Some(field.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fields, ["name", "base_url", "api_key", "priority", "weight"]);
        assert!(matches!(validate(&mut input), Err(Error::Validation { field, .. }) if field == "name"));
        let mut good = UpstreamInput {
            name: " main ".into(),
            base_url: "https://api.example.com/v1/".into(),
            api_key: SecretString::from("sk-1"),
            priority: 0,
            weight: 1,
            ..input
        };
        assert!(problems(&mut good).is_empty());
        assert_eq!((good.name.as_str(), good.base_url.as_str()), ("main", "https://api.example.com/v1"));
    }
}
