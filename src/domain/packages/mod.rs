//! Packages (套餐): the catalog admins sell, and the packages users hold.
//!
//! - this file: the catalog (CRUD, validation, stock);
//! - [`held`]: the packages users hold, which one applies now, the hourly expiry job;
//! - [`activation`]: what buying or being granted a package does to a user's packages;
//!
//! Buying one (from the balance, or through a gateway order) and admin grants are
//! [`crate::domain::orders::purchase`]: they make orders, and orders sit on top of packages.

pub mod activation;
pub mod held;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// `enabled` is a 0/1 integer: the `Any` driver cannot decode SQLite booleans.
const COLUMNS: &str = "id, name, description, price, duration_days, daily_limit, sort_order, \
                       enabled, stock, \
                       per_user_limit, sold, created_at, updated_at, \
                       five_hour_limit, weekly_limit, monthly_limit, total_limit, models";

/// A row of `packages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Package {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Price in the payment currency (micro-units, whole cents).
    pub price: i64,
    pub duration_days: i64,
    /// USD of API usage per business day (micro-units; `None` = no daily limit).
    pub daily_limit: Option<i64>,
    pub sort_order: i64,
    /// 1 = on sale (see [`Package::is_enabled`]).
    pub enabled: i64,
    /// How many can still be sold; `None` = unlimited.
    pub stock: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub sold: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// USD per 5-hour block, week, month and the whole term (micro-units; `None` = no limit).
    pub five_hour_limit: Option<i64>,
    pub weekly_limit: Option<i64>,
    pub monthly_limit: Option<i64>,
    pub total_limit: Option<i64>,
    /// Models the package pays for, comma-separated; `None` = all.
    pub models: Option<String>,
}

/// The admin view of a package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub duration_days: i64,
    /// `null`: the plan has no daily window.
    pub daily_limit: Option<Money>,
    pub sort_order: i64,
    pub enabled: bool,
    pub stock: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub sold: i64,
    pub sold_out: bool,
    pub created_at: String,
    pub updated_at: String,
    pub five_hour_limit: Option<Money>,
    pub weekly_limit: Option<Money>,
    pub monthly_limit: Option<Money>,
    pub total_limit: Option<Money>,
    pub models: Option<Vec<String>>,
}

impl Package {
    /// Whether users can buy it (holders keep a disabled package).
    pub fn is_enabled(&self) -> bool {
        self.enabled != 0
    }

    /// Price in the payment currency.
    pub fn price(&self) -> Money {
        Money::from_micros(self.price)
    }

    /// The admin API's view, times in the business zone.
    pub fn view(&self, calendar: &BusinessCalendar) -> PackageView {
        PackageView {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            price: self.price(),
            duration_days: self.duration_days,
            daily_limit: self.daily_limit.map(Money::from_micros),
            sort_order: self.sort_order,
            enabled: self.is_enabled(),
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            sold: self.sold,
            sold_out: self.stock == Some(0),
            created_at: calendar.format(from_micros(self.created_at)),
            updated_at: calendar.format(from_micros(self.updated_at)),
            five_hour_limit: self.five_hour_limit.map(Money::from_micros),
            weekly_limit: self.weekly_limit.map(Money::from_micros),
            monthly_limit: self.monthly_limit.map(Money::from_micros),
            total_limit: self.total_limit.map(Money::from_micros),
            models: crate::domain::billing::allowance::parse_models(self.models.as_deref()),
        }
    }
}

/// Fields of a package as an admin writes them (create: all required but `enabled`, `stock`
/// and the limits, of which at least one window must have one).
#[derive(Debug, Clone)]
pub struct PackageInput {
    pub name: String,
    pub description: String,
    pub price: Money,
    pub duration_days: i64,
    /// `None` = no daily limit.
    pub daily_limit: Option<Money>,
    pub sort_order: i64,
    pub enabled: bool,
    pub stock: Option<i64>,
    pub per_user_limit: Option<i64>,
    /// The other windows' limits (`None` = no limit) and the models paid for (`None` = all).
    pub five_hour_limit: Option<Money>,
    pub weekly_limit: Option<Money>,
    pub monthly_limit: Option<Money>,
    pub total_limit: Option<Money>,
    pub models: Option<Vec<String>>,
}

impl PackageInput {
    /// The models list as stored (`None` = all).
    fn stored_models(&self) -> Option<String> {
        let joined =
            self.models.as_ref()?.iter().map(|m| m.trim()).filter(|m| !m.is_empty()).collect::<Vec<_>>().join(",");
        (!joined.is_empty()).then_some(joined)
    }
}

