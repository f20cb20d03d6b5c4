//! The one code path that turns a confirmed payment into what was bought. Notify,
//! admin re-check and reconciliation all call [`settle`]; its conditional update
//! (`pending`/`expired` → `paid`) is what makes a payment fulfil exactly once however
//! often and however concurrently the gateway repeats itself.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::{kind, status, to_balance, Order, COLUMNS};
use crate::domain::billing::Env;
use crate::domain::coupons;
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::packages::activation::{self, Grant, SwitchMode};
use crate::domain::packages::{self};
use crate::foundation::clock::to_micros;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Fulfilment of a package order paid back to the balance: sold out when paid.
pub const SOLD_OUT_CREDIT: &str = "sold_out_credit";
/// Fulfilment of a package order paid back to the balance: over the per-user limit when paid.
pub const OVER_LIMIT_CREDIT: &str = "over_limit_credit";

/// A payment the gateway confirmed (by notify or by order query).
#[derive(Debug, Clone)]
pub struct Payment<'a> {
    pub out_trade_no: &'a str,
    pub trade_no: Option<&'a str>,
    /// The amount paid; must equal the order's amount exactly.
    pub money: Money,
}

/// What [`settle`] did.
#[derive(Debug, Clone)]
pub enum Settled {
    /// This call moved the order to paid and fulfilled it.
    Fulfilled(Order),
    /// The order was already paid (a repeat): nothing changed.
    AlreadyPaid(Order),
}

impl Settled {
    /// The order as it is after the call.
    pub fn order(&self) -> &Order {
        match self {
            Settled::Fulfilled(o) | Settled::AlreadyPaid(o) => o,
        }
    }
}

/// What fulfilling an order did, stored on the order.
#[derive(Debug, Clone)]
pub struct Fulfilment {
    pub effect: &'static str,
    pub user_package_id: Option<i64>,
    /// Balance value of the payment (top-up credit, package paid value or sold-out credit).
    pub credit_amount: Money,
    pub flag: Option<&'static str>,
    /// Days of package given (package orders).
    pub granted_days: Option<i64>,
}

/// Settings that shape a fulfilment, read once per call.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub mode: SwitchMode,
    /// Balance (USD) per 1.00 paid.
    pub rate: Money,
}

impl Rules {
    /// The rules in force now (settings are cached for a few seconds).
    pub async fn current(env: Env<'_>) -> Result<Rules> {
        let settings = env.settings.get().await?;
        Ok(Rules { mode: SwitchMode::from_setting(&settings.package_switch_mode), rate: settings.credit.topup_rate })
    }
}

/// Marks the order paid and fulfils it in one transaction, or reports a repeat.
pub async fn settle(env: Env<'_>, payment: &Payment<'_>) -> Result<Settled> {
    let rules = Rules::current(env).await?;
    let now = env.now();
    let t = to_micros(now);
    let mut tx = env.db.begin().await?;
    let sql = format!(
        "UPDATE payment_orders SET status = 'paid', trade_no = COALESCE($2, trade_no), paid_at = $3, updated_at = $3, \
           flags = CASE WHEN status = 'expired' THEN \
             (CASE WHEN flags IS NULL OR flags = '' THEN 'late_payment' ELSE flags || ',late_payment' END) \
             ELSE flags END \
         WHERE out_trade_no = $1 AND status IN ('pending', 'expired') AND amount = $4 AND pay_method = 'credit' \
         RETURNING {COLUMNS}"
    );
    let claimed = sqlx::query_as::<_, Order>(&sql)
        .bind(payment.out_trade_no)
        .bind(payment.trade_no)
        .bind(t)
        .bind(payment.money.micros())
        .fetch_optional(tx.conn())
        .await?;
    let Some(order) = claimed else {
        drop(tx);
        let order = super::find(env.db, payment.out_trade_no).await?.ok_or(Error::NotFound("order"))?;
        if order.amount != payment.money.micros() {
            return Err(Error::conflict("amount_mismatch", "the paid amount differs from the order amount"));
        }
        return Ok(Settled::AlreadyPaid(order));
    };
    let done = fulfil_on(tx.conn(), &order, rules, now).await?;
    // The coupon row is locked last, as in balance purchases (package, user, coupon), so
    // the two paths cannot deadlock on PostgreSQL.
    // A package paid back to the balance (sold out, over the limit): its coupon use is not spent.
    let served = done.effect != SOLD_OUT_CREDIT && done.effect != OVER_LIMIT_CREDIT;
    if served && coupons::pricing::claim(tx.conn(), order.id, now).await? == coupons::pricing::Claim::Exhausted {
        // The buyer paid the price we quoted: serve them, and flag the order for the admin.
        coupons::pricing::flag_exhausted(tx.conn(), order.id).await?;
        tracing::warn!(out_trade_no = %order.out_trade_no, "coupon used up before this payment arrived; fulfilled anyway");
    }
    let order = mark_fulfilled(tx.conn(), order.id, &done, now).await?;
    tx.commit().await?;
    if order.has_flag("late_payment") {
        tracing::warn!(out_trade_no = %order.out_trade_no, "payment arrived after the order expired; fulfilled anyway");
    }
    Ok(Settled::Fulfilled(order))
}

