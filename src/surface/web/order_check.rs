//! What the admin's "Re-check" of a gateway order found, said honestly: green only when
//! the gateway says paid, amber for an unpaid (cancelled, abandoned or expired) trade with
//! the order's own state next to it, red for a trade the gateway does not know. The
//! gateway's `msg` is shown only when it explains something ("succ" on an unpaid trade
//! only says the query worked).

use super::Ctx;
use crate::domain::orders::jobs::CheckOutcome;
use crate::domain::orders::refund::Decided;
use crate::domain::orders::status;

/// The alert an admin sees after a re-check.
pub struct CheckNotice {
    /// `ok`, `warn` or `bad`: the alert's colour class.
    pub tone: &'static str,
    pub text: String,
}

/// The label of an order's state, as the order badges say it.
pub fn status_label(ctx: &Ctx, order_status: &str) -> String {
    let key = match order_status {
        status::PENDING => "order.status_pending",
        status::PAID => "order.status_paid",
        status::FULFILLED => "order.status_fulfilled",
        status::EXPIRED => "order.status_expired",
        status::REFUNDING => "order.status_refunding",
        status::REFUND_CONFIRMED => "order.status_refund_confirmed",
        status::REFUNDED => "order.status_refunded",
        other => return other.to_string(),
    };
    ctx.t(key).to_string()
}

/// The notice for order `otn`, now in state `order_status`, after the check `found`.
pub fn notice(ctx: &Ctx, otn: &str, found: &CheckOutcome, order_status: &str) -> CheckNotice {
    let state = ctx.t("orders.check_state").replace("{status}", &status_label(ctx, order_status));
    if let Some(decided) = found.refund {
        let (tone, key) = match decided {
            Decided::Reversed => ("ok", "orders.check_refund_reversed"),
            Decided::Restored => ("warn", "orders.check_refund_restored"),
            Decided::Undecided => ("warn", "orders.check_refund_undecided"),
        };
        return CheckNotice { tone, text: format!("{otn}: {} · {state}", ctx.t(key)) };
    }
    if found.fulfilled_now {
        return CheckNotice { tone: "ok", text: format!("{otn}: {} · {state}", ctx.t("orders.check_fulfilled")) };
    }
    if found.gateway_paid {
        return CheckNotice { tone: "ok", text: format!("{otn}: {} · {state}", ctx.t("orders.check_paid")) };
    }
    if !found.gateway_found {
        let said = ctx.t("orders.check_gateway_said").replace("{message}", &found.gateway_message);
        return CheckNotice {
            tone: "bad",
            text: format!("{otn}: {} ({said}) · {state}", ctx.t("orders.check_unknown")),
        };
    }
    CheckNotice { tone: "warn", text: format!("{otn}: {} · {state}", ctx.t("orders.check_unpaid")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surface::web::i18n::Lang;

    fn outcome(found: bool, paid: bool, fulfilled_now: bool) -> CheckOutcome {
        CheckOutcome {
            gateway_found: found,
            gateway_paid: paid,
            fulfilled_now,
            gateway_message: if found { "succ".into() } else { "no such order".into() },
            refund: None,
        }
    }

    #[test]
    fn an_unpaid_trade_is_amber_with_the_orders_state_and_no_succ() {
        let ctx = Ctx::bare(Lang::En);
        let n = notice(&ctx, "cg-1", &outcome(true, false, false), "expired");
        assert_eq!(n.tone, "warn");
        assert_eq!(n.text, "cg-1: not paid at the gateway · order: Expired");
        assert!(!n.text.contains("succ"));
        let n = notice(&ctx, "cg-1", &outcome(true, false, false), "pending");
        assert!(n.text.ends_with("order: Awaiting payment"));
        // Every state an order can be in has a label of its own, never the raw word.
        for s in [status::REFUNDING, status::REFUND_CONFIRMED, status::REFUNDED, status::PAID] {
            for lang in [Lang::En, Lang::Zh] {
                assert_ne!(status_label(&Ctx::bare(lang), s), s, "{s} in {lang:?}");
            }
        }
    }

    #[test]
    fn a_rechecked_refund_says_what_the_rule_decided() {
        let ctx = Ctx::bare(Lang::En);
        let mut found = outcome(true, false, false);
        found.refund = Some(Decided::Reversed);
        assert_eq!(notice(&ctx, "cg-1", &found, "refunded").tone, "ok");
        found.refund = Some(Decided::Undecided);
        let n = notice(&ctx, "cg-1", &found, "refunding");
        assert_eq!(n.tone, "warn");
        assert!(n.text.contains("not decided"), "{}", n.text);
        found.refund = Some(Decided::Restored);
        assert_eq!(notice(&ctx, "cg-1", &found, "fulfilled").tone, "warn");
    }

    #[test]
    fn paid_is_green_and_an_unknown_trade_red_with_the_gateways_reason() {
        let ctx = Ctx::bare(Lang::En);
        assert_eq!(notice(&ctx, "cg-1", &outcome(true, true, true), "fulfilled").tone, "ok");
        assert_eq!(notice(&ctx, "cg-1", &outcome(true, true, false), "fulfilled").tone, "ok");
        let n = notice(&ctx, "cg-1", &outcome(false, false, false), "pending");
        assert_eq!(n.tone, "bad");
        assert!(n.text.contains("no such order"), "{}", n.text);
        let zh = Ctx::bare(Lang::Zh);
        assert!(notice(&zh, "cg-1", &outcome(true, false, false), "expired").text.contains("已过期"));
    }
}
