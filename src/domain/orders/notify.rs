//! The asynchronous notify (`GET`/`POST /api/payment/credit/notify`): checks in the order
//! `epay.md` prescribes, then settles through [`crate::domain::orders::fulfil::settle`]. Every
//! attempt is logged in `payment_notifies` with its outcome: its known fields only,
//! truncated, kept [`RETENTION_DAYS`] days. The route caps the size of a notify and its
//! rate per client address.

use crate::domain::auth::throttle::IpThrottle;
use crate::domain::billing::Env;
use crate::domain::orders::{self, fulfil};
use crate::domain::payment::epay::{self, Params, TRADE_SUCCESS};
use crate::foundation::clock::to_micros;

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

/// Handles one notify and logs it; a refused one spends its sender's budget in `throttle`.
pub async fn handle(env: Env<'_>, throttle: &IpThrottle, params: &Params, remote_addr: Option<String>) -> NotifyReply {
    let reply = process(env, params).await;
    // Only refused notifies spend the sender's budget: a genuine one (signed with our key)
    // is always processed, however many the gateway sends; a flood of forged ones from one
    // address is answered 429 and no longer stored.
    if !reply.ok && !throttle.allow(remote_addr.as_deref()).await {
        metrics::counter!("gateway_payment_notifies_total", "outcome" => RATE_LIMITED).increment(1);
        tracing::warn!(client = ?remote_addr, "refused payment notifies over the per-address limit; not stored");
        return NotifyReply { ok: false, internal: false, outcome: RATE_LIMITED.into() };
    }
    let outcome_label = if reply.outcome.starts_with("error") { "error".to_string() } else { reply.outcome.clone() };
    metrics::counter!("gateway_payment_notifies_total", "outcome" => outcome_label).increment(1);
    if !reply.ok {
        tracing::warn!(outcome = %reply.outcome, out_trade_no = ?params.get("out_trade_no"), "payment notify refused");
    }
    if let Err(e) = log(env, params, &reply, remote_addr).await {
        tracing::error!(error = %e, "could not log a payment notify");
    }
    reply
}

async fn process(env: Env<'_>, params: &Params) -> NotifyReply {
    let settings = match env.settings.get().await {
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
    let order = match orders::find(env.db, &notify.out_trade_no).await {
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
    match fulfil::settle(env, &payment).await {
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

/// The fields of a notify kept in `payment_notifies` (the protocol's own); anything else a
/// sender adds is counted in `_extra_fields`, not stored, so nobody can grow the table
/// with unauthenticated requests.
const KEPT_FIELDS: &[&str] =
    &["pid", "trade_no", "out_trade_no", "type", "name", "money", "trade_status", "param", "sign", "sign_type"];
/// Characters kept of each field (order numbers are 32, names short).
const KEPT_CHARS: usize = 64;
/// Refused notifies one client address may send per minute, and the burst: a gateway
/// sends valid ones (never limited); a forger's flood is stopped.
pub const PER_IP_PER_MINUTE: u32 = 120;
pub const PER_IP_BURST: u32 = 100;
/// The outcome of a refused notify over its sender's budget (answered 429, not stored).
pub const RATE_LIMITED: &str = "rate_limited";
/// Largest notify accepted (query string or body); real ones are under 1 KiB.
pub const MAX_NOTIFY_BYTES: usize = 8 * 1024;

/// How long raw notifies are kept ([`prune_once`]); orders keep their last one.
pub const RETENTION_DAYS: i64 = 90;

/// What is stored of a notify: the known fields, each truncated (pure, fuzzed).
pub fn stored_params(params: &Params) -> Params {
    let mut kept: Params = params
        .iter()
        .filter(|(k, _)| KEPT_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.chars().take(KEPT_CHARS).collect()))
        .collect();
    let extra = params.keys().filter(|k| !KEPT_FIELDS.contains(&k.as_str())).count();
    if extra > 0 {
        kept.insert("_extra_fields".into(), extra.to_string());
    }
    kept
}

/// Deletes raw notifies older than [`RETENTION_DAYS`]; returns how many.
pub async fn prune_once(env: Env<'_>) -> crate::foundation::error::Result<u64> {
    let cutoff = to_micros(env.now() - chrono::Duration::days(RETENTION_DAYS));
    let done =
        sqlx::query("DELETE FROM payment_notifies WHERE created_at < $1").bind(cutoff).execute(env.db.pool()).await?;
    Ok(done.rows_affected())
}

async fn log(
    env: Env<'_>,
    params: &Params,
    reply: &NotifyReply,
    remote_addr: Option<String>,
) -> crate::foundation::error::Result<()> {
    let json = serde_json::to_string(&stored_params(params)).unwrap_or_default();
    let now = to_micros(env.now());
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
    .execute(env.db.pool())
    .await?;
    if reply.outcome != "bad_signature" {
        if let Some(otn) = &out_trade_no {
            sqlx::query("UPDATE payment_orders SET last_notify = $1 WHERE out_trade_no = $2")
                .bind(&json)
                .bind(otn)
                .execute(env.db.pool())
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_fields_are_stored_and_truncated() {
        let mut p = Params::new();
        p.insert("out_trade_no".into(), "T".repeat(500));
        p.insert("junk".into(), "x".repeat(5000));
        p.insert("more".into(), String::new());
        let kept = stored_params(&p);
        assert_eq!(kept["out_trade_no"].len(), KEPT_CHARS);
        assert_eq!(kept["_extra_fields"], "2");
        assert!(!kept.contains_key("junk"));
    }
}