/// Records the fulfilment on the order (status `fulfilled`).
pub async fn mark_fulfilled(
    conn: &mut AnyConnection,
    order_id: i64,
    done: &Fulfilment,
    now: DateTime<Utc>,
) -> Result<Order> {
    let sql = format!(
        "UPDATE payment_orders SET status = 'fulfilled', fulfilled_at = $1, paid_at = COALESCE(paid_at, $1), \
           updated_at = $1, user_package_id = $2, fulfilment = $3, credit_amount = $4, granted_days = $7, \
           flags = CASE WHEN $5 IS NULL THEN flags WHEN flags IS NULL OR flags = '' THEN $5 ELSE flags || ',' || $5 END \
         WHERE id = $6 AND status IN ('pending', 'paid') RETURNING {COLUMNS}"
    );
    // Guarded by the expected status (a balance purchase is still `pending`, a gateway
    // order was just claimed `paid`): a fulfilled or refunded order is never fulfilled again.
    sqlx::query_as::<_, Order>(&sql)
        .bind(to_micros(now))
        .bind(done.user_package_id)
        .bind(done.effect)
        .bind(done.credit_amount.micros())
        .bind(done.flag)
        .bind(order_id)
        .bind(done.granted_days)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::conflict("order_not_fulfillable", "the order is no longer pending or paid"))
}

/// Delivers what a paid gateway order bought, on the caller's transaction.
async fn fulfil_on(conn: &mut AnyConnection, order: &Order, rules: Rules, now: DateTime<Utc>) -> Result<Fulfilment> {
    let details =
        EntryDetails { reference: Some(&order.out_trade_no), note: Some(&order.subject), ..Default::default() };
    if order.kind == kind::TOPUP {
        let credit = Money::from_micros(order.credit_amount);
        ledger::change_balance(conn, order.user_id, ledger::kind::TOPUP, credit, Overdraft::Refuse, &details, now)
            .await?;
        return Ok(Fulfilment {
            effect: "topup",
            user_package_id: None,
            credit_amount: credit,
            flag: None,
            granted_days: None,
        });
    }
    let package_id = order.package_id.ok_or_else(|| Error::internal("package order without a package"))?;
    let paid_value = to_balance(order.amount(), rules.rate);
    if !packages::take_stock(conn, package_id, now).await? {
        // Sold out between ordering and paying: the buyer's money goes to their balance.
        let details = EntryDetails {
            reference: Some(&order.out_trade_no),
            note: Some("package sold out when the payment arrived; paid amount credited"),
            ..Default::default()
        };
        ledger::change_balance(conn, order.user_id, ledger::kind::REFUND, paid_value, Overdraft::Refuse, &details, now)
            .await?;
        return Ok(Fulfilment {
            effect: SOLD_OUT_CREDIT,
            user_package_id: None,
            credit_amount: paid_value,
            flag: Some("sold_out_credited"),
            granted_days: None,
        });
    }
    let package = packages::find_on(conn, package_id).await?.ok_or(Error::NotFound("package"))?;
    if !packages::purchase::under_user_limit(conn, &package, order.user_id, Some(order.id)).await? {
        // Several orders were opened and paid later: the ones over the per-user limit are
        // paid back to the balance, like a sold-out one, and the unit goes back to stock.
        packages::return_stock(conn, package_id, now).await?;
        let details = EntryDetails {
            reference: Some(&order.out_trade_no),
            note: Some("per-user limit reached when the payment arrived; paid amount credited"),
            ..Default::default()
        };
        ledger::change_balance(conn, order.user_id, ledger::kind::REFUND, paid_value, Overdraft::Refuse, &details, now)
            .await?;
        return Ok(Fulfilment {
            effect: OVER_LIMIT_CREDIT,
            user_package_id: None,
            credit_amount: paid_value,
            flag: Some("over_limit_credited"),
            granted_days: None,
        });
    }
    let grant = Grant {
        user_id: order.user_id,
        package: &package,
        order_id: Some(order.id),
        paid_amount: paid_value,
        source: "purchase",
        mode: rules.mode,
    };
    let activation = activation::activate(conn, &grant, now).await?;
    // Paid through the gateway, so no balance moves; the allowance does, and every
    // allowance change leaves a ledger row naming its user package.
    let details = EntryDetails { user_package_id: Some(activation.user_package_id), ..details };
    ledger::change_balance(
        conn,
        order.user_id,
        ledger::kind::PACKAGE_PURCHASE,
        Money::ZERO,
        Overdraft::Refuse,
        &details,
        now,
    )
    .await?;
    Ok(Fulfilment {
        effect: activation.effect.as_str(),
        user_package_id: Some(activation.user_package_id),
        credit_amount: paid_value,
        flag: None,
        granted_days: Some(package.duration_days),
    })
}

/// Statuses from which a payment can still be accepted.
pub fn accepts_payment(order_status: &str) -> bool {
    order_status == status::PENDING || order_status == status::EXPIRED
}
