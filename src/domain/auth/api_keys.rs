//! User API keys (`sk-...`) that authenticate the OpenAI-compatible `/v1` routes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use super::{hash_token, random_token};
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// A row of `api_keys` (never holds the secret itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub spend_limit: Option<i64>,
    pub spent: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    /// The key's own daily USD cap (business day) and most concurrent requests.
    pub daily_cap: Option<i64>,
    pub max_concurrency: Option<i64>,
}

const KEY_COLUMNS: &str =
    "id, user_id, name, prefix, status, spend_limit, spent, expires_at, last_used_at, created_at, daily_cap, max_concurrency";

/// What the API shows of a key.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub spend_limit: Option<Money>,
    pub spent: Money,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
    pub daily_cap: Option<Money>,
    pub max_concurrency: Option<i64>,
}

impl ApiKey {
    pub fn view(&self, calendar: &BusinessCalendar) -> ApiKeyView {
        ApiKeyView {
            id: self.id,
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            status: self.status.clone(),
            spend_limit: self.spend_limit.map(Money::from_micros),
            spent: Money::from_micros(self.spent),
            expires_at: self.expires_at.map(|t| calendar.format(from_micros(t))),
            last_used_at: self.last_used_at.map(|t| calendar.format(from_micros(t))),
            created_at: calendar.format(from_micros(self.created_at)),
            daily_cap: self.daily_cap.map(Money::from_micros),
            max_concurrency: self.max_concurrency,
        }
    }
}

/// Options for a new key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub spend_limit: Option<Money>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Checks a key name (shown in lists, so short and non-empty).
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(Error::validation("name", "must be 1 to 64 characters"));
    }
    Ok(name.to_string())
}

/// Creates a key if the user holds fewer than `max_keys` active ones; returns the
/// row and the secret, which is never retrievable again.
pub async fn create(
    db: &Db,
    user_id: i64,
    new: &NewKey,
    max_keys: i64,
    now: DateTime<Utc>,
) -> Result<(ApiKey, String)> {
    let name = validate_name(&new.name)?;
    if let Some(limit) = new.spend_limit {
        if limit.is_negative() {
            return Err(Error::validation("spend_limit", "must not be negative"));
        }
    }
    if new.expires_at.is_some_and(|t| t <= now) {
        return Err(Error::validation("expires_at", "must be in the future"));
    }
    let secret = format!("sk-{}", random_token(48));
    let prefix = format!("{}…{}", &secret[..7], &secret[secret.len() - 4..]);
    // The count check and the insert are one statement, so parallel creates cannot
    // slip past the limit by more than the database's isolation allows.
    let row = sqlx::query_as::<_, ApiKey>(&format!(
        "INSERT INTO api_keys (user_id, name, key_hash, prefix, status, spend_limit, spent, expires_at, created_at) \
         SELECT $1, $2, $3, $4, 'active', $5, 0, $6, $7 \
         WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND status = 'active') < $8 \
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(user_id)
    .bind(&name)
    .bind(hash_token(&secret))
    .bind(&prefix)
    .bind(new.spend_limit.map(Money::micros))
    .bind(new.expires_at.map(to_micros))
    .bind(to_micros(now))
    .bind(max_keys)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(key) => Ok((key, secret)),
        None => Err(Error::conflict(
            "key_limit_reached",
            format!("you already have {max_keys} active keys; revoke one first"),
        )),
    }
}

/// The user's keys, newest first (revoked ones included, marked).
pub async fn list_for_user(db: &Db, user_id: i64) -> Result<Vec<ApiKey>> {
    Ok(sqlx::query_as::<_, ApiKey>(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY id DESC"))
        .bind(user_id)
        .fetch_all(db.pool())
        .await?)
}

/// Changes to a key; `None` leaves a field unchanged, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub spend_limit: Option<Option<Money>>,
    pub daily_cap: Option<Option<Money>>,
    pub max_concurrency: Option<Option<i64>>,
}

/// Applies a patch to a key of the user's inside the caller's transaction, so a change
/// that must move with other rows (a daily cap and its day window, `billing::caps`)
/// commits with them.
pub async fn update_on(conn: &mut AnyConnection, user_id: i64, key_id: i64, patch: &KeyPatch) -> Result<ApiKey> {
    let name = patch.name.as_deref().map(validate_name).transpose()?;
    if let Some(Some(limit)) = patch.spend_limit {
        if limit.is_negative() {
            return Err(Error::validation("spend_limit", "must not be negative"));
        }
    }
    if patch.daily_cap.flatten().is_some_and(|cap| cap.is_negative()) {
        return Err(Error::validation("daily_cap", "must not be negative (null = no cap)"));
    }
    if patch.max_concurrency.flatten().is_some_and(|n| !(1..=10_000).contains(&n)) {
        return Err(Error::validation("max_concurrency", "must be between 1 and 10000 (null = no limit)"));
    }
    sqlx::query_as::<_, ApiKey>(&format!(
        "UPDATE api_keys SET name = CASE WHEN $1 IS NULL THEN name ELSE $1 END, \
           spend_limit = CASE WHEN $2 = 1 THEN $3 ELSE spend_limit END, \
           daily_cap = CASE WHEN $6 = 1 THEN $7 ELSE daily_cap END, \
           max_concurrency = CASE WHEN $8 = 1 THEN $9 ELSE max_concurrency END \
         WHERE id = $4 AND user_id = $5 RETURNING {KEY_COLUMNS}"
    ))
    .bind(name)
    .bind(i64::from(patch.spend_limit.is_some()))
    .bind(patch.spend_limit.flatten().map(Money::micros))
    .bind(key_id)
    .bind(user_id)
    .bind(i64::from(patch.daily_cap.is_some()))
    .bind(patch.daily_cap.flatten().map(Money::micros))
    .bind(i64::from(patch.max_concurrency.is_some()))
    .bind(patch.max_concurrency.flatten())
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("api key"))
}

