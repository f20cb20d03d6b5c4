//! What a paid (or granted) package does to a user's packages. The billing engine
//! relies on this contract exactly:
//!
//! - rows of `user_packages` have `status` in `active`, `queued`, `expired`, `ended`, `refunded`;
//! - the packages that apply at instant T are the rows with `status IN ('active','queued')
//!   AND starts_at <= T AND ends_at > T`; at most one row matches, except with
//!   `package_switch_mode = "stack"`, where a different package starts at once beside
//!   the others (billing consumes them earliest-ending first);
//! - a package starts when its payment is confirmed and lasts `duration_days` × 24 h;
//! - the same package bought while it applies extends that row; a different one is queued
//!   after the last queued end, or, with `package_switch_mode = "switch"`, replaces the
//!   current one at once and the unused part of what was actually paid (`paid_amount`,
//!   the balance value of the payment) is credited to the balance, once;
//! - whenever a row ends early (switch, refund, admin end), later queued rows move up
//!   ([`reflow`]) so nothing paid for is lost and exactly one row applies at a time.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use super::held::COLUMNS;
pub use super::held::{
    current, current_on, find_on, list_for_user, mark_expired, status, UserPackage, UserPackageView,
};
use super::Package;
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::foundation::clock::to_micros;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// How a different package bought while one applies is handled (`Settings.package_switch_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchMode {
    Queue,
    Switch,
    /// Several packages at once: a different package starts now beside the others.
    Stack,
}

impl SwitchMode {
    /// Reads `Settings.package_switch_mode` (anything but `switch` queues).
    pub fn from_setting(value: &str) -> Self {
        match value {
            "switch" => SwitchMode::Switch,
            "stack" => SwitchMode::Stack,
            _ => SwitchMode::Queue,
        }
    }

    /// The mode of a package given without payment (an admin grant): it stacks when
    /// packages stack, else it queues. It never switches, because a switch would end
    /// something the user paid for.
    pub fn for_gift(value: &str) -> Self {
        match SwitchMode::from_setting(value) {
            SwitchMode::Stack => SwitchMode::Stack,
            _ => SwitchMode::Queue,
        }
    }
}

/// One package to give a user.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub user_id: i64,
    pub package: &'a Package,
    pub order_id: Option<i64>,
    /// Balance value of what was paid (zero for admin grants); the base of prorated credits.
    pub paid_amount: Money,
    /// `purchase`, `balance` or `grant`.
    pub source: &'a str,
    pub mode: SwitchMode,
}

/// What [`activate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Started,
    Extended,
    Queued,
    Switched,
}

impl Effect {
    /// The text stored in `payment_orders.fulfilment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Started => "started",
            Effect::Extended => "extended",
            Effect::Queued => "queued",
            Effect::Switched => "switched",
        }
    }
}

/// The result of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activation {
    pub user_package_id: i64,
    pub effect: Effect,
    /// Prorated credit of a replaced package (switch mode), already on the balance.
    pub credited: Money,
}

fn days(n: i64) -> i64 {
    n.saturating_mul(24 * 3600 * 1_000_000)
}

/// Serialises activations of one user on PostgreSQL (a row lock on the user); SQLite
/// already runs one writer at a time. Also taken before a per-user purchase count, so the
/// count and the purchase it allows are one step.
pub(crate) async fn lock_user(conn: &mut AnyConnection, user_id: i64) -> Result<()> {
    let done =
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(user_id).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("user"));
    }
    Ok(())
}

