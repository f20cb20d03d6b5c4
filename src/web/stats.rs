//! Site-wide figures for the admin overview: spend and requests per business day (from
//! `daily_usage`) and payments received per day (from `payment_orders`).

use chrono::{Days, NaiveDate};

use crate::billing::usage::DaySpend;
use crate::clock::{date_key, to_micros, BusinessCalendar};
use crate::db::Db;
use crate::error::Result;
use crate::money::Money;

/// Every user's spend for the `days` days ending `today`, zero-filled, oldest first.
pub async fn spend_history(db: &Db, today: NaiveDate, days: u32) -> Result<Vec<DaySpend>> {
    let first = today.checked_sub_days(Days::new(u64::from(days.max(1)) - 1)).unwrap_or(today);
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT business_date, CAST(COALESCE(SUM(package_used), 0) AS BIGINT), \
           CAST(COALESCE(SUM(balance_used), 0) AS BIGINT), CAST(COALESCE(SUM(requests), 0) AS BIGINT) \
         FROM daily_usage WHERE business_date >= $1 AND business_date <= $2 GROUP BY business_date",
    )
    .bind(date_key(first))
    .bind(date_key(today))
    .fetch_all(db.pool())
    .await?;
    Ok(crate::billing::usage::zero_filled(&rows, first, today))
}

/// Payments received (fulfilled gateway orders, refunds excluded) during a business day.
pub async fn revenue_on(db: &Db, calendar: &BusinessCalendar, date: NaiveDate) -> Result<Money> {
    let start = calendar.day_start(date);
    let end = calendar.day_start(date.checked_add_days(Days::new(1)).unwrap_or(date));
    let sum: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payment_orders \
         WHERE pay_method = 'credit' AND status = 'fulfilled' AND paid_at >= $1 AND paid_at < $2",
    )
    .bind(to_micros(start))
    .bind(to_micros(end))
    .fetch_one(db.pool())
    .await?;
    Ok(Money::from_micros(sum))
}
