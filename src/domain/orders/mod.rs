//! Payment orders (`payment_orders`): a package purchase or a balance top-up paid through
//! the Credit gateway (or, for packages, from the balance).
//!
//! Life cycle: `pending` → `paid` → `fulfilled` (the last two in one transaction, see
//! [`fulfil`]); `pending` → `expired` ([`jobs::expire_once`]), and an expired order that
//! is paid anyway is still fulfilled and flagged `late_payment`; `fulfilled` →
//! `refunding` → `refunded` ([`refund`]).

pub mod fulfil;
pub mod jobs;
pub mod notify;
pub mod refund;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::Serialize;

use crate::domain::billing::Env;
use crate::domain::coupons::pricing;
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Values of `payment_orders.kind`.
pub mod kind {
    pub const PACKAGE: &str = "package";
    pub const TOPUP: &str = "topup";
}

/// Values of `payment_orders.status`.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const PAID: &str = "paid";
    pub const FULFILLED: &str = "fulfilled";
    pub const EXPIRED: &str = "expired";
    pub const REFUNDING: &str = "refunding";
    /// The gateway answered the refund `code: 1` but the reversal did not commit (an
    /// outage): the reconcile job reverses it without asking the gateway again.
    pub const REFUND_CONFIRMED: &str = "refund_confirmed";
    pub const REFUNDED: &str = "refunded";
}

pub(crate) const COLUMNS: &str = "id, out_trade_no, user_id, kind, package_id, amount, list_amount, credit_amount, \
    status, pay_method, pay_type, trade_no, subject, flags, expires_at, paid_at, fulfilled_at, refunded_at, \
    created_at, updated_at, user_package_id, fulfilment, granted_days";

/// A row of `payment_orders`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Order {
    pub id: i64,
    pub out_trade_no: String,
    pub user_id: i64,
    pub kind: String,
    pub package_id: Option<i64>,
    /// What the buyer pays, in the payment currency (whole cents).
    pub amount: i64,
    pub list_amount: i64,
    /// Balance (USD micro-units) a top-up credits.
    pub credit_amount: i64,
    pub status: String,
    /// `credit` (gateway) or `balance`.
    pub pay_method: String,
    pub pay_type: Option<String>,
    pub trade_no: Option<String>,
    pub subject: String,
    /// Comma-separated markers such as `late_payment`, `sold_out_credited`.
    pub flags: Option<String>,
    pub expires_at: i64,
    pub paid_at: Option<i64>,
    pub fulfilled_at: Option<i64>,
    pub refunded_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The user package the fulfilment created or extended.
    pub user_package_id: Option<i64>,
    /// What fulfilment did: `started`, `extended`, `queued`, `switched`, `sold_out_credit`, `topup`.
    pub fulfilment: Option<String>,
    /// Days of package the fulfilment gave (what a refund of an extension takes back).
    pub granted_days: Option<i64>,
}

/// What the API shows of an order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub id: i64,
    pub out_trade_no: String,
    pub user_id: i64,
    pub kind: String,
    pub package_id: Option<i64>,
    pub amount: Money,
    /// The price before a coupon (equal to `amount` without one).
    pub list_amount: Money,
    pub credit_amount: Money,
    pub status: String,
    pub pay_method: String,
    pub trade_no: Option<String>,
    pub subject: String,
    pub flags: Vec<String>,
    pub fulfilment: Option<String>,
    pub user_package_id: Option<i64>,
    pub expires_at: String,
    pub paid_at: Option<String>,
    pub fulfilled_at: Option<String>,
    pub refunded_at: Option<String>,
    pub created_at: String,
}

impl Order {
    /// What the buyer pays, in the payment currency.
    pub fn amount(&self) -> Money {
        Money::from_micros(self.amount)
    }