/// Checks the catalog rules, naming the field that breaks one.
pub fn validate(input: &PackageInput) -> Result<()> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::validation("name", "must be 1 to 100 characters"));
    }
    if input.description.chars().count() > 2000 {
        return Err(Error::validation("description", "must be at most 2000 characters"));
    }
    if !input.price.is_positive() {
        return Err(Error::validation("price", "must be greater than 0"));
    }
    if !input.price.is_whole_cents() {
        return Err(Error::validation("price", "must have at most two decimals (it is a payment amount)"));
    }
    if input.price > Money::units(1_000_000) {
        return Err(Error::validation("price", "must be at most 1000000.00"));
    }
    if !(1..=3650).contains(&input.duration_days) {
        return Err(Error::validation("duration_days", "must be between 1 and 3650"));
    }
    let limits = [
        ("daily_limit", input.daily_limit),
        ("five_hour_limit", input.five_hour_limit),
        ("weekly_limit", input.weekly_limit),
        ("monthly_limit", input.monthly_limit),
        ("total_limit", input.total_limit),
    ];
    for (field, limit) in limits {
        if limit.is_some_and(|l| l.is_negative()) {
            return Err(Error::validation(field, "must not be negative (null = no limit)"));
        }
    }
    if limits.iter().all(|(_, limit)| limit.is_none()) {
        // A package without any window would pay for every request without end.
        return Err(Error::validation("daily_limit", "a package needs a limit in at least one window"));
    }
    if let Some(models) = &input.models {
        if models.len() > 100 || models.iter().any(|m| m.chars().count() > 200 || m.contains(',')) {
            return Err(Error::validation("models", "must be at most 100 model names without commas"));
        }
    }
    if input.stock.is_some_and(|s| s < 0) {
        return Err(Error::validation("stock", "must not be negative (null = unlimited)"));
    }
    if input.per_user_limit.is_some_and(|l| l < 1) {
        return Err(Error::validation("per_user_limit", "must be at least 1 (null = no limit)"));
    }
    Ok(())
}

async fn ensure_unique_name(db: &Db, input: &PackageInput, except_id: Option<i64>) -> Result<()> {
    if !input.enabled {
        return Ok(());
    }
    let clash: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM packages WHERE enabled = 1 AND LOWER(name) = LOWER($1) AND ($2 IS NULL OR id <> $2)",
    )
    .bind(input.name.trim())
    .bind(except_id)
    .fetch_one(db.pool())
    .await?;
    if clash > 0 {
        return Err(Error::validation("name", "an enabled package already has this name"));
    }
    Ok(())
}

/// Adds a package to the catalog.
pub async fn create(db: &Db, input: &PackageInput, now: DateTime<Utc>) -> Result<Package> {
    validate(input)?;
    ensure_unique_name(db, input, None).await?;
    let sql = format!(
        "INSERT INTO packages (name, description, price, duration_days, daily_limit, sort_order, enabled, stock, \
           per_user_limit, sold, created_at, updated_at, five_hour_limit, weekly_limit, monthly_limit, total_limit, \
           models) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10, $11, $12, $13, $14, $15) RETURNING {COLUMNS}"
    );
    let package = bind_input(sqlx::query_as::<_, Package>(&sql), input, now).fetch_one(db.pool()).await?;
    Ok(package)
}

/// Binds a package's fields as `$1`..`$15` (the timestamp tenth), in the order both
/// [`create`] and [`update`] name them.
fn bind_input<'q>(
    query: sqlx::query::QueryAs<'q, sqlx::Any, Package, sqlx::any::AnyArguments<'q>>,
    input: &'q PackageInput,
    now: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, Package, sqlx::any::AnyArguments<'q>> {
    query
        .bind(input.name.trim())
        .bind(&input.description)
        .bind(input.price.micros())
        .bind(input.duration_days)
        .bind(input.daily_limit.map(Money::micros))
        .bind(input.sort_order)
        .bind(i64::from(input.enabled))
        .bind(input.stock)
        .bind(input.per_user_limit)
        .bind(to_micros(now))
        .bind(input.five_hour_limit.map(Money::micros))
        .bind(input.weekly_limit.map(Money::micros))
        .bind(input.monthly_limit.map(Money::micros))
        .bind(input.total_limit.map(Money::micros))
        .bind(input.stored_models())
}

/// Replaces a package's fields (the API merges a partial update into the current row first).
pub async fn update(db: &Db, id: i64, input: &PackageInput, now: DateTime<Utc>) -> Result<Package> {
    validate(input)?;
    ensure_unique_name(db, input, Some(id)).await?;
    let sql = format!(
        "UPDATE packages SET name = $1, description = $2, price = $3, duration_days = $4, daily_limit = $5, \
           sort_order = $6, enabled = $7, stock = $8, per_user_limit = $9, updated_at = $10, \
           five_hour_limit = $11, weekly_limit = $12, monthly_limit = $13, total_limit = $14, models = $15 \
         WHERE id = $16 RETURNING {COLUMNS}"
    );
    bind_input(sqlx::query_as::<_, Package>(&sql), input, now)
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(Error::NotFound("package"))
}

