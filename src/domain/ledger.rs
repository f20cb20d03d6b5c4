//! The ledger: one row for every movement of money or package allowance.
//!
//! A user's balance always equals the sum of `amount` over their entries, and a
//! day's package usage equals the sum of `package_amount` for that business day.
//! Balance changes go through [`change_balance`], which applies a conditional
//! update and writes the entry on the caller's transaction, so the two can never
//! disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Kinds of ledger entries (stored as text).
pub mod kind {
    pub const USAGE: &str = "usage";
    pub const TOPUP: &str = "topup";
    pub const PACKAGE_PURCHASE: &str = "package_purchase";
    pub const PACKAGE_GRANT: &str = "package_grant";
    pub const PACKAGE_CREDIT: &str = "package_credit";
    /// An admin ended a package early: no money moves (amount 0), the allowance stops.
    pub const PACKAGE_END: &str = "package_end";
    pub const ADMIN_ADJUST: &str = "admin_adjust";
    pub const REFUND: &str = "refund";
    pub const REDEEM: &str = "redeem";
}

/// What to record besides the balance delta.
#[derive(Debug, Clone, Default)]
pub struct EntryDetails<'a> {
    pub reference: Option<&'a str>,
    pub note: Option<&'a str>,
    pub actor_id: Option<i64>,
    /// Package allowance consumed (usage entries).
    pub package_amount: Money,
    pub user_package_id: Option<i64>,
    pub business_date: Option<&'a str>,
}

/// Whether a debit may take the balance below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdraft {
    /// Refuse (409 `insufficient_balance`) if the balance would go negative.
    Refuse,
    /// Apply anyway: used only to settle usage already served (bounded by holds).
    Allow,
}

/// The largest balance (and the largest single change) a user can hold: one billion
/// units. Far above any real balance, and low enough that `balance + amount` can never
/// overflow an i64 in SQL (a hostile admin adjustment of i64::MAX micros once did: a 500).
pub const MAX_BALANCE: Money = Money::units(1_000_000_000);

/// Adds `amount` (negative = debit) to the user's balance and records the entry,
/// on the caller's transaction. Returns the balance after the change.
pub async fn change_balance(
    conn: &mut AnyConnection,
    user_id: i64,
    kind: &str,
    amount: Money,
    overdraft: Overdraft,
    details: &EntryDetails<'_>,
    now: DateTime<Utc>,
) -> Result<Money> {
    if amount.micros().unsigned_abs() > MAX_BALANCE.micros().unsigned_abs() {
        return Err(Error::validation("amount", "is larger than any balance can hold"));
    }
    let allow_negative = overdraft == Overdraft::Allow || !amount.is_negative();
    let balance_after: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET balance = balance + $1, updated_at = $2 \
         WHERE id = $3 AND ($4 = 1 OR balance + $1 >= 0) AND balance + $1 <= $5 RETURNING balance",
    )
    .bind(amount.micros())
    .bind(to_micros(now))
    .bind(user_id)
    .bind(i64::from(allow_negative))
    .bind(MAX_BALANCE.micros())
    .fetch_optional(&mut *conn)
    .await?;
    let balance_after = match balance_after {
        Some(b) => Money::from_micros(b),
        None => {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
            return Err(match exists {
                None => Error::NotFound("user"),
                Some(_) if !amount.is_negative() => {
                    Error::conflict("balance_limit", "the balance would be larger than any balance can hold")
                }
                Some(_) => Error::conflict("insufficient_balance", "the balance is too low for this change"),
            });
        }
    };
    record(conn, user_id, kind, amount, balance_after, details, now).await?;
    Ok(balance_after)
}

/// Writes one entry whose balance effect the caller has already applied.
pub async fn record(
    conn: &mut AnyConnection,
    user_id: i64,
    kind: &str,
    amount: Money,
    balance_after: Money,
    details: &EntryDetails<'_>,
    now: DateTime<Utc>,
) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, package_amount, user_package_id, \
           business_date, reference, note, actor_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(user_id)
    .bind(kind)
    .bind(amount.micros())
    .bind(balance_after.micros())
    .bind(details.package_amount.micros())
    .bind(details.user_package_id)
    .bind(details.business_date)
    .bind(details.reference)
    .bind(details.note)
    .bind(details.actor_id)
    .bind(to_micros(now))
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// A row of `ledger_entries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub package_amount: i64,
    pub user_package_id: Option<i64>,
    pub business_date: Option<String>,
    pub reference: Option<String>,
    pub note: Option<String>,
    pub actor_id: Option<i64>,
    pub created_at: i64,
}

/// What the API shows of an entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub amount: Money,
    pub balance_after: Money,
    pub package_amount: Money,
    pub reference: Option<String>,
    pub note: Option<String>,
    pub created_at: String,
}

impl Entry {
    pub fn view(&self, calendar: &BusinessCalendar) -> EntryView {
        EntryView {
            id: self.id,
            user_id: self.user_id,
            kind: self.kind.clone(),
            amount: Money::from_micros(self.amount),
            balance_after: Money::from_micros(self.balance_after),
            package_amount: Money::from_micros(self.package_amount),
            reference: self.reference.clone(),
            note: self.note.clone(),
            created_at: calendar.format(from_micros(self.created_at)),
        }
    }
}

/// One page of entries (newest first); `user_id = None` lists everyone's (admin).
pub async fn list(db: &Db, user_id: Option<i64>, limit: i64, offset: i64) -> Result<(Vec<Entry>, i64)> {
    let rows = sqlx::query_as::<_, Entry>(
        "SELECT id, user_id, kind, amount, balance_after, package_amount, user_package_id, business_date, \
           reference, note, actor_id, created_at \
         FROM ledger_entries WHERE ($1 IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE ($1 IS NULL OR user_id = $1)")
        .bind(user_id)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

/// One page of a user's entries of one kind, or of every kind but `usage` when `kind`
/// is `"-usage"` (the balance page's "money movements only" view), newest first.
pub async fn list_of_kind(db: &Db, user_id: i64, kind: &str, limit: i64, offset: i64) -> Result<(Vec<Entry>, i64)> {
    let (kind, negate) = match kind.strip_prefix('-') {
        Some(k) => (k, 1_i64),
        None => (kind, 0_i64),
    };
    let filter = "WHERE user_id = $1 AND (($3 = 0 AND kind = $2) OR ($3 = 1 AND kind <> $2))";
    let rows = sqlx::query_as::<_, Entry>(&format!(
        "SELECT id, user_id, kind, amount, balance_after, package_amount, user_package_id, business_date, \
           reference, note, actor_id, created_at FROM ledger_entries {filter} ORDER BY id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(user_id)
    .bind(kind)
    .bind(negate)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ledger_entries {filter}"))
        .bind(user_id)
        .bind(kind)
        .bind(negate)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

/// Users whose balance differs from the sum of their ledger entries (should be none).
/// Reliability tests call this after every scenario.
pub async fn balance_mismatches(db: &Db) -> Result<Vec<(i64, Money, Money)>> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT u.id, u.balance, CAST(COALESCE((SELECT SUM(l.amount) FROM ledger_entries l WHERE l.user_id = u.id), 0) AS BIGINT) \
         FROM users u",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, balance, sum)| balance != sum)
        .map(|(id, balance, sum)| (id, Money::from_micros(balance), Money::from_micros(sum)))
        .collect())
}