    /// Whether a marker such as `late_payment` was recorded.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.as_deref().is_some_and(|f| f.split(',').any(|x| x == flag))
    }

    /// The API's view, times in the business zone.
    pub fn view(&self, calendar: &BusinessCalendar) -> OrderView {
        let time = |t: Option<i64>| t.map(|t| calendar.format(from_micros(t)));
        OrderView {
            id: self.id,
            out_trade_no: self.out_trade_no.clone(),
            user_id: self.user_id,
            kind: self.kind.clone(),
            package_id: self.package_id,
            amount: self.amount(),
            list_amount: Money::from_micros(self.list_amount),
            credit_amount: Money::from_micros(self.credit_amount),
            status: self.status.clone(),
            pay_method: self.pay_method.clone(),
            trade_no: self.trade_no.clone(),
            subject: self.subject.clone(),
            flags: self.flags.as_deref().unwrap_or("").split(',').filter(|f| !f.is_empty()).map(String::from).collect(),
            fulfilment: self.fulfilment.clone(),
            user_package_id: self.user_package_id,
            expires_at: calendar.format(from_micros(self.expires_at)),
            paid_at: time(self.paid_at),
            fulfilled_at: time(self.fulfilled_at),
            refunded_at: time(self.refunded_at),
            created_at: calendar.format(from_micros(self.created_at)),
        }
    }
}

/// A fresh order number: kind letter + UTC time to the second + 8 random base-36 chars
/// (23 ASCII characters, well under the gateway's 32).
pub fn new_out_trade_no(prefix: char, now: DateTime<Utc>) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    let random: String = (0..8).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{}{random}", now.format("%Y%m%d%H%M%S"))
}

/// Converts a payment amount to balance (USD micro-units) at `rate` USD per 1.00 paid.
pub fn to_balance(amount: Money, rate: Money) -> Money {
    let value = i128::from(amount.micros()) * i128::from(rate.micros()) / 1_000_000;
    Money::from_micros(i64::try_from(value).unwrap_or(i64::MAX))
}

/// A new order to insert.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub user_id: i64,
    pub kind: &'a str,
    pub package_id: Option<i64>,
    pub amount: Money,
    pub credit_amount: Money,
    pub pay_method: &'a str,
    pub pay_type: Option<&'a str>,
    pub subject: &'a str,
    pub ttl: Duration,
}

/// Inserts a pending order on the caller's connection and returns it.
pub async fn insert(conn: &mut sqlx::AnyConnection, new: &NewOrder<'_>, now: DateTime<Utc>) -> Result<Order> {
    let prefix = if new.kind == kind::TOPUP { 'T' } else { 'P' };
    let sql = format!(
        "INSERT INTO payment_orders (out_trade_no, user_id, kind, package_id, amount, list_amount, credit_amount, \
           status, pay_method, pay_type, subject, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, 'pending', $7, $8, $9, $10, $11, $11) RETURNING {COLUMNS}"
    );
    let order = sqlx::query_as::<_, Order>(&sql)
        .bind(new_out_trade_no(prefix, now))
        .bind(new.user_id)
        .bind(new.kind)
        .bind(new.package_id)
        .bind(new.amount.micros())
        .bind(new.credit_amount.micros())
        .bind(new.pay_method)
        .bind(new.pay_type)
        .bind(new.subject)
        .bind(to_micros(now + new.ttl))
        .bind(to_micros(now))
        .fetch_one(conn)
        .await?;
    Ok(order)
}

/// One order by its number.
pub async fn find(db: &Db, out_trade_no: &str) -> Result<Option<Order>> {
    let sql = format!("SELECT {COLUMNS} FROM payment_orders WHERE out_trade_no = $1");
    Ok(sqlx::query_as::<_, Order>(&sql).bind(out_trade_no).fetch_optional(db.pool()).await?)
}

/// Filters of the order lists.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<i64>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
}