/// "Deleting" only disables: users who hold the package keep it until it ends.
pub async fn disable(db: &Db, id: i64, now: DateTime<Utc>) -> Result<Package> {
    let sql = format!("UPDATE packages SET enabled = 0, updated_at = $1 WHERE id = $2 RETURNING {COLUMNS}");
    sqlx::query_as::<_, Package>(&sql)
        .bind(to_micros(now))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(Error::NotFound("package"))
}

/// One package by id, enabled or not.
pub async fn find(db: &Db, id: i64) -> Result<Option<Package>> {
    let sql = format!("SELECT {COLUMNS} FROM packages WHERE id = $1");
    Ok(sqlx::query_as::<_, Package>(&sql).bind(id).fetch_optional(db.pool()).await?)
}

/// Reads a package on a transaction (purchase and fulfilment).
pub async fn find_on(conn: &mut AnyConnection, id: i64) -> Result<Option<Package>> {
    let sql = format!("SELECT {COLUMNS} FROM packages WHERE id = $1");
    Ok(sqlx::query_as::<_, Package>(&sql).bind(id).fetch_optional(conn).await?)
}

/// The catalog; `enabled_only` for what users may buy. Ordered by `sort_order`, then id.
pub async fn list(db: &Db, enabled_only: bool) -> Result<Vec<Package>> {
    let sql = format!("SELECT {COLUMNS} FROM packages WHERE ($1 = 0 OR enabled = 1) ORDER BY sort_order, id");
    Ok(sqlx::query_as::<_, Package>(&sql).bind(i64::from(enabled_only)).fetch_all(db.pool()).await?)
}

/// Takes one unit of stock (and counts the sale) if any is left: the conditional update
/// is the only place stock changes, so concurrent buyers of the last unit cannot both win.
pub async fn take_stock(conn: &mut AnyConnection, package_id: i64, now: DateTime<Utc>) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE packages SET stock = CASE WHEN stock IS NULL THEN NULL ELSE stock - 1 END, sold = sold + 1, \
           updated_at = $1 WHERE id = $2 AND (stock IS NULL OR stock > 0)",
    )
    .bind(to_micros(now))
    .bind(package_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a unit back (a refunded purchase).
pub async fn return_stock(conn: &mut AnyConnection, package_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE packages SET stock = CASE WHEN stock IS NULL THEN NULL ELSE stock + 1 END, \
           sold = CASE WHEN sold > 0 THEN sold - 1 ELSE 0 END, updated_at = $1 WHERE id = $2",
    )
    .bind(to_micros(now))
    .bind(package_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PackageInput {
        PackageInput {
            name: "基础套餐".into(),
            description: String::new(),
            price: Money::units(30),
            duration_days: 30,
            daily_limit: Some(Money::units(5)),
            sort_order: 1,
            enabled: true,
            stock: None,
            per_user_limit: None,
            five_hour_limit: None,
            weekly_limit: None,
            monthly_limit: None,
            total_limit: None,
            models: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&input()).is_ok());
        let field = |f: fn(&mut PackageInput)| {
            let mut i = input();
            f(&mut i);
            validate(&i).unwrap_err().field().map(str::to_string)
        };
        assert_eq!(field(|i| i.name = " ".into()).as_deref(), Some("name"));
        assert_eq!(field(|i| i.price = Money::ZERO).as_deref(), Some("price"));
        assert_eq!(field(|i| i.price = Money::from_micros(10_001)).as_deref(), Some("price"));
        assert_eq!(field(|i| i.duration_days = 0).as_deref(), Some("duration_days"));
        assert_eq!(field(|i| i.daily_limit = Some(Money::from_micros(-1))).as_deref(), Some("daily_limit"));
        assert_eq!(field(|i| i.daily_limit = None).as_deref(), Some("daily_limit"), "no window at all");
        let weekly_only = PackageInput { daily_limit: None, weekly_limit: Some(Money::units(20)), ..input() };
        assert!(validate(&weekly_only).is_ok(), "the daily limit is optional");
        assert_eq!(field(|i| i.stock = Some(-1)).as_deref(), Some("stock"));
        assert_eq!(field(|i| i.per_user_limit = Some(0)).as_deref(), Some("per_user_limit"));
        assert_eq!(field(|i| i.weekly_limit = Some(Money::from_micros(-1))).as_deref(), Some("weekly_limit"));
        assert_eq!(field(|i| i.models = Some(vec!["a,b".into()])).as_deref(), Some("models"));
    }
}
