//! Coupons: a percentage or fixed amount off a package purchase (or a top-up), limited
//! by packages, a validity window, total uses and uses per user.
//!
//! [`pricing::quote`] prices an order with a coupon; the use is counted only when the
//! order is paid, by [`pricing::claim`] on the payment's transaction with a conditional
//! `UPDATE ... WHERE used < max_uses` (so the last use cannot be taken twice).

pub mod pricing;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::{is_unique_violation, Db};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// A row of `coupons`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Coupon {
    pub id: i64,
    pub code: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub package_ids: Option<String>,
    pub applies_to_topup: i64,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    pub used: i64,
    pub enabled: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(crate) const COLUMNS: &str = "id, code, percent_off, amount_off, package_ids, applies_to_topup, valid_from, \
    valid_until, max_uses, max_uses_per_user, used, enabled, created_at, updated_at";

/// What the API shows of a coupon.
#[derive(Debug, Clone, Serialize)]
pub struct CouponView {
    pub id: i64,
    pub code: String,
    pub percent_off: Option<Money>,
    pub amount_off: Option<Money>,
    pub package_ids: Option<Vec<i64>>,
    pub applies_to_topup: bool,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    pub used: i64,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl Coupon {
    /// The packages it applies to; `None` = every package.
    pub fn package_ids(&self) -> Option<Vec<i64>> {
        self.package_ids.as_deref().map(|text| serde_json::from_str(text).unwrap_or_default())
    }

    pub fn view(&self, calendar: &BusinessCalendar) -> CouponView {
        let time = |t: Option<i64>| t.map(|t| calendar.format(from_micros(t)));
        CouponView {
            id: self.id,
            code: self.code.clone(),
            percent_off: self.percent_off.map(Money::from_micros),
            amount_off: self.amount_off.map(Money::from_micros),
            package_ids: self.package_ids(),
            applies_to_topup: self.applies_to_topup != 0,
            valid_from: time(self.valid_from),
            valid_until: time(self.valid_until),
            max_uses: self.max_uses,
            max_uses_per_user: self.max_uses_per_user,
            used: self.used,
            enabled: self.enabled != 0,
            created_at: calendar.format(from_micros(self.created_at)),
            updated_at: calendar.format(from_micros(self.updated_at)),
        }
    }
}

/// A coupon as an admin writes it (create, and full replacement on update).
#[derive(Debug, Clone)]
pub struct CouponInput {
    pub code: String,
    pub percent_off: Option<Money>,
    pub amount_off: Option<Money>,
    pub package_ids: Option<Vec<i64>>,
    pub applies_to_topup: bool,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub max_uses: Option<i64>,
    pub max_uses_per_user: Option<i64>,
    pub enabled: bool,
}

/// The stored form of a code: trimmed, upper case.
pub fn normalize_code(code: &str) -> String {
    code.trim().to_uppercase()
}

impl CouponInput {
    /// Checks the rules, naming the field that breaks one.
    pub fn validate(&mut self) -> Result<()> {
        self.code = normalize_code(&self.code);
        let code_ok = (3..=32).contains(&self.code.len())
            && self.code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !code_ok {
            return Err(Error::validation("code", "must be 3 to 32 letters, digits, - or _"));
        }
        match (self.percent_off, self.amount_off) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::validation("percent_off", "give exactly one of percent_off or amount_off"));
            }
            (Some(p), None) if !p.is_positive() || p > Money::units(100) => {
                return Err(Error::validation("percent_off", "must be greater than 0 and at most 100"));
            }
            (None, Some(a)) if !a.is_positive() || !a.is_whole_cents() => {
                return Err(Error::validation("amount_off", "must be greater than 0, in whole cents"));
            }
            _ => {}
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if until <= from {
                return Err(Error::validation("valid_until", "must be after valid_from"));
            }
        }
        if self.max_uses.is_some_and(|n| n < 1) {
            return Err(Error::validation("max_uses", "must be at least 1 (leave it out for no limit)"));
        }
        if self.max_uses_per_user.is_some_and(|n| n < 1) {
            return Err(Error::validation("max_uses_per_user", "must be at least 1 (leave it out for no limit)"));
        }
        if let Some(ids) = &mut self.package_ids {
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(())
    }
}

fn code_taken(code: &str) -> Error {
    Error::conflict("code_taken", format!("a coupon with code {code} already exists"))
}

/// Binds a coupon's settings as `$1`..`$11` (the timestamp last), in the order both
/// [`create`] and [`update`] name them.
fn bind_input<'q>(
    query: sqlx::query::QueryAs<'q, sqlx::Any, Coupon, sqlx::any::AnyArguments<'q>>,
    input: &'q CouponInput,
    now: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, Coupon, sqlx::any::AnyArguments<'q>> {
    let package_ids = input.package_ids.as_ref().map(|ids| serde_json::json!(ids).to_string());
    query
        .bind(&input.code)
        .bind(input.percent_off.map(Money::micros))
        .bind(input.amount_off.map(Money::micros))
        .bind(package_ids)
        .bind(i64::from(input.applies_to_topup))
        .bind(input.valid_from.map(to_micros))
        .bind(input.valid_until.map(to_micros))
        .bind(input.max_uses)
        .bind(input.max_uses_per_user)
        .bind(i64::from(input.enabled))
        .bind(to_micros(now))
}

