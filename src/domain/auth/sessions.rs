//! Revocable login sessions, shared by the JSON API (bearer token) and the web pages
//! (HttpOnly cookie holding the same token).

use chrono::{DateTime, Duration, Utc};

use super::{hash_token, random_token};
use crate::domain::auth::users::{User, USER_COLUMNS};
use crate::foundation::clock::to_micros;
use crate::foundation::db::Db;
use crate::foundation::error::Result;

/// How long a login lasts without use.
pub const SESSION_LIFETIME_DAYS: i64 = 30;

/// Name of the web session cookie.
pub const SESSION_COOKIE: &str = "cg_session";

/// A fresh session: the token is returned to the client once and stored hashed.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: i64,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Where a login came from, kept for the user's session list and audits.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

pub async fn create(db: &Db, user_id: i64, client: &ClientInfo, now: DateTime<Utc>) -> Result<NewSession> {
    let token = format!("cgs_{}", random_token(43));
    let expires_at = now + Duration::days(SESSION_LIFETIME_DAYS);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at, last_seen_at, user_agent, ip) \
         VALUES ($1, $2, $3, $4, $3, $5, $6) RETURNING id",
    )
    .bind(user_id)
    .bind(hash_token(&token))
    .bind(to_micros(now))
    .bind(to_micros(expires_at))
    .bind(client.user_agent.as_deref().map(|s| truncate(s, 256)))
    .bind(client.ip.as_deref())
    .fetch_one(db.pool())
    .await?;
    Ok(NewSession { id, token, expires_at })
}

/// The live session for a token and its user (whatever the user's status: callers
/// refuse suspended users with a specific error).
pub async fn lookup(db: &Db, token: &str, now: DateTime<Utc>) -> Result<Option<(i64, User)>> {
    let columns = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
    let row = sqlx::query_as::<_, SessionUserRow>(&format!(
        "SELECT s.id AS session_id, {columns} FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2"
    ))
    .bind(hash_token(token))
    .bind(to_micros(now))
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| (r.session_id, r.user)))
}

#[derive(sqlx::FromRow)]
struct SessionUserRow {
    session_id: i64,
    #[sqlx(flatten)]
    user: User,
}

pub async fn revoke(db: &Db, session_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(to_micros(now))
        .bind(session_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends every session of a user (suspension, password change elsewhere).
pub async fn revoke_all_for_user(db: &Db, user_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(to_micros(now))
        .bind(user_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends a user's sessions except the one in use (after a password change).
pub async fn revoke_others(db: &Db, user_id: i64, keep: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL")
        .bind(to_micros(now))
        .bind(user_id)
        .bind(keep)
        .execute(db.pool())
        .await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
