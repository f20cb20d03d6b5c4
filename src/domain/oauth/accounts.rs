//! Which account a provider profile signs into: an existing linked identity, the
//! signed-in user who is linking, or a new account — under the site's settings.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::provider::Profile;
use super::PROVIDER;
use crate::domain::auth::users::{self, User, USER_COLUMNS};
use crate::domain::settings::OAuthSettings;
use crate::foundation::clock::to_micros;
use crate::foundation::db::{is_unique_violation, Db};
use crate::foundation::error::{Error, Result};

/// What happened to the profile.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Linked to the account that was already signed in.
    Linked(User),
    /// Signed into the account the identity was linked to before.
    SignedIn(User),
    /// A new account was created for the identity.
    Registered(User),
}

impl Outcome {
    pub fn user(&self) -> &User {
        match self {
            Outcome::Linked(u) | Outcome::SignedIn(u) | Outcome::Registered(u) => u,
        }
    }
}

/// The placeholder address of an account whose provider shares no email.
pub fn noreply_email(subject: &str) -> String {
    format!("linuxdo-{subject}@users.noreply.linux.do")
}

/// Resolves a profile to an account: links it to `signed_in` if given, else signs in
/// through an existing identity, else registers (if the settings allow it).
pub async fn sign_in(
    db: &Db,
    settings: &OAuthSettings,
    profile: &Profile,
    signed_in: Option<&User>,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    if !profile.active {
        return Err(Error::forbidden("provider_account_inactive", "this LINUX DO account is not active"));
    }
    let linked_user_id: Option<i64> =
        sqlx::query_scalar("SELECT user_id FROM oauth_identities WHERE provider = $1 AND subject = $2")
            .bind(PROVIDER)
            .bind(&profile.subject)
            .fetch_optional(db.pool())
            .await?;
    if let Some(current) = signed_in {
        if linked_user_id.is_some_and(|id| id != current.id) {
            return Err(Error::conflict(
                "oauth_identity_taken",
                "this LINUX DO account is already linked to another account",
            ));
        }
        save_identity(db, current.id, profile, now).await?;
        return Ok(Outcome::Linked(current.clone()));
    }
    let too_low = || {
        Error::forbidden(
            "trust_level_too_low",
            format!("this site needs LINUX DO trust level {} or higher", settings.min_trust_level),
        )
    };
    if let Some(user_id) = linked_user_id {
        let user = users::find_by_id(db, user_id).await?.ok_or(Error::NotFound("user"))?;
        if !user.is_active() {
            return Err(Error::forbidden("account_suspended", "this account is suspended"));
        }
        if !user.is_admin() && profile.trust_level < settings.min_trust_level {
            return Err(too_low());
        }
        save_identity(db, user.id, profile, now).await?;
        return Ok(Outcome::SignedIn(user));
    }
    if profile.trust_level < settings.min_trust_level {
        return Err(too_low());
    }
    if !settings.allow_oauth_registration {
        return Err(Error::forbidden("registration_closed", "new accounts cannot be created with LINUX DO here"));
    }
    register(db, profile, now).await.map(Outcome::Registered)
}

/// Inserts or refreshes the identity row (username and trust level change over time).
async fn save_identity(db: &Db, user_id: i64, profile: &Profile, now: DateTime<Utc>) -> Result<()> {
    let mut conn = db.pool().acquire().await?;
    upsert_identity(&mut conn, user_id, profile, now).await
}

async fn upsert_identity(conn: &mut AnyConnection, user_id: i64, profile: &Profile, now: DateTime<Utc>) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO oauth_identities (user_id, provider, subject, username, trust_level, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (provider, subject) DO UPDATE SET username = excluded.username, trust_level = excluded.trust_level \
         WHERE oauth_identities.user_id = excluded.user_id",
    )
    .bind(user_id)
    .bind(PROVIDER)
    .bind(&profile.subject)
    .bind(profile.username.as_deref())
    .bind(profile.trust_level)
    .bind(to_micros(now))
    .execute(conn)
    .await?;
    if result.rows_affected() == 0 {
        // Another account took the identity between our read and this write.
        return Err(Error::conflict(
            "oauth_identity_taken",
            "this LINUX DO account is already linked to another account",
        ));
    }
    Ok(())
}

/// Creates a password-less account and its identity in one transaction.
async fn register(db: &Db, profile: &Profile, now: DateTime<Utc>) -> Result<User> {
    let email = profile
        .email
        .as_deref()
        .and_then(|e| users::normalize_email(e).ok())
        .unwrap_or_else(|| noreply_email(&profile.subject));
    if users::find_by_email(db, &email).await?.is_some() {
        return Err(Error::conflict(
            "email_taken",
            format!(
                "{email} already has an account: sign in with its password, then link LINUX DO from the account page"
            ),
        ));
    }
    let micros = to_micros(now);
    let mut tx = db.begin().await?;
    let inserted = sqlx::query_as::<_, User>(&format!(
        "INSERT INTO users (email, password_hash, display_name, role, status, balance, held, created_at, updated_at) \
         VALUES ($1, NULL, $2, 'user', 'active', 0, 0, $3, $3) RETURNING {USER_COLUMNS}"
    ))
    .bind(&email)
    .bind(profile.username.as_deref())
    .bind(micros)
    .fetch_one(tx.conn())
    .await;
    let user = match inserted {
        Ok(user) => user,
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::conflict("email_taken", format!("{email} is already registered")));
        }
        Err(e) => return Err(e.into()),
    };
    match upsert_identity(tx.conn(), user.id, profile, now).await {
        Ok(()) => {}
        Err(Error::Database(e)) if is_unique_violation(&e) => {
            return Err(Error::conflict("oauth_identity_taken", "this LINUX DO account was just linked; try again"));
        }
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(user)
}
