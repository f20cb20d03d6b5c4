//! Admin refunds: the gateway refunds the buyer first; only when it answers `code: 1`
//! is the fulfilment reversed (package ended as `refunded` or shortened, balance
//! debited), in one transaction. A refused refund changes nothing.
//!
//! A refund call that gets no answer (timeout, dropped connection, garbage) may still have
//! refunded the buyer: the order stays `refunding` and [`reconcile_refunds_once`] later
//! asks the gateway's order query. An order the gateway no longer reports as paid was
//! refunded and is reversed; one it still reports paid goes back to `fulfilled`. The
//! reversal's final update requires `status = 'refunding'`, so the admin path and the job
//! can never both credit.

use super::{fulfil, status, Order, COLUMNS};
use crate::app::AppState;
use crate::clock::to_micros;
use crate::error::{Error, Result};
use crate::ledger::{self, EntryDetails, Overdraft};
use crate::money::Money;
use crate::packages::{self, activation};
use crate::payment::client::{self, RefundRequest};

/// Who asks for the refund (for the ledger and the audit trail).
#[derive(Debug, Clone, Copy)]
pub struct RefundBy {
    pub actor_id: i64,
}

/// Balance the reversal takes back (top-ups, sold-out credits); zero for packages.
fn balance_to_take_back(order: &Order) -> Money {
    match order.fulfilment.as_deref() {
        Some("topup") | Some(fulfil::SOLD_OUT_CREDIT) | Some(fulfil::OVER_LIMIT_CREDIT) => {
            Money::from_micros(order.credit_amount)
        }
        _ => Money::ZERO,
    }
}

async fn check_refundable(state: &AppState, order: &Order) -> Result<()> {
    if order.status != status::FULFILLED {
        return Err(Error::conflict(
            "not_refundable",
            format!("only fulfilled orders can be refunded (this one is {})", order.status),
        ));
    }
    let take_back = balance_to_take_back(order);
    if take_back.is_positive() {
        let balance: i64 = sqlx::query_scalar("SELECT balance FROM users WHERE id = $1")
            .bind(order.user_id)
            .fetch_one(state.db.pool())
            .await?;
        if balance < take_back.micros() {
            return Err(Error::conflict(
                "insufficient_balance",
                "the user has already spent the credited balance; adjust the balance first",
            ));
        }
    }
    if let Some(up_id) = order.user_package_id {
        let mut conn = state.db.pool().acquire().await?;
        let later = later_extensions(&mut conn, order).await?;
        if !later.is_empty() {
            return Err(Error::conflict(
                "later_extensions_first",
                format!(
                    "orders {} extended the package this order started; refund them first (this refund would end their days too)",
                    later.join(", ")
                ),
            ));
        }
        let row = activation::find_on(&mut conn, up_id).await?.ok_or(Error::NotFound("user package"))?;
        if row.status == activation::status::ENDED || row.status == activation::status::REFUNDED {
            return Err(Error::conflict(
                "package_already_ended",
                "the package was already ended or refunded (its unused value may have been credited)",
            ));
        }
    }
    Ok(())
}

/// Other live orders that extended the package row this order created (none when the
/// order itself was an extension: taking back its days leaves the rest alone).
async fn later_extensions(conn: &mut sqlx::AnyConnection, order: &Order) -> Result<Vec<String>> {
    let Some(up_id) = order.user_package_id else { return Ok(Vec::new()) };
    if order.fulfilment.as_deref() == Some("extended") {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT out_trade_no FROM payment_orders WHERE user_package_id = $1 AND id <> $2 \
           AND status IN ('paid', 'fulfilled', 'refunding') ORDER BY id",
    )
    .bind(up_id)
    .bind(order.id)
    .fetch_all(conn)
    .await?)
}

async fn set_status(state: &AppState, order_id: i64, from: &str, to: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE payment_orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
        .bind(to)
        .bind(to_micros(state.now()))
        .bind(order_id)
        .bind(from)
        .execute(state.db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Refunds an order through the gateway (or to the balance for balance purchases) and
/// reverses its fulfilment.
pub async fn refund(state: &AppState, out_trade_no: &str, by: RefundBy) -> Result<Order> {
    let order = super::find(&state.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
    check_refundable(state, &order).await?;
    // Claim the order so two admins clicking at once cannot refund twice.
    if !set_status(state, order.id, status::FULFILLED, status::REFUNDING).await? {
        return Err(Error::conflict("refund_in_progress", "this order is already being refunded"));
    }
    if order.pay_method == "credit" {
        let settings = state.settings.get().await?;
        let request = RefundRequest {
            trade_no: order.trade_no.as_deref(),
            out_trade_no: &order.out_trade_no,
            money: order.amount(),
        };
        let answer = client::refund(&state.http, &settings.credit, &request).await;
        match answer {
            Ok(a) if a.ok => {}
            Ok(a) => {
                set_status(state, order.id, status::REFUNDING, status::FULFILLED).await?;
                return Err(Error::conflict(
                    "refund_refused",
                    format!("the gateway refused the refund: {}", a.message),
                ));
            }
            Err(e) => {
                // No answer is not a refusal: the gateway may have refunded.
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e,
                    "the refund call got no answer; the order stays 'refunding' until the gateway is asked");
                return Err(Error::BadGateway {
                    code: "refund_unconfirmed",
                    message: format!(
                        "{e}; the order stays 'refunding' until the reconcile job has asked the gateway whether it refunded"
                    ),
                });
            }
        }
    }
    let result = reverse(state, &order, Some(by.actor_id)).await;
    if let Err(e) = &result {
        tracing::error!(out_trade_no = %order.out_trade_no, error = %e,
            "the gateway refunded but reversing the fulfilment failed; the order stays 'refunding'");
    }
    result
}

/// How long an order must have been `refunding` before the job asks the gateway about it:
/// well past the refund call's own timeout, so a refund still in flight is left alone.
pub const REFUND_CHECK_AFTER_MINUTES: i64 = 2;

/// What one pass over unconfirmed refunds did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefundReconcileReport {
    pub checked: u64,
    /// The gateway no longer reports them paid: reversed now.
    pub refunded: u64,
    /// The gateway still reports them paid: back to `fulfilled` (they can be refunded again).
    pub restored: u64,
    pub errors: u64,
}

/// Settles gateway orders left `refunding` (an unanswered refund call, or a reversal that
/// failed after the gateway refunded) by asking the gateway's order query.
pub async fn reconcile_refunds_once(state: &AppState) -> Result<RefundReconcileReport> {
    let settings = state.settings.get().await?;
    let mut report = RefundReconcileReport::default();
    if !settings.credit.is_usable() {
        return Ok(report);
    }
    let before = to_micros(state.now() - chrono::Duration::minutes(REFUND_CHECK_AFTER_MINUTES));
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE pay_method = 'credit' AND status = 'refunding' \
           AND updated_at <= $1 ORDER BY id LIMIT 200"
    );
    let orders = sqlx::query_as::<_, Order>(&sql).bind(before).fetch_all(state.db.pool()).await?;
    for order in orders {
        report.checked += 1;
        match settle_unconfirmed(state, &settings.credit, &order).await {
            Ok(true) => report.refunded += 1,
            Ok(false) => report.restored += 1,
            Err(e) => {
                report.errors += 1;
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "could not settle an unconfirmed refund");
            }
        }
    }
    Ok(report)
}

