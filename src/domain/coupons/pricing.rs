//! Pricing an order with a coupon, and counting the use when the order is paid.
//!
//! Rules: a percentage discount is rounded down to whole cents (prices stay payable);
//! no discount takes a price below [`MIN_PRICE`] (0.01, the smallest payable amount),
//! so a discounted price is never zero or negative. Availability (window, packages,
//! uses) is checked when the order is priced; the use is counted only when it is paid.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::{normalize_code, Coupon, COLUMNS};
use crate::foundation::clock::to_micros;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// The lowest price a coupon can bring an order to.
pub const MIN_PRICE: Money = Money::from_micros(10_000);
const CENT: i64 = 10_000;

/// What is being bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Package(i64),
    TopUp,
}

/// An order's price with a coupon applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub coupon_id: i64,
    pub code: String,
    pub list_price: Money,
    pub discount: Money,
    pub price: Money,
}

/// The discount a coupon gives on `list`, after rounding and the minimum price.
pub fn discount_for(coupon: &Coupon, list: Money) -> Money {
    let raw = match (coupon.percent_off, coupon.amount_off) {
        (Some(percent), _) => {
            let exact = i128::from(list.micros()) * i128::from(percent) / (100 * 1_000_000);
            let exact = i64::try_from(exact).unwrap_or(0);
            exact - exact.rem_euclid(CENT)
        }
        (None, Some(amount)) => amount,
        (None, None) => 0,
    };
    let cap = (list.micros() - MIN_PRICE.micros()).max(0);
    Money::from_micros(raw.clamp(0, cap))
}

fn refuse(message: impl Into<String>) -> Error {
    Error::validation("coupon", message)
}

/// Prices `target` at `list_price` with the coupon `code` for `user_id`, or says why not.
pub async fn quote(
    conn: &mut AnyConnection,
    code: &str,
    user_id: i64,
    target: Target,
    list_price: Money,
    now: DateTime<Utc>,
) -> Result<Quote> {
    let code = normalize_code(code);
    let coupon = sqlx::query_as::<_, Coupon>(&format!("SELECT {COLUMNS} FROM coupons WHERE code = $1"))
        .bind(&code)
        .fetch_optional(&mut *conn)
        .await?
        .filter(|c| c.enabled != 0)
        .ok_or_else(|| refuse("no such coupon"))?;
    let t = to_micros(now);
    if coupon.valid_from.is_some_and(|from| t < from) || coupon.valid_until.is_some_and(|until| t >= until) {
        return Err(refuse("this coupon is not valid now"));
    }
    let applies = match target {
        Target::Package(id) => coupon.package_ids().is_none_or(|ids| ids.contains(&id)),
        Target::TopUp => coupon.applies_to_topup != 0,
    };
    if !applies {
        return Err(refuse("this coupon does not apply to this purchase"));
    }
    if coupon.max_uses.is_some_and(|max| coupon.used >= max) {
        return Err(refuse("this coupon has been used up"));
    }
    if let Some(per_user) = coupon.max_uses_per_user {
        if uses_by(conn, coupon.id, user_id).await? >= per_user {
            return Err(refuse("you have already used this coupon as often as allowed"));
        }
    }
    let discount = discount_for(&coupon, list_price);
    let price = list_price.checked_sub(discount).unwrap_or(list_price);
    Ok(Quote { coupon_id: coupon.id, code: coupon.code, list_price, discount, price })
}

async fn uses_by(conn: &mut AnyConnection, coupon_id: i64, user_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM coupon_redemptions WHERE coupon_id = $1 AND user_id = $2")
        .bind(coupon_id)
        .bind(user_id)
        .fetch_one(conn)
        .await?)
}