/// Gives `grant.package` to the user on the caller's transaction (start, extend, queue
/// or switch; see the module contract). Used by balance purchases, payment fulfilment
/// and admin grants alike.
pub async fn activate(conn: &mut AnyConnection, grant: &Grant<'_>, now: DateTime<Utc>) -> Result<Activation> {
    lock_user(conn, grant.user_id).await?;
    let length = days(grant.package.duration_days);
    let t = to_micros(now);
    let current = match grant.mode {
        // Stacked, the row to extend is the one of the same package, whichever applies first.
        SwitchMode::Stack => {
            let sql = format!(
                "SELECT {COLUMNS} FROM user_packages WHERE user_id = $1 AND package_id = $2 \
                   AND status IN ('active', 'queued') AND starts_at <= $3 AND ends_at > $3 ORDER BY starts_at, id LIMIT 1"
            );
            let same = sqlx::query_as::<_, UserPackage>(&sql)
                .bind(grant.user_id)
                .bind(grant.package.id)
                .bind(t)
                .fetch_optional(&mut *conn)
                .await?;
            if same.is_none() {
                let id = insert(conn, grant, status::ACTIVE, t, now).await?;
                reflow(conn, grant.user_id, now).await?;
                return Ok(Activation { user_package_id: id, effect: Effect::Started, credited: Money::ZERO });
            }
            same
        }
        _ => current_on(conn, grant.user_id, now).await?,
    };
    let (id, effect, credited) = match current {
        Some(cur) if cur.package_id == grant.package.id => {
            sqlx::query(
                "UPDATE user_packages SET ends_at = ends_at + $1, duration_days = duration_days + $2, \
                   paid_amount = paid_amount + $3, updated_at = $4 WHERE id = $5",
            )
            .bind(length)
            .bind(grant.package.duration_days)
            .bind(grant.paid_amount.micros())
            .bind(t)
            .bind(cur.id)
            .execute(&mut *conn)
            .await?;
            (cur.id, Effect::Extended, Money::ZERO)
        }
        Some(cur) if grant.mode == SwitchMode::Switch => {
            let credited = end_early(conn, &cur, status::ENDED, now).await?;
            let id = insert(conn, grant, status::ACTIVE, t, now).await?;
            (id, Effect::Switched, credited)
        }
        Some(_) => {
            let last_end: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(ends_at), 0) AS BIGINT) FROM user_packages \
                 WHERE user_id = $1 AND status IN ('active', 'queued') AND ends_at > $2",
            )
            .bind(grant.user_id)
            .bind(t)
            .fetch_one(&mut *conn)
            .await?;
            let id = insert(conn, grant, status::QUEUED, last_end.max(t), now).await?;
            (id, Effect::Queued, Money::ZERO)
        }
        None => (insert(conn, grant, status::ACTIVE, t, now).await?, Effect::Started, Money::ZERO),
    };
    reflow(conn, grant.user_id, now).await?;
    Ok(Activation { user_package_id: id, effect, credited })
}

async fn insert(
    conn: &mut AnyConnection,
    grant: &Grant<'_>,
    status: &str,
    starts_at: i64,
    now: DateTime<Utc>,
) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO user_packages (user_id, package_id, order_id, name, daily_limit, duration_days, paid_amount, \
           source, status, starts_at, ends_at, created_at, updated_at, five_hour_limit, weekly_limit, monthly_limit, \
           total_limit, models) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17) RETURNING id",
    )
    .bind(grant.user_id)
    .bind(grant.package.id)
    .bind(grant.order_id)
    .bind(&grant.package.name)
    .bind(grant.package.daily_limit)
    .bind(grant.package.duration_days)
    .bind(grant.paid_amount.micros())
    .bind(grant.source)
    .bind(status)
    .bind(starts_at)
    .bind(starts_at.saturating_add(days(grant.package.duration_days)))
    .bind(to_micros(now))
    .bind(grant.package.five_hour_limit)
    .bind(grant.package.weekly_limit)
    .bind(grant.package.monthly_limit)
    .bind(grant.package.total_limit)
    .bind(&grant.package.models)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Unused share of what was paid for a row at `now`, rounded down to the micro-unit.
pub fn prorated_unused(paid_amount: i64, starts_at: i64, ends_at: i64, now: i64) -> Money {
    let total = i128::from(ends_at - starts_at);
    if total <= 0 || paid_amount <= 0 || now >= ends_at {
        return Money::ZERO;
    }
    let remaining = i128::from(ends_at - now.max(starts_at));
    let value = i128::from(paid_amount) * remaining / total;
    Money::from_micros(i64::try_from(value).unwrap_or(paid_amount))
}

/// Ends the applying row now with `new_status` (`ended` on switch) and credits its unused
/// paid value. The conditional update makes the credit happen at most once.
async fn end_early(conn: &mut AnyConnection, row: &UserPackage, new_status: &str, now: DateTime<Utc>) -> Result<Money> {
    let t = to_micros(now);
    let done = sqlx::query(
        "UPDATE user_packages SET status = $1, ends_at = $2, updated_at = $2 \
         WHERE id = $3 AND status IN ('active', 'queued') AND ends_at > $2",
    )
    .bind(new_status)
    .bind(t)
    .bind(row.id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(Money::ZERO);
    }
    let credit = prorated_unused(row.paid_amount, row.starts_at, row.ends_at, t);
    if credit.is_positive() {
        let reference = format!("user_package:{}", row.id);
        let details = EntryDetails {
            reference: Some(&reference),
            note: Some("unused part of a package replaced by another"),
            user_package_id: Some(row.id),
            ..Default::default()
        };
        ledger::change_balance(
            conn,
            row.user_id,
            ledger::kind::PACKAGE_CREDIT,
            credit,
            Overdraft::Refuse,
            &details,
            now,
        )
        .await?;
    }
    Ok(credit)
}

