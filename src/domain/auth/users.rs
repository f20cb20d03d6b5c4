//! Accounts: creation, lookup, listing and the admin changes to them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use super::{password, Role, Status};
use crate::foundation::clock::{to_micros, BusinessCalendar};
use crate::foundation::db::{is_unique_violation, Db};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// A row of `users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub password_hash: Option<String>,
    pub display_name: Option<String>,
    pub role: String,
    pub status: String,
    pub balance: i64,
    pub held: i64,
    pub daily_cap: Option<i64>,
    /// The user's own cap on spending per 5-hour block (issue 19), micro-units.
    pub five_hour_cap: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Columns of `users` in struct order, for `SELECT {USER_COLUMNS} FROM users`.
pub const USER_COLUMNS: &str =
    "id, email, password_hash, display_name, role, status, balance, held, daily_cap, five_hour_cap, created_at, updated_at";

impl User {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::User)
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }

    pub fn is_active(&self) -> bool {
        Status::parse(&self.status) == Some(Status::Active)
    }

    pub fn balance(&self) -> Money {
        Money::from_micros(self.balance)
    }

    /// The public JSON view (never the password hash).
    pub fn view(&self, calendar: &BusinessCalendar) -> UserView {
        UserView {
            id: self.id,
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            role: self.role.clone(),
            status: self.status.clone(),
            balance: self.balance(),
            daily_cap: self.daily_cap.map(Money::from_micros),
            five_hour_cap: self.five_hour_cap.map(Money::from_micros),
            created_at: calendar.format(crate::foundation::clock::from_micros(self.created_at)),
        }
    }
}

/// What the API shows of a user.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub display_name: Option<String>,
    pub role: String,
    pub status: String,
    pub balance: Money,
    pub daily_cap: Option<Money>,
    /// The most the user may spend in one 5-hour block (`null` = no cap).
    pub five_hour_cap: Option<Money>,
    pub created_at: String,
}

/// Normalises and checks an email address (lowercase, one `@`, a dot in the domain).
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(Error::validation("email", "is not a valid email address"))
    }
}

/// Creates an account with a checked email and password.
pub async fn create(db: &Db, email: &str, plain_password: &str, role: Role, now: DateTime<Utc>) -> Result<User> {
    let email = normalize_email(email)?;
    password::validate("password", plain_password)?;
    let hash = password::hash(plain_password).await?;
    let micros = to_micros(now);
    let inserted = sqlx::query_as::<_, User>(&format!(
        "INSERT INTO users (email, password_hash, role, status, balance, held, created_at, updated_at) \
         VALUES ($1, $2, $3, 'active', 0, 0, $4, $4) RETURNING {USER_COLUMNS}"
    ))
    .bind(&email)
    .bind(&hash)
    .bind(role.as_str())
    .bind(micros)
    .fetch_one(db.pool())
    .await;
    match inserted {
        Ok(user) => Ok(user),
        Err(e) if is_unique_violation(&e) => {
            Err(Error::conflict("email_taken", format!("{email} is already registered")))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn find_by_id(db: &Db, id: i64) -> Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?)
}

/// Like [`find_by_id`] inside a transaction.
pub async fn find_by_id_in(conn: &mut AnyConnection, id: i64) -> Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>> {
    let email = email.trim().to_lowercase();
    Ok(sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(db.pool())
        .await?)
}

/// Whether any admin exists (first-run setup is offered until one does).
pub async fn admin_exists(db: &Db) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin' LIMIT 1").fetch_optional(db.pool()).await?;
    Ok(found.is_some())
}

/// Search filters for the admin user list.
#[derive(Debug, Default, Clone)]
pub struct UserFilter {
    pub query: Option<String>,
    pub role: Option<Role>,
    pub status: Option<Status>,
}