/// Records the coupon and the list price on a freshly inserted order.
pub async fn attach(conn: &mut AnyConnection, order_id: i64, quote: &Quote) -> Result<()> {
    sqlx::query("UPDATE payment_orders SET list_amount = $1, coupon_id = $2 WHERE id = $3")
        .bind(quote.list_price.micros())
        .bind(quote.coupon_id)
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What [`claim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The order used no coupon.
    NoCoupon,
    /// The use was counted.
    Counted,
    /// The coupon's total or per-user uses were taken by other paid orders meanwhile.
    Exhausted,
}

/// Counts the coupon use of a paid order, on the payment's transaction. The conditional
/// increment locks the coupon row until commit, so concurrent payments queue here and the
/// per-user count below sees every earlier committed use.
pub async fn claim(conn: &mut AnyConnection, order_id: i64, now: DateTime<Utc>) -> Result<Claim> {
    let row: Option<(Option<i64>, i64, i64, i64)> =
        sqlx::query_as("SELECT coupon_id, user_id, list_amount, amount FROM payment_orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((Some(coupon_id), user_id, list_amount, amount)) = row else {
        return Ok(Claim::NoCoupon);
    };
    let t = to_micros(now);
    let counted = sqlx::query(
        "UPDATE coupons SET used = used + 1, updated_at = $2 WHERE id = $1 AND (max_uses IS NULL OR used < max_uses)",
    )
    .bind(coupon_id)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    if counted.rows_affected() != 1 {
        return Ok(Claim::Exhausted);
    }
    let per_user: Option<i64> = sqlx::query_scalar("SELECT max_uses_per_user FROM coupons WHERE id = $1")
        .bind(coupon_id)
        .fetch_one(&mut *conn)
        .await?;
    if let Some(limit) = per_user {
        if uses_by(conn, coupon_id, user_id).await? >= limit {
            sqlx::query("UPDATE coupons SET used = used - 1 WHERE id = $1").bind(coupon_id).execute(&mut *conn).await?;
            return Ok(Claim::Exhausted);
        }
    }
    sqlx::query(
        "INSERT INTO coupon_redemptions (coupon_id, user_id, order_id, discount, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(coupon_id)
    .bind(user_id)
    .bind(order_id)
    .bind(list_amount - amount)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    Ok(Claim::Counted)
}

/// Marks a paid order whose coupon was used up meanwhile (the buyer paid the quoted price
/// and is served; the admin sees the flag).
pub async fn flag_exhausted(conn: &mut AnyConnection, order_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE payment_orders SET flags = CASE WHEN flags IS NULL OR flags = '' THEN 'coupon_exhausted' \
           ELSE flags || ',coupon_exhausted' END WHERE id = $1",
    )
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coupon(percent: Option<i64>, amount: Option<i64>) -> Coupon {
        Coupon {
            id: 1,
            code: "X".into(),
            percent_off: percent,
            amount_off: amount,
            package_ids: None,
            applies_to_topup: 0,
            valid_from: None,
            valid_until: None,
            max_uses: None,
            max_uses_per_user: None,
            used: 0,
            enabled: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn percentages_round_down_to_cents() {
        let c = coupon(Some(Money::units(15).micros()), None);
        assert_eq!(discount_for(&c, Money::parse("9.99").unwrap()), Money::parse("1.49").unwrap());
        let c = coupon(Some(12_500_000), None); // 12.5 %
        assert_eq!(discount_for(&c, Money::units(30)), Money::parse("3.75").unwrap());
    }

    #[test]
    fn no_discount_goes_below_the_minimum_price() {
        let all = coupon(Some(Money::units(100).micros()), None);
        assert_eq!(discount_for(&all, Money::units(30)), Money::parse("29.99").unwrap());
        let big = coupon(None, Some(Money::units(50).micros()));
        assert_eq!(discount_for(&big, Money::units(30)), Money::parse("29.99").unwrap());
        assert_eq!(discount_for(&big, Money::parse("0.01").unwrap()), Money::ZERO);
        assert_eq!(discount_for(&big, Money::ZERO), Money::ZERO, "never negative");
    }
}