/// Re-chains a user's active and queued rows so the first starts no later than now and
/// each next one starts when the previous ends, keeping every row's length.
pub async fn reflow(conn: &mut AnyConnection, user_id: i64, now: DateTime<Utc>) -> Result<()> {
    let t = to_micros(now);
    let sql = format!(
        "SELECT {COLUMNS} FROM user_packages WHERE user_id = $1 AND status IN ('active', 'queued') AND ends_at > $2 \
         ORDER BY starts_at, id"
    );
    let rows = sqlx::query_as::<_, UserPackage>(&sql).bind(user_id).bind(t).fetch_all(&mut *conn).await?;
    // Rows that have started keep their span (several run at once when stacked); the
    // rows still waiting chain after the last of them, or start now.
    let mut cursor = rows.iter().filter(|r| r.starts_at <= t).map(|r| r.ends_at).max().unwrap_or(t).max(t);
    for row in rows {
        let length = row.ends_at - row.starts_at;
        let (start, end) = if row.starts_at <= t {
            (row.starts_at, row.ends_at)
        } else {
            let start = cursor;
            cursor = start + length;
            (start, start + length)
        };
        let new_status = if start <= t { status::ACTIVE } else { status::QUEUED };
        if start != row.starts_at || end != row.ends_at || new_status != row.status {
            sqlx::query(
                "UPDATE user_packages SET starts_at = $1, ends_at = $2, status = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(start)
            .bind(end)
            .bind(new_status)
            .bind(t)
            .bind(row.id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Ends a row without credit (admin end, refund): active rows stop now, queued rows are
/// dropped, later queued rows move up. Returns false when the row had already ended.
pub async fn terminate(
    conn: &mut AnyConnection,
    row: &UserPackage,
    new_status: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    lock_user(conn, row.user_id).await?;
    let t = to_micros(now);
    let done = sqlx::query(
        "UPDATE user_packages SET status = $1, \
           starts_at = CASE WHEN starts_at > $2 THEN $2 ELSE starts_at END, \
           ends_at = CASE WHEN ends_at > $2 THEN $2 ELSE ends_at END, updated_at = $2 \
         WHERE id = $3 AND status IN ('active', 'queued', 'expired')",
    )
    .bind(new_status)
    .bind(t)
    .bind(row.id)
    .execute(&mut *conn)
    .await?;
    reflow(conn, row.user_id, now).await?;
    Ok(done.rows_affected() == 1)
}

/// Takes back one extension (a refunded renewal): the row loses `duration_days` and the
/// paid value; if nothing is left it is marked `refunded`.
pub async fn shorten(
    conn: &mut AnyConnection,
    row: &UserPackage,
    by_days: i64,
    paid: Money,
    now: DateTime<Utc>,
) -> Result<()> {
    lock_user(conn, row.user_id).await?;
    let t = to_micros(now);
    let new_end = row.ends_at - days(by_days);
    if new_end <= t || new_end <= row.starts_at {
        terminate(conn, row, status::REFUNDED, now).await?;
        return Ok(());
    }
    sqlx::query(
        "UPDATE user_packages SET ends_at = $1, duration_days = duration_days - $2, \
           paid_amount = CASE WHEN paid_amount > $3 THEN paid_amount - $3 ELSE 0 END, updated_at = $4 WHERE id = $5",
    )
    .bind(new_end)
    .bind(by_days)
    .bind(paid.micros())
    .bind(t)
    .bind(row.id)
    .execute(&mut *conn)
    .await?;
    reflow(conn, row.user_id, now).await
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prorated_credit_is_the_unused_share_of_what_was_paid() {
        let day = days(1);
        assert_eq!(prorated_unused(30_000_000, 0, 30 * day, 10 * day), Money::units(20));
        assert_eq!(prorated_unused(30_000_000, 0, 30 * day, 0), Money::units(30));
        assert_eq!(prorated_unused(30_000_000, 0, 30 * day, 30 * day), Money::ZERO);
        assert_eq!(prorated_unused(0, 0, 30 * day, day), Money::ZERO);
        // Rounds down: never credits more than was paid.
        assert_eq!(prorated_unused(10_000_000, 0, 3, 1), Money::from_micros(6_666_666));
    }

    #[test]
    fn switch_mode_is_read_from_the_setting() {
        assert_eq!(SwitchMode::from_setting("switch"), SwitchMode::Switch);
        assert_eq!(SwitchMode::from_setting("queue"), SwitchMode::Queue);
        assert_eq!(SwitchMode::from_setting("stack"), SwitchMode::Stack);
        assert_eq!(SwitchMode::for_gift("stack"), SwitchMode::Stack);
        assert_eq!(SwitchMode::for_gift("switch"), SwitchMode::Queue, "a gift never ends a paid package");
        assert_eq!(SwitchMode::for_gift("queue"), SwitchMode::Queue);
    }
}