/// One unconfirmed refund: true when it was reversed, false when it went back to `fulfilled`.
async fn settle_unconfirmed(state: &AppState, credit: &crate::settings::CreditSettings, order: &Order) -> Result<bool> {
    let answer = client::query_order(&state.http, credit, &order.out_trade_no).await?;
    if !answer.found {
        return Err(Error::conflict(
            "gateway_order_unknown",
            format!("the gateway does not know it: {}", answer.message),
        ));
    }
    if answer.paid {
        set_status(state, order.id, status::REFUNDING, status::FULFILLED).await?;
        tracing::info!(out_trade_no = %order.out_trade_no, "the gateway did not refund; the order is fulfilled again");
        return Ok(false);
    }
    // A paid order the gateway no longer reports as paid was refunded by it.
    reverse(state, order, None).await?;
    tracing::info!(out_trade_no = %order.out_trade_no, "the gateway had refunded; the fulfilment is reversed");
    Ok(true)
}

/// Reverses the fulfilment of a `refunding` order the gateway refunded (`actor_id`: the
/// admin who asked, `None` for the reconcile job).
async fn reverse(state: &AppState, order: &Order, actor_id: Option<i64>) -> Result<Order> {
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let note = format!("refund of order {}", order.out_trade_no);
    let details =
        EntryDetails { reference: Some(&order.out_trade_no), note: Some(&note), actor_id, ..Default::default() };
    // Packages before users, the lock order every other money path uses.
    if let (Some(_), Some(package_id)) = (order.user_package_id, order.package_id) {
        packages::return_stock(tx.conn(), package_id, now).await?;
    }
    let take_back = balance_to_take_back(order);
    if take_back.is_positive() {
        // The buyer has their money back from the gateway: take the credit back even if
        // they spent some since the check (the balance may go negative, and is recorded).
        ledger::change_balance(
            tx.conn(),
            order.user_id,
            ledger::kind::REFUND,
            Money::ZERO.saturating_sub(take_back),
            Overdraft::Allow,
            &details,
            now,
        )
        .await?;
    }
    if order.pay_method == "balance" {
        let back = Money::from_micros(order.credit_amount);
        ledger::change_balance(tx.conn(), order.user_id, ledger::kind::REFUND, back, Overdraft::Refuse, &details, now)
            .await?;
    }
    if let (Some(up_id), Some(package_id)) = (order.user_package_id, order.package_id) {
        let row = activation::find_on(tx.conn(), up_id).await?.ok_or(Error::NotFound("user package"))?;
        // An extension paid between the check and now also keeps its days: take back
        // only this order's days instead of ending the row.
        let extended_since = !later_extensions(tx.conn(), order).await?.is_empty();
        if order.fulfilment.as_deref() == Some("extended") || extended_since {
            let days = match order.granted_days {
                Some(d) => d,
                None => packages::find_on(tx.conn(), package_id).await?.map(|p| p.duration_days).unwrap_or(0),
            };
            activation::shorten(tx.conn(), &row, days, Money::from_micros(order.credit_amount), now).await?;
        } else {
            activation::terminate(tx.conn(), &row, activation::status::REFUNDED, now).await?;
        }
    }
    let sql = format!(
        "UPDATE payment_orders SET status = 'refunded', refunded_at = $1, updated_at = $1 \
         WHERE id = $2 AND status = 'refunding' RETURNING {COLUMNS}"
    );
    // Guarded by the expected status even though the claim above already holds it: if
    // anything moved the order meanwhile, the whole reversal rolls back.
    let refunded = sqlx::query_as::<_, Order>(&sql)
        .bind(to_micros(now))
        .bind(order.id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Error::conflict("refund_in_progress", "the order left 'refunding' during its refund"))?;
    tx.commit().await?;
    crate::billing::user_changed(state, order.user_id).await;
    Ok(refunded)
}