/// One page of orders, newest first, and the total.
pub async fn list(db: &Db, filter: &OrderFilter, limit: i64, offset: i64) -> Result<(Vec<Order>, i64)> {
    let condition = "($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR kind = $3) \
                     AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5)";
    let sql = format!("SELECT {COLUMNS} FROM payment_orders WHERE {condition} ORDER BY id DESC LIMIT $6 OFFSET $7");
    let rows = sqlx::query_as::<_, Order>(&sql)
        .bind(filter.user_id)
        .bind(filter.status.as_deref())
        .bind(filter.kind.as_deref())
        .bind(filter.from)
        .bind(filter.until)
        .bind(limit)
        .bind(offset)
        .fetch_all(db.pool())
        .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM payment_orders WHERE {condition}"))
        .bind(filter.user_id)
        .bind(filter.status.as_deref())
        .bind(filter.kind.as_deref())
        .bind(filter.from)
        .bind(filter.until)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

/// Creates a pending balance top-up order after checking `settings.credit`'s switch,
/// bounds and whole cents; the balance it will credit is fixed now, at today's rate.
pub async fn create_topup(env: Env<'_>, user_id: i64, amount: Money) -> Result<Order> {
    create_topup_coupon(env, user_id, amount, None).await
}

/// [`create_topup`] with an optional coupon (one with `applies_to_topup`): the order asks
/// for the discounted amount and still credits the full amount's balance.
pub async fn create_topup_coupon(env: Env<'_>, user_id: i64, amount: Money, coupon: Option<&str>) -> Result<Order> {
    let settings = env.settings.get().await?;
    let credit = &settings.credit;
    ensure_payments_usable(credit)?;
    if !credit.topup_enabled {
        return Err(Error::conflict("topup_disabled", "balance top-ups are switched off"));
    }
    if !amount.is_whole_cents() {
        return Err(Error::validation("amount", "must have at most two decimals"));
    }
    if amount < credit.topup_min || amount > credit.topup_max {
        let message =
            format!("must be between {} and {}", credit.topup_min.format_2dp(), credit.topup_max.format_2dp());
        return Err(Error::validation("amount", message));
    }
    let subject = format!("Balance top-up {}", amount.format_2dp());
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let quote = match coupon {
        Some(code) => Some(pricing::quote(tx.conn(), code, user_id, pricing::Target::TopUp, amount, now).await?),
        None => None,
    };
    let new = NewOrder {
        user_id,
        kind: kind::TOPUP,
        package_id: None,
        amount: quote.as_ref().map_or(amount, |q| q.price),
        credit_amount: to_balance(amount, credit.topup_rate),
        pay_method: "credit",
        pay_type: Some(&credit.pay_type),
        subject: &subject,
        ttl: Duration::minutes(credit.order_ttl_minutes),
    };
    let mut order = insert(tx.conn(), &new, now).await?;
    if let Some(quote) = &quote {
        pricing::attach(tx.conn(), order.id, quote).await?;
        order.list_amount = quote.list_price.micros();
    }
    tx.commit().await?;
    Ok(order)
}

/// Refuses payment routes while the merchant settings are incomplete or switched off.
pub fn ensure_payments_usable(credit: &crate::domain::settings::CreditSettings) -> Result<()> {
    if credit.is_usable() {
        Ok(())
    } else {
        Err(Error::conflict("payments_unavailable", "online payment is not available; pay from the balance instead"))
    }
}

/// The gateway URL and signed fields for an order (also returned by the JSON API).
pub fn gateway_form(
    credit: &crate::domain::settings::CreditSettings,
    public_url: &str,
    order: &Order,
) -> (String, crate::domain::payment::epay::Params) {
    let notify_url = credit.notify_url_or_default(public_url);
    let return_url = credit.return_url_or_default(public_url);
    let submit = crate::domain::payment::epay::SubmitOrder {
        pid: &credit.pid,
        pay_type: &credit.pay_type,
        out_trade_no: &order.out_trade_no,
        notify_url: &notify_url,
        return_url: &return_url,
        name: &order.subject,
        money: order.amount(),
    };
    (
        crate::domain::payment::epay::submit_url(&credit.gateway_url),
        crate::domain::payment::epay::submit_params(&submit, &credit.key),
    )
}

/// Our own URL that starts paying an order.
pub fn pay_url(public_url: &str, out_trade_no: &str) -> String {
    format!("{public_url}/pay/{out_trade_no}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_short_ascii_and_distinct() {
        let now = DateTime::parse_from_rfc3339("2026-01-15T04:00:00Z").unwrap().with_timezone(&Utc);
        let a = new_out_trade_no('P', now);
        let b = new_out_trade_no('P', now);
        assert_eq!(a.len(), 23);
        assert!(a.starts_with("P20260115040000"));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn payments_convert_to_balance_at_the_rate() {
        assert_eq!(to_balance(Money::units(10), Money::units(1)), Money::units(10));
        assert_eq!(to_balance(Money::units(10), Money::from_micros(150_000)), Money::from_micros(1_500_000));
    }
}