/// Revokes a key of the user's (404 for someone else's, so ids leak nothing).
pub async fn revoke(db: &Db, user_id: i64, key_id: i64, now: DateTime<Utc>) -> Result<()> {
    let result = sqlx::query(
        "UPDATE api_keys SET status = 'revoked', revoked_at = CASE WHEN revoked_at IS NULL THEN $1 ELSE revoked_at END \
         WHERE id = $2 AND user_id = $3",
    )
    .bind(to_micros(now))
    .bind(key_id)
    .bind(user_id)
    .execute(db.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(Error::NotFound("api key"));
    }
    Ok(())
}

/// The caller behind a `/v1` request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyOwner {
    pub key_id: i64,
    pub user_id: i64,
    pub key_status: String,
    pub spend_limit: Option<i64>,
    pub spent: i64,
    pub expires_at: Option<i64>,
    pub user_status: String,
    pub role: String,
}

/// Why a key was refused (each becomes a distinct OpenAI-shaped error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Revoked,
    Expired,
    UserSuspended,
    SpendLimitReached,
}

impl KeyRefusal {
    /// Stable code clients can match on.
    pub fn code(self) -> &'static str {
        match self {
            KeyRefusal::Unknown => "invalid_api_key",
            KeyRefusal::Revoked => "api_key_revoked",
            KeyRefusal::Expired => "api_key_expired",
            KeyRefusal::UserSuspended => "account_suspended",
            KeyRefusal::SpendLimitReached => "key_spend_limit_reached",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::Unknown => "Incorrect API key provided",
            KeyRefusal::Revoked => "This API key has been revoked",
            KeyRefusal::Expired => "This API key has expired",
            KeyRefusal::UserSuspended => "This account is suspended",
            KeyRefusal::SpendLimitReached => "This API key has reached its spending limit",
        }
    }
}

/// Keys that authenticated recently, by hash, so the proxy's hot path skips the
/// lookup query. Safe to be stale: billing admission re-reads the key and the user
/// under the user's row lock and refuses a revoked, expired or over-limit key or a
/// suspended user, and every such change drops the user's headroom hint on every
/// instance (`billing::user_changed`), so that admission happens before the next
/// request is forwarded; an entry only decides who the caller is, which never changes
/// for a key. Unknown keys are never cached.
#[derive(Clone, Default)]
pub struct KeyCache {
    entries: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, (KeyOwner, std::time::Instant)>>>,
}

