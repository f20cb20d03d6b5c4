//! Admin refunds: the gateway refunds the buyer first; only when it answers `code: 1`
//! is the fulfilment reversed (package ended as `refunded` or shortened, balance
//! debited), in one transaction. A refused refund changes nothing.
//!
//! A refund call that gets no answer (timeout, dropped connection, garbage) may still have
//! refunded the buyer: the order stays `refunding` and [`reconcile_refunds_once`] later
//! asks the gateway's order query. Only explicit answers decide: `status: 0` (the buyer's
//! payment is no longer standing) reverses it; `status: 1` puts it back to `fulfilled`,
//! but only after [`REFUND_RESTORE_AFTER_MINUTES`], so a gateway slow to show its refund
//! is not mistaken for one that refused; anything else leaves it for an admin. A refund
//! the gateway confirmed (`code: 1`) whose reversal then failed is marked
//! `refund_confirmed` and reversed without asking again. The reversal's final update
//! requires one of those two states, so the admin path and the job can never both credit.

use super::{fulfil, status, Order, COLUMNS};
use crate::domain::billing::Env;
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::packages::{self, activation};
use crate::domain::payment::client::{self, RefundRequest};
use crate::foundation::clock::to_micros;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

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

async fn check_refundable(env: Env<'_>, order: &Order) -> Result<()> {
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
            .fetch_one(env.db.pool())
            .await?;
        if balance < take_back.micros() {
            return Err(Error::conflict(
                "insufficient_balance",
                "the user has already spent the credited balance; adjust the balance first",
            ));
        }
    }
    if let Some(up_id) = order.user_package_id {
        let mut conn = env.db.pool().acquire().await?;
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

async fn set_status(env: Env<'_>, order_id: i64, from: &str, to: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE payment_orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
        .bind(to)
        .bind(to_micros(env.now()))
        .bind(order_id)
        .bind(from)
        .execute(env.db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Refunds an order through the gateway (or to the balance for balance purchases) and
/// reverses its fulfilment.
pub async fn refund(env: Env<'_>, out_trade_no: &str, by: RefundBy) -> Result<Order> {
    let order = super::find(env.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
    check_refundable(env, &order).await?;
    // Claim the order so two admins clicking at once cannot refund twice.
    if !set_status(env, order.id, status::FULFILLED, status::REFUNDING).await? {
        return Err(Error::conflict("refund_in_progress", "this order is already being refunded"));
    }
    if order.pay_method == "credit" {
        let settings = env.settings.get().await?;
        let request = RefundRequest {
            trade_no: order.trade_no.as_deref(),
            out_trade_no: &order.out_trade_no,
            money: order.amount(),
        };
        let answer = client::refund(env.http, &settings.credit, &request).await;
        match answer {
            Ok(a) if a.ok => {}
            Ok(a) => {
                set_status(env, order.id, status::REFUNDING, status::FULFILLED).await?;
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
    let result = reverse(env, &order, Some(by.actor_id)).await;
    if let Err(e) = &result {
        tracing::error!(out_trade_no = %order.out_trade_no, error = %e,
            "the gateway refunded but reversing the fulfilment failed; the reconcile job reverses it");
        if order.pay_method == "credit" {
            if let Err(e) = set_status(env, order.id, status::REFUNDING, status::REFUND_CONFIRMED).await {
                tracing::error!(out_trade_no = %order.out_trade_no, error = %e,
                    "cannot mark the confirmed refund; it stays 'refunding' and is decided by the order query");
            }
        }
    }
    result
}

/// How long an order must have been `refunding` before the job asks the gateway about it:
/// well past the refund call's own timeout, so a refund still in flight is left alone.
pub const REFUND_CHECK_AFTER_MINUTES: i64 = 2;

/// How long an unconfirmed refund must have waited before a gateway that still reports
/// the order paid is believed (and the order becomes refundable again).
pub const REFUND_RESTORE_AFTER_MINUTES: i64 = 30;

/// What one pass over unconfirmed refunds did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefundReconcileReport {
    pub checked: u64,
    /// The gateway no longer reports them paid: reversed now.
    pub refunded: u64,
    /// The gateway still reports them paid: back to `fulfilled` (they can be refunded again).
    pub restored: u64,
    /// Still undecided: paid but not for long enough, or no explicit status (for an admin).
    pub undecided: u64,
    pub errors: u64,
}

/// Settles gateway orders left `refunding` (an unanswered refund call, or a reversal that
/// failed after the gateway refunded) by asking the gateway's order query.
pub async fn reconcile_refunds_once(env: Env<'_>) -> Result<RefundReconcileReport> {
    let settings = env.settings.get().await?;
    let mut report = RefundReconcileReport::default();
    if !settings.credit.is_usable() {
        return Ok(report);
    }
    let before = to_micros(env.now() - chrono::Duration::minutes(REFUND_CHECK_AFTER_MINUTES));
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_orders WHERE pay_method = 'credit' \
           AND status IN ('refunding', 'refund_confirmed') AND updated_at <= $1 ORDER BY id LIMIT 200"
    );
    let orders = sqlx::query_as::<_, Order>(&sql).bind(before).fetch_all(env.db.pool()).await?;
    for order in orders {
        report.checked += 1;
        match settle_unconfirmed(env, &settings.credit, &order).await {
            Ok(Decided::Reversed) => report.refunded += 1,
            Ok(Decided::Restored) => report.restored += 1,
            Ok(Decided::Undecided) => report.undecided += 1,
            Err(e) => {
                report.errors += 1;
                tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "could not settle an unconfirmed refund");
            }
        }
    }
    Ok(report)
}

/// What the reconcile rule did with one unconfirmed refund (the job, or an admin's
/// re-check of the order, which applies the same rule at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decided {
    /// The gateway says the payment is undone: the fulfilment was reversed.
    Reversed,
    /// The gateway still holds the payment, long enough after the refund: fulfilled again.
    Restored,
    /// No explicit answer yet, or paid for too short a time to believe it: left as it is.
    Undecided,
}

/// An admin's re-check of a `refunding` or `refund_confirmed` order: the reconcile rule
/// applied now instead of at the job's next pass (same code, same guards: the reversal's
/// update is conditional on the status, so a job running at the same moment cannot
/// reverse it twice).
pub async fn decide_now(env: Env<'_>, order: &Order) -> Result<Decided> {
    let settings = env.settings.get().await?;
    super::ensure_payments_usable(&settings.credit)?;
    settle_unconfirmed(env, &settings.credit, order).await
}

/// The rule for an unanswered refund, from the order query's explicit answer and how long
/// the order has waited (pure, unit-tested).
fn decide_unanswered(answer: &client::GatewayOrder, waited: chrono::Duration) -> Decided {
    if answer.unpaid {
        Decided::Reversed
    } else if answer.paid && waited >= chrono::Duration::minutes(REFUND_RESTORE_AFTER_MINUTES) {
        Decided::Restored
    } else {
        Decided::Undecided
    }
}

async fn settle_unconfirmed(
    env: Env<'_>,
    credit: &crate::domain::settings::CreditSettings,
    order: &Order,
) -> Result<Decided> {
    if order.status == status::REFUND_CONFIRMED {
        reverse(env, order, None).await?;
        tracing::info!(out_trade_no = %order.out_trade_no, "a confirmed refund's reversal is done");
        return Ok(Decided::Reversed);
    }
    let answer = client::query_order(env.http, credit, &order.out_trade_no).await?;
    if !answer.found {
        return Err(Error::conflict(
            "gateway_order_unknown",
            format!("the gateway does not know it: {}", answer.message),
        ));
    }
    let waited = env.now() - crate::foundation::clock::from_micros(order.updated_at);
    let decided = decide_unanswered(&answer, waited);
    match decided {
        Decided::Reversed => {
            reverse(env, order, None).await?;
            tracing::info!(out_trade_no = %order.out_trade_no, "the gateway reports the payment undone; the fulfilment is reversed");
        }
        Decided::Restored => {
            set_status(env, order.id, status::REFUNDING, status::FULFILLED).await?;
            tracing::info!(out_trade_no = %order.out_trade_no, "the gateway still reports it paid; the order is fulfilled again");
        }
        Decided::Undecided => {
            tracing::warn!(out_trade_no = %order.out_trade_no, paid = answer.paid,
                "an unconfirmed refund is not decided yet (no explicit status, or paid for too short a time)");
        }
    }
    Ok(decided)
}

/// Reverses the fulfilment of a `refunding` order the gateway refunded (`actor_id`: the
/// admin who asked, `None` for the reconcile job).
async fn reverse(env: Env<'_>, order: &Order, actor_id: Option<i64>) -> Result<Order> {
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let note = format!("refund of order {}", order.out_trade_no);
    let details = EntryDetails {
        reference: Some(&order.out_trade_no),
        note: Some(&note),
        actor_id,
        user_package_id: order.user_package_id,
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
    } else if order.user_package_id.is_some() && !take_back.is_positive() {
        // Paid online, the money went back through the gateway: no balance moves, but
        // the package (or its extension) is taken back, and every allowance change
        // leaves a ledger row naming its user package.
        ledger::change_balance(
            tx.conn(),
            order.user_id,
            ledger::kind::REFUND,
            Money::ZERO,
            Overdraft::Allow,
            &details,
            now,
        )
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
         WHERE id = $2 AND status IN ('refunding', 'refund_confirmed') RETURNING {COLUMNS}"
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
    crate::domain::billing::user_changed(env, order.user_id).await;
    Ok(refunded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: serde_json::Value) -> client::GatewayOrder {
        client::parse_order_answer(&body)
    }

    #[test]
    fn only_explicit_statuses_decide_an_unanswered_refund() {
        let minutes = chrono::Duration::minutes;
        let unpaid = answer(serde_json::json!({"code": 1, "status": 0}));
        let paid = answer(serde_json::json!({"code": 1, "status": 1}));
        let silent = answer(serde_json::json!({"code": 1}));
        let odd = answer(serde_json::json!({"code": 1, "status": 3}));
        assert_eq!(decide_unanswered(&unpaid, minutes(2)), Decided::Reversed);
        assert_eq!(decide_unanswered(&paid, minutes(2)), Decided::Undecided, "a refund may show late");
        assert_eq!(decide_unanswered(&paid, minutes(REFUND_RESTORE_AFTER_MINUTES)), Decided::Restored);
        assert_eq!(decide_unanswered(&silent, minutes(600)), Decided::Undecided);
        assert_eq!(decide_unanswered(&odd, minutes(600)), Decided::Undecided);
    }
}
