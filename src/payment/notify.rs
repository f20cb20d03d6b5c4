//! The asynchronous notify (`GET`/`POST /api/payment/credit/notify`): checks in the order
//! `epay.md` prescribes, then settles through [`crate::orders::fulfil::settle`]. Every
//! attempt is logged in `payment_notifies` with its outcome.

use super::epay::{self, Params, TRADE_SUCCESS};
use crate::app::AppState;
use crate::clock::to_micros;
use crate::orders::{self, fulfil};

/// What to answer the gateway, and what the log records.
#[derive(Debug, Clone)]
pub struct NotifyReply {
    /// Answer `success` (also for repeats); anything else makes the gateway retry.
    pub ok: bool,
    /// Whether the refusal is the sender's fault (4xx) or ours (5xx).
    pub internal: bool,
    pub outcome: String,
}

impl NotifyReply {
    fn refused(outcome: impl Into<String>) -> Self {
        NotifyReply { ok: false, internal: false, outcome: outcome.into() }
    }
}

/// Handles one notify and logs it.
pub async fn handle(state: &AppState, params: &Params, remote_addr: Option<String>) -> NotifyReply {
    let reply = process(state, params).await;
    let outcome_label = if reply.outcome.starts_with("error") { "error".to_string() } else { reply.outcome.clone() };
    metrics::counter!("gateway_payment_notifies_total", "outcome" => outcome_label).increment(1);
    if !reply.ok {
        tracing::warn!(outcome = %reply.outcome, out_trade_no = ?params.get("out_trade_no"), "payment notify refused");
    }
    if let Err(e) = log(state, params, &reply, remote_addr).await {
        tracing::error!(error = %e, "could not log a payment notify");
    }
    reply
}

async fn process(state: &AppState, params: &Params) -> NotifyReply {
    let settings = match state.settings.get().await {
        Ok(s) => s,
        Err(e) => return NotifyReply { ok: false, internal: true, outcome: format!("error: {e}") },
    };
    let credit = &settings.credit;
    if credit.key.is_empty() || credit.pid.is_empty() {
        return NotifyReply::refused("not_configured");
    }
    if !epay::verify(params, &credit.key) {
        return NotifyReply::refused("bad_signature");
    }
    let notify = match epay::parse_notify(params) {
        Ok(n) => n,
        Err(e) => return NotifyReply::refused(format!("malformed: {e}")),
    };
    if notify.pid != credit.pid {
        return NotifyReply::refused("wrong_pid");
    }
    let order = match orders::find(&state.db, &notify.out_trade_no).await {
        Ok(Some(o)) => o,
        Ok(None) => return NotifyReply::refused("unknown_order"),
        Err(e) => return NotifyReply { ok: false, internal: true, outcome: format!("error: {e}") },
    };
    if notify.money != order.amount() {
        return NotifyReply::refused("amount_mismatch");
    }
    if notify.trade_status != TRADE_SUCCESS {
        return NotifyReply::refused(format!("not_success:{}", notify.trade_status));
    }
    let payment =
        fulfil::Payment { out_trade_no: &order.out_trade_no, trade_no: Some(&notify.trade_no), money: notify.money };
    match fulfil::settle(state, &payment).await {
        Ok(fulfil::Settled::Fulfilled(o)) if o.has_flag("late_payment") => ok("fulfilled_late"),
        Ok(fulfil::Settled::Fulfilled(_)) => ok("fulfilled"),
        Ok(fulfil::Settled::AlreadyPaid(o)) if fulfil::accepts_payment(&o.status) || o.pay_method != "credit" => {
            NotifyReply::refused(format!("not_payable:{}", o.status))
        }
        Ok(fulfil::Settled::AlreadyPaid(_)) => ok("duplicate"),
        Err(e) => {
            tracing::error!(error = %e, out_trade_no = %order.out_trade_no, "fulfilment failed; the gateway will retry");
            NotifyReply { ok: false, internal: true, outcome: format!("error: {}", e.public_message()) }
        }
    }
}

fn ok(outcome: &str) -> NotifyReply {
    NotifyReply { ok: true, internal: false, outcome: outcome.into() }
}

async fn log(
    state: &AppState,
    params: &Params,
    reply: &NotifyReply,
    remote_addr: Option<String>,
) -> crate::error::Result<()> {
    let json = serde_json::to_string(params).unwrap_or_default();
    let now = to_micros(state.now());
    let out_trade_no =
        params.get("out_trade_no").filter(|v| !v.is_empty()).map(|v| v.chars().take(64).collect::<String>());
    sqlx::query(
        "INSERT INTO payment_notifies (out_trade_no, outcome, params, remote_addr, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(out_trade_no.as_deref())
    .bind(&reply.outcome)
    .bind(&json)
    .bind(remote_addr.as_deref())
    .bind(now)
    .execute(state.db.pool())
    .await?;
    if reply.outcome != "bad_signature" {
        if let Some(otn) = &out_trade_no {
            sqlx::query("UPDATE payment_orders SET last_notify = $1 WHERE out_trade_no = $2")
                .bind(&json)
                .bind(otn)
                .execute(state.db.pool())
                .await?;
        }
    }
    Ok(())
}
