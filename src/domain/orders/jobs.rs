//! Background work over orders, as public run-once functions the scheduler (and tests)
//! call: expiring unpaid orders and reconciling with the gateway when a notify was lost.

use chrono::Duration;
use serde::Serialize;

use super::fulfil::{self, Payment, Settled};
use super::{Order, COLUMNS};
use crate::domain::billing::Env;
use crate::domain::payment::client;
use crate::domain::settings::CreditSettings;
use crate::foundation::clock::to_micros;
use crate::foundation::error::{Error, Result};

/// Most orders one reconciliation pass looks at (oldest first within the window).
const RECONCILE_BATCH: i64 = 200;

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    pub checked: u64,
    pub fulfilled: u64,
    pub unpaid: u64,
    pub errors: u64,
}

/// What an admin re-check found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The gateway knows the order (`code: 1`); false for a trade it never saw.
    pub gateway_found: bool,
    /// The gateway says the order is paid.
    pub gateway_paid: bool,
    /// This check fulfilled it (false if it was unpaid or already fulfilled).
    pub fulfilled_now: bool,
    pub gateway_message: String,
    /// For an order whose refund was unconfirmed: what the reconcile rule decided now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<super::refund::Decided>,
}

/// Marks pending orders whose lifetime has passed as `expired` (a payment that still
/// arrives for one is fulfilled and flagged). Returns how many changed.
pub async fn expire_once(env: Env<'_>) -> Result<u64> {
    let now = to_micros(env.now());
    let done = sqlx::query(
        "UPDATE payment_orders SET status = 'expired', updated_at = $1 WHERE status = 'pending' AND expires_at <= $1",
    )
    .bind(now)
    .execute(env.db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// Asks the gateway about one order and, if it was paid, settles it through the same
/// path as a notify.
pub async fn check_with_gateway(env: Env<'_>, credit: &CreditSettings, order: &Order) -> Result<CheckOutcome> {
    let answer = client::query_order(env.http, credit, &order.out_trade_no).await?;
    if !answer.paid {
        return Ok(CheckOutcome {
            gateway_found: answer.found,
            gateway_paid: false,
            fulfilled_now: false,
            gateway_message: answer.message,
            refund: None,
        });
    }
    if answer.money != Some(order.amount()) {
        return Err(Error::conflict(
            "amount_mismatch",
            format!(
                "the gateway reports {:?} paid for an order of {}",
                answer.money.map(|m| m.format_2dp()),
                order.amount().format_2dp()
            ),
        ));
    }
    let payment =
        Payment { out_trade_no: &order.out_trade_no, trade_no: answer.trade_no.as_deref(), money: order.amount() };
    let settled = fulfil::settle(env, &payment).await?;
    Ok(CheckOutcome {
        gateway_found: true,
        gateway_paid: true,
        fulfilled_now: matches!(settled, Settled::Fulfilled(_)),
        gateway_message: answer.message,
        refund: None,
    })
}

/// Admin re-check of one order by number.
pub async fn check_order(env: Env<'_>, out_trade_no: &str) -> Result<(CheckOutcome, Order)> {
    let order = super::find(env.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
    if order.pay_method != "credit" {
        return Err(Error::conflict("not_a_gateway_order", "this order was paid from the balance"));
    }
    if matches!(order.status.as_str(), super::status::REFUNDING | super::status::REFUND_CONFIRMED) {
        let decided = super::refund::decide_now(env, &order).await?;
        let order = super::find(env.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
        let outcome = CheckOutcome {
            gateway_found: true,
            gateway_paid: decided == super::refund::Decided::Restored,
            fulfilled_now: false,
            gateway_message: String::new(),
            refund: Some(decided),
        };
        return Ok((outcome, order));
    }
    let settings = env.settings.get().await?;
    super::ensure_payments_usable(&settings.credit)?;
    let outcome = check_with_gateway(env, &settings.credit, &order).await?;
    let order = super::find(env.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
    Ok((outcome, order))
}

/// Queries the gateway for unpaid gateway orders younger than the reconcile window and
/// fulfils the paid ones (a lost notify must not lose a payment).
pub async fn reconcile_once(env: Env<'_>) -> Result<ReconcileReport> {
    let settings = env.settings.get().await?;
    let mut report = ReconcileReport::default();
    if !settings.credit.is_usable() {
        return Ok(report);
    }
    let since = to_micros(env.now() - Duration::minutes(settings.credit.reconcile_window_minutes));
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE pay_method = 'credit' AND status IN ('pending', 'expired') \
           AND created_at >= $1 ORDER BY id LIMIT $2"
    );
    let orders = sqlx::query_as::<_, Order>(&sql).bind(since).bind(RECONCILE_BATCH).fetch_all(env.db.pool()).await?;
    for order in orders {
        report.checked += 1;
        match check_with_gateway(env, &settings.credit, &order).await {
            Ok(o) if o.fulfilled_now => report.fulfilled += 1,
            Ok(o) if !o.gateway_paid => report.unpaid += 1,
            Ok(_) => {}
            Err(e) => {
                report.errors += 1;
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "reconciliation could not check an order");
            }
        }
    }
    Ok(report)
}
