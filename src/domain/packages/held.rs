//! The rows of `user_packages` a user holds, and the read side of the activation
//! contract (see [`super::activation`]): which row applies at an instant, listings, and
//! the hourly status job.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;

/// Values of `user_packages.status`.
pub mod status {
    pub const ACTIVE: &str = "active";
    pub const QUEUED: &str = "queued";
    pub const EXPIRED: &str = "expired";
    pub const ENDED: &str = "ended";
    pub const REFUNDED: &str = "refunded";
}

pub(crate) const COLUMNS: &str =
    "id, user_id, package_id, order_id, name, daily_limit, duration_days, paid_amount, source, \
                       status, starts_at, ends_at, created_at, updated_at";

/// A row of `user_packages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserPackage {
    pub id: i64,
    pub user_id: i64,
    pub package_id: i64,
    pub order_id: Option<i64>,
    pub name: String,
    /// `None` = no daily limit.
    pub daily_limit: Option<i64>,
    pub duration_days: i64,
    pub paid_amount: i64,
    pub source: String,
    pub status: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the API shows of a user's package.
#[derive(Debug, Clone, Serialize)]
pub struct UserPackageView {
    pub id: i64,
    pub package_id: i64,
    pub name: String,
    pub daily_limit: Option<Money>,
    pub duration_days: i64,
    pub paid_amount: Money,
    pub source: String,
    pub status: String,
    /// True for the row that applies now.
    pub current: bool,
    pub starts_at: String,
    pub ends_at: String,
}

impl UserPackage {
    /// Whether this row is the one that applies at `now` (see the module contract).
    pub fn applies_at(&self, now: DateTime<Utc>) -> bool {
        let t = to_micros(now);
        (self.status == status::ACTIVE || self.status == status::QUEUED) && self.starts_at <= t && self.ends_at > t
    }

    /// The API's view; `current` is computed at `now`.
    pub fn view(&self, calendar: &BusinessCalendar, now: DateTime<Utc>) -> UserPackageView {
        UserPackageView {
            id: self.id,
            package_id: self.package_id,
            name: self.name.clone(),
            daily_limit: self.daily_limit.map(Money::from_micros),
            duration_days: self.duration_days,
            paid_amount: Money::from_micros(self.paid_amount),
            source: self.source.clone(),
            status: self.status.clone(),
            current: self.applies_at(now),
            starts_at: calendar.format(from_micros(self.starts_at)),
            ends_at: calendar.format(from_micros(self.ends_at)),
        }
    }
}

/// The row that applies at `now`, read on the caller's transaction.
pub async fn current_on(conn: &mut AnyConnection, user_id: i64, now: DateTime<Utc>) -> Result<Option<UserPackage>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_packages WHERE user_id = $1 AND status IN ('active', 'queued') \
           AND starts_at <= $2 AND ends_at > $2 ORDER BY starts_at, id LIMIT 1"
    );
    Ok(sqlx::query_as::<_, UserPackage>(&sql).bind(user_id).bind(to_micros(now)).fetch_optional(conn).await?)
}

/// The package that applies to a user at `now` (for the billing engine and dashboards).
pub async fn current(db: &Db, user_id: i64, now: DateTime<Utc>) -> Result<Option<UserPackage>> {
    let mut conn = db.pool().acquire().await?;
    current_on(&mut conn, user_id, now).await
}

/// A user's packages, current and queued first, then the newest past ones.
pub async fn list_for_user(db: &Db, user_id: i64) -> Result<Vec<UserPackage>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_packages WHERE user_id = $1 \
         ORDER BY CASE WHEN status IN ('active', 'queued') THEN 0 ELSE 1 END, \
           CASE WHEN status IN ('active', 'queued') THEN starts_at ELSE -starts_at END, id"
    );
    Ok(sqlx::query_as::<_, UserPackage>(&sql).bind(user_id).fetch_all(db.pool()).await?)
}

/// One row by id, on the caller's connection or transaction.
pub async fn find_on(conn: &mut AnyConnection, id: i64) -> Result<Option<UserPackage>> {
    let sql = format!("SELECT {COLUMNS} FROM user_packages WHERE id = $1");
    Ok(sqlx::query_as::<_, UserPackage>(&sql).bind(id).fetch_optional(conn).await?)
}

/// The hourly job: active rows past their end become `expired`, queued rows whose start
/// has come become `active`. Returns how many rows changed. (Billing does not depend on
/// it: the contract reads `starts_at`/`ends_at` directly.)
pub async fn mark_expired(db: &Db, now: DateTime<Utc>) -> Result<u64> {
    let t = to_micros(now);
    let mut tx = db.begin().await?;
    let expired = sqlx::query(
        "UPDATE user_packages SET status = 'expired', updated_at = $1 WHERE status IN ('active', 'queued') AND ends_at <= $1",
    )
    .bind(t)
    .execute(tx.conn())
    .await?
    .rows_affected();
    let started = sqlx::query(
        "UPDATE user_packages SET status = 'active', updated_at = $1 WHERE status = 'queued' AND starts_at <= $1 AND ends_at > $1",
    )
    .bind(t)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(expired + started)
}

/// How many users hold each package right now (active or queued rows), for the admin list.
pub async fn holders_by_package(db: &Db, now: DateTime<Utc>) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT package_id, COUNT(DISTINCT user_id) FROM user_packages \
         WHERE status IN ('active', 'queued') AND ends_at > $1 GROUP BY package_id",
    )
    .bind(to_micros(now))
    .fetch_all(db.pool())
    .await?)
}