/// How long an entry is trusted for the checks made before admission.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Entries kept at most; the map is emptied when full (cheap, and rare).
const KEY_CACHE_MAX: usize = 100_000;

impl KeyCache {
    fn get(&self, hash: &str) -> Option<KeyOwner> {
        let entries = self.entries.read().ok()?;
        let (owner, at) = entries.get(hash)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| owner.clone())
    }

    fn put(&self, hash: String, owner: KeyOwner) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
            entries.insert(hash, (owner, std::time::Instant::now()));
        }
    }
}

/// [`authenticate`] through the cache (the proxy's hot path).
pub async fn authenticate_cached(
    db: &Db,
    cache: &KeyCache,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Result<KeyOwner, KeyRefusal>> {
    if !presented.starts_with("sk-") {
        return Ok(Err(KeyRefusal::Unknown));
    }
    let hash = hash_token(presented);
    if let Some(owner) = cache.get(&hash) {
        return Ok(check_owner(Some(owner), now));
    }
    let owner = lookup(db, &hash).await?;
    if let Some(owner) = &owner {
        cache.put(hash, owner.clone());
    }
    Ok(check_owner(owner, now))
}

/// Looks a presented key up by its hash and checks it may be used now.
pub async fn authenticate(db: &Db, presented: &str, now: DateTime<Utc>) -> Result<Result<KeyOwner, KeyRefusal>> {
    if !presented.starts_with("sk-") {
        return Ok(Err(KeyRefusal::Unknown));
    }
    let owner = lookup(db, &hash_token(presented)).await?;
    Ok(check_owner(owner, now))
}

async fn lookup(db: &Db, hash: &str) -> Result<Option<KeyOwner>> {
    db.available()?;
    Ok(sqlx::query_as::<_, KeyOwner>(
        "SELECT k.id AS key_id, k.user_id, k.status AS key_status, k.spend_limit, k.spent, k.expires_at, \
           u.status AS user_status, u.role FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
    )
    .bind(hash)
    .fetch_optional(db.pool())
    .await?)
}

/// The rules applied to a looked-up key, separate so they can be unit-tested.
pub fn check_owner(owner: Option<KeyOwner>, now: DateTime<Utc>) -> Result<KeyOwner, KeyRefusal> {
    let owner = owner.ok_or(KeyRefusal::Unknown)?;
    if owner.key_status != "active" {
        return Err(KeyRefusal::Revoked);
    }
    if owner.user_status != "active" {
        return Err(KeyRefusal::UserSuspended);
    }
    if owner.expires_at.is_some_and(|t| t <= to_micros(now)) {
        return Err(KeyRefusal::Expired);
    }
    if owner.spend_limit.is_some_and(|limit| owner.spent >= limit) {
        return Err(KeyRefusal::SpendLimitReached);
    }
    Ok(owner)
}

/// Marks a key as used (best effort, off the hot path's critical section).
pub async fn touch(db: &Db, key_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(to_micros(now))
        .bind(key_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> KeyOwner {
        KeyOwner {
            key_id: 1,
            user_id: 1,
            key_status: "active".into(),
            spend_limit: None,
            spent: 0,
            expires_at: None,
            user_status: "active".into(),
            role: "user".into(),
        }
    }

    #[test]
    fn key_rules_refuse_each_bad_state() {
        let now = Utc::now();
        assert!(check_owner(Some(owner()), now).is_ok());
        assert_eq!(check_owner(None, now).unwrap_err(), KeyRefusal::Unknown);
        assert_eq!(
            check_owner(Some(KeyOwner { key_status: "revoked".into(), ..owner() }), now).unwrap_err(),
            KeyRefusal::Revoked
        );
        assert_eq!(
            check_owner(Some(KeyOwner { user_status: "suspended".into(), ..owner() }), now).unwrap_err(),
            KeyRefusal::UserSuspended
        );
        assert_eq!(
            check_owner(Some(KeyOwner { expires_at: Some(to_micros(now)), ..owner() }), now).unwrap_err(),
            KeyRefusal::Expired
        );
        assert_eq!(
            check_owner(Some(KeyOwner { spend_limit: Some(5), spent: 5, ..owner() }), now).unwrap_err(),
            KeyRefusal::SpendLimitReached
        );
    }
}
