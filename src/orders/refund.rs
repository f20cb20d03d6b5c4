//! Admin refunds: the gateway refunds the buyer first; only when it answers `code: 1`
//! is the fulfilment reversed (package ended as `refunded` or shortened, balance
//! debited), in one transaction. A refused refund changes nothing.

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
        let refused = match answer {
            Ok(a) if a.ok => None,
            Ok(a) => Some(Error::conflict("refund_refused", format!("the gateway refused the refund: {}", a.message))),
            Err(e) => Some(e),
        };
        if let Some(err) = refused {
            set_status(state, order.id, status::REFUNDING, status::FULFILLED).await?;
            return Err(err);
        }
    }
    let result = reverse(state, &order, by).await;
    if let Err(e) = &result {
        tracing::error!(out_trade_no = %order.out_trade_no, error = %e,
            "the gateway refunded but reversing the fulfilment failed; the order stays 'refunding'");
    }
    result
}

async fn reverse(state: &AppState, order: &Order, by: RefundBy) -> Result<Order> {
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let note = format!("refund of order {}", order.out_trade_no);
    let details = EntryDetails {
        reference: Some(&order.out_trade_no),
        note: Some(&note),
        actor_id: Some(by.actor_id),
        ..Default::default()
    };
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
