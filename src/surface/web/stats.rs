//! Site-wide figures for the admin overview: spend and requests per business day (from
//! `daily_usage`) and payments received per day (from `payment_orders`).

use chrono::{Days, NaiveDate};

use crate::domain::billing::usage::DaySpend;
use crate::foundation::clock::{date_key, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;

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
    Ok(crate::domain::billing::usage::zero_filled(&rows, first, today))
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

/// One line of a "top" table: who or what, exact spend, requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// The user's id (top spenders) or 0 (top models).
    pub id: i64,
    /// The user's email or the model name.
    pub name: String,
    pub spent: Money,
    pub requests: i64,
}

/// The `days` business days ending `today` as a `[start, end)` range of instants (micros).
pub fn period(calendar: &BusinessCalendar, today: NaiveDate, days: u32) -> (i64, i64) {
    let first = today.checked_sub_days(Days::new(u64::from(days.max(1)) - 1)).unwrap_or(today);
    let after = today.checked_add_days(Days::new(1)).unwrap_or(today);
    (to_micros(calendar.day_start(first)), to_micros(calendar.day_start(after)))
}

/// The users who spent most in `[from, to)` (what they were charged, package and
/// balance alike), most first; ties by user id.
pub async fn top_spenders(db: &Db, (from, to): (i64, i64), limit: i64) -> Result<Vec<TopRow>> {
    let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT g.user_id, u.email, CAST(SUM(g.cost) AS BIGINT) AS spent, COUNT(*) AS requests \
         FROM usage_logs g JOIN users u ON u.id = g.user_id \
         WHERE g.created_at >= $1 AND g.created_at < $2 GROUP BY g.user_id, u.email \
         ORDER BY spent DESC, g.user_id LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, spent, requests)| TopRow { id, name, spent: Money::from_micros(spent), requests })
        .collect())
}

/// The models that cost most in `[from, to)`, most first; ties by name.
pub async fn top_models(db: &Db, (from, to): (i64, i64), limit: i64) -> Result<Vec<TopRow>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT model, CAST(SUM(cost) AS BIGINT) AS spent, COUNT(*) AS requests FROM usage_logs \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY model ORDER BY spent DESC, model LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, spent, requests)| TopRow { id: 0, name, spent: Money::from_micros(spent), requests })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_whole_business_days_ending_today() {
        let calendar = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let (from, to) = period(&calendar, today, 7);
        assert_eq!(to - from, 7 * 24 * 3600 * 1_000_000);
        assert_eq!(from, to_micros(calendar.day_start(NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())));
        let (from, to) = period(&calendar, today, 0);
        assert_eq!(to - from, 24 * 3600 * 1_000_000, "0 days means today");
    }
}