/// One page of users, newest first, plus the total matching.
pub async fn list(db: &Db, filter: &UserFilter, limit: i64, offset: i64) -> Result<(Vec<User>, i64)> {
    let pattern = filter.query.as_ref().map(|q| format!("%{}%", q.trim().to_lowercase()));
    let where_clause =
        "WHERE ($1 IS NULL OR email LIKE $1) AND ($2 IS NULL OR role = $2) AND ($3 IS NULL OR status = $3)";
    let role = filter.role.map(Role::as_str);
    let status = filter.status.map(Status::as_str);
    let rows = sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users {where_clause} ORDER BY id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(pattern.clone())
    .bind(role)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM users {where_clause}"))
        .bind(pattern)
        .bind(role)
        .bind(status)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

/// Admin changes to an account; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub status: Option<Status>,
    pub role: Option<Role>,
    /// `Some(None)` clears the cap.
    pub daily_cap: Option<Option<Money>>,
    /// The 5-hour cap; `Some(None)` clears it.
    pub five_hour_cap: Option<Option<Money>>,
}

/// Applies an admin patch and returns the updated user.
pub async fn update(db: &Db, id: i64, patch: &UserPatch, now: DateTime<Utc>) -> Result<User> {
    for (field, cap) in [("daily_cap", patch.daily_cap), ("five_hour_cap", patch.five_hour_cap)] {
        if cap.flatten().is_some_and(Money::is_negative) {
            return Err(Error::validation(field, "must not be negative"));
        }
    }
    let user = sqlx::query_as::<_, User>(&format!(
        "UPDATE users SET \
           status = CASE WHEN $1 IS NULL THEN status ELSE $1 END, \
           role = CASE WHEN $2 IS NULL THEN role ELSE $2 END, \
           daily_cap = CASE WHEN $3 = 1 THEN $4 ELSE daily_cap END, \
           five_hour_cap = CASE WHEN $5 = 1 THEN $6 ELSE five_hour_cap END, \
           updated_at = $7 \
         WHERE id = $8 RETURNING {USER_COLUMNS}"
    ))
    .bind(patch.status.map(Status::as_str))
    .bind(patch.role.map(Role::as_str))
    .bind(i64::from(patch.daily_cap.is_some()))
    .bind(patch.daily_cap.flatten().map(Money::micros))
    .bind(i64::from(patch.five_hour_cap.is_some()))
    .bind(patch.five_hour_cap.flatten().map(Money::micros))
    .bind(to_micros(now))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    let user = user.ok_or(Error::NotFound("user"))?;
    if patch.status == Some(Status::Suspended) {
        super::sessions::revoke_all_for_user(db, id, now).await?;
    }
    Ok(user)
}

/// Replaces a user's password hash (after the caller has checked the old one).
pub async fn set_password(db: &Db, id: i64, plain_password: &str, now: DateTime<Utc>) -> Result<()> {
    password::validate("new_password", plain_password)?;
    let hash = password::hash(plain_password).await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(to_micros(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A user changes their own password: the old one must match; their other sessions end.
pub async fn change_own_password(db: &Db, user: &User, change: &PasswordChange<'_>, now: DateTime<Utc>) -> Result<()> {
    let matches = match user.password_hash.as_deref() {
        Some(hash) => password::verify(change.old_password, hash).await,
        None => false,
    };
    if !matches {
        return Err(Error::validation("old_password", "is not the current password"));
    }
    set_password(db, user.id, change.new_password, now).await?;
    super::sessions::revoke_others(db, user.id, change.keep_session_id, now).await
}

/// The inputs of [`change_own_password`].
#[derive(Debug, Clone)]
pub struct PasswordChange<'a> {
    pub old_password: &'a str,
    pub new_password: &'a str,
    /// The session in use, which stays signed in.
    pub keep_session_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(normalize_email("  Alice@Example.COM ").unwrap(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "a@b", "a@@b.com", "a b@c.com", "a@.com"] {
            assert!(normalize_email(bad).is_err(), "{bad} should be rejected");
        }
    }
}