/// Inserts a validated coupon on the caller's transaction.
pub async fn create(conn: &mut AnyConnection, input: &CouponInput, now: DateTime<Utc>) -> Result<Coupon> {
    let sql = format!(
        "INSERT INTO coupons (code, percent_off, amount_off, package_ids, applies_to_topup, valid_from, valid_until, \
           max_uses, max_uses_per_user, used, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $11) RETURNING {COLUMNS}"
    );
    let result = bind_input(sqlx::query_as::<_, Coupon>(&sql), input, now).fetch_one(conn).await;
    match result {
        Ok(coupon) => Ok(coupon),
        Err(e) if is_unique_violation(&e) => Err(code_taken(&input.code)),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a coupon's settings (its use count stays) on the caller's transaction.
pub async fn update(conn: &mut AnyConnection, id: i64, input: &CouponInput, now: DateTime<Utc>) -> Result<Coupon> {
    let sql = format!(
        "UPDATE coupons SET code = $1, percent_off = $2, amount_off = $3, package_ids = $4, applies_to_topup = $5, \
           valid_from = $6, valid_until = $7, max_uses = $8, max_uses_per_user = $9, enabled = $10, updated_at = $11 \
         WHERE id = $12 RETURNING {COLUMNS}"
    );
    let result = bind_input(sqlx::query_as::<_, Coupon>(&sql), input, now).bind(id).fetch_optional(conn).await;
    match result {
        Ok(Some(coupon)) => Ok(coupon),
        Ok(None) => Err(Error::NotFound("coupon")),
        Err(e) if is_unique_violation(&e) => Err(code_taken(&input.code)),
        Err(e) => Err(e.into()),
    }
}

/// Switches a coupon off (history of paid uses stays).
pub async fn disable(conn: &mut AnyConnection, id: i64, now: DateTime<Utc>) -> Result<Coupon> {
    sqlx::query_as::<_, Coupon>(&format!(
        "UPDATE coupons SET enabled = 0, updated_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
    ))
    .bind(to_micros(now))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("coupon"))
}

pub async fn find_in(conn: &mut AnyConnection, id: i64) -> Result<Option<Coupon>> {
    Ok(sqlx::query_as::<_, Coupon>(&format!("SELECT {COLUMNS} FROM coupons WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Deletes a coupon no order ever referred to; one that priced an order (paid or not)
/// can only be switched off, so order history keeps pointing at it (409 `coupon_in_use`).
pub async fn delete(conn: &mut AnyConnection, id: i64) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM coupons WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM payment_orders WHERE coupon_id = $1) \
           AND NOT EXISTS (SELECT 1 FROM coupon_redemptions WHERE coupon_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    match find_in(conn, id).await? {
        Some(_) => Err(Error::conflict("coupon_in_use", "orders used this coupon; disable it instead")),
        None => Err(Error::NotFound("coupon")),
    }
}

/// All coupons, newest first.
pub async fn list(db: &Db, limit: i64, offset: i64) -> Result<(Vec<Coupon>, i64)> {
    let rows =
        sqlx::query_as::<_, Coupon>(&format!("SELECT {COLUMNS} FROM coupons ORDER BY id DESC LIMIT $1 OFFSET $2"))
            .bind(limit)
            .bind(offset)
            .fetch_all(db.pool())
            .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons").fetch_one(db.pool()).await?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> CouponInput {
        CouponInput {
            code: " spring-25 ".into(),
            percent_off: Some(Money::units(25)),
            amount_off: None,
            package_ids: Some(vec![3, 1, 3]),
            applies_to_topup: false,
            valid_from: None,
            valid_until: None,
            max_uses: Some(10),
            max_uses_per_user: Some(1),
            enabled: true,
        }
    }

    #[test]
    fn coupon_inputs_are_normalised_and_checked() {
        let mut ok = input();
        ok.validate().unwrap();
        assert_eq!(ok.code, "SPRING-25");
        assert_eq!(ok.package_ids, Some(vec![1, 3]));
        let mut both = CouponInput { amount_off: Some(Money::units(1)), ..input() };
        assert_eq!(both.validate().unwrap_err().field(), Some("percent_off"));
        let mut too_much = CouponInput { percent_off: Some(Money::units(101)), ..input() };
        assert_eq!(too_much.validate().unwrap_err().field(), Some("percent_off"));
        let mut sub_cent = CouponInput { percent_off: None, amount_off: Some(Money::from_micros(1)), ..input() };
        assert_eq!(sub_cent.validate().unwrap_err().field(), Some("amount_off"));
        let mut bad_code = CouponInput { code: "a b".into(), ..input() };
        assert_eq!(bad_code.validate().unwrap_err().field(), Some("code"));
        let mut zero_uses = CouponInput { max_uses: Some(0), ..input() };
        assert_eq!(zero_uses.validate().unwrap_err().field(), Some("max_uses"));
    }
}
