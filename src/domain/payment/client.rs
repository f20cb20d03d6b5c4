//! A small client for the gateway's server-to-server API: order query (reconciliation,
//! admin re-check) and refund, in both the LINUX DO Credit and classic EasyPay forms.

use serde_json::Value;

use crate::domain::payment::epay;
use crate::domain::settings::CreditSettings;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::foundation::redact;

/// What `api.php?act=order` says about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOrder {
    /// False when the gateway does not know the order (`code != 1`).
    pub found: bool,
    pub paid: bool,
    /// `status: 0` said explicitly (a missing or unreadable status is neither paid nor this).
    pub unpaid: bool,
    pub trade_no: Option<String>,
    pub money: Option<Money>,
    pub message: String,
}

/// The gateway's answer to a refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAnswer {
    /// True only for `code: 1`.
    pub ok: bool,
    pub message: String,
}

/// What identifies the order to refund.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub trade_no: Option<&'a str>,
    pub out_trade_no: &'a str,
    pub money: Money,
}

/// Reads an integer that gateways send either as a number or a string.
fn int_field(value: &Value, name: &str) -> Option<i64> {
    match value.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_field(value: &Value, name: &str) -> Option<String> {
    match value.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A transport failure, without the URL (the order query carries `key=`) and with the key
/// scrubbed from whatever else the error says: this text reaches admins and the logs.
fn gateway_error(e: reqwest::Error, credit: &CreditSettings) -> Error {
    let text = redact::scrub(&redact::transport_error(e), &[&credit.key]);
    Error::BadGateway { code: "gateway_unreachable", message: format!("the payment gateway did not answer: {text}") }
}

async fn read_json(response: reqwest::Response, credit: &CreditSettings) -> Result<Value> {
    let text = response.text().await.map_err(|e| gateway_error(e, credit))?;
    serde_json::from_str(&text).map_err(|_| Error::BadGateway {
        code: "gateway_bad_answer",
        // A misconfigured gateway may echo the request back: scrub the key from its answer.
        message: format!(
            "the payment gateway answered something that is not JSON: {}",
            truncate(&redact::scrub(&text, &[&credit.key]))
        ),
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Interprets an order-query answer (pure, unit-tested).
pub fn parse_order_answer(value: &Value) -> GatewayOrder {
    let found = int_field(value, "code") == Some(1);
    GatewayOrder {
        found,
        paid: found && int_field(value, "status") == Some(1),
        unpaid: found && int_field(value, "status") == Some(0),
        trade_no: text_field(value, "trade_no"),
        money: text_field(value, "money").and_then(|m| Money::parse_cents(&m).ok()),
        message: text_field(value, "msg").unwrap_or_default(),
    }
}

/// Interprets a refund answer: only `code: 1` is success.
pub fn parse_refund_answer(value: &Value) -> RefundAnswer {
    RefundAnswer {
        ok: int_field(value, "code") == Some(1),
        message: text_field(value, "msg")
            .or_else(|| text_field(value, "error_msg"))
            .unwrap_or_else(|| "the gateway gave no message".into()),
    }
}

/// `GET {base}/api.php?act=order&pid=..&key=..&out_trade_no=..`.
pub async fn query_order(http: &reqwest::Client, credit: &CreditSettings, out_trade_no: &str) -> Result<GatewayOrder> {
    let response = http
        .get(epay::api_url(&credit.gateway_url))
        .query(&[("act", "order"), ("pid", &credit.pid), ("key", &credit.key), ("out_trade_no", out_trade_no)])
        .timeout(GATEWAY_CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| gateway_error(e, credit))?;
    let mut answer = parse_order_answer(&read_json(response, credit).await?);
    answer.message = redact::scrub(&answer.message, &[&credit.key]);
    Ok(answer)
}

/// Payment gateway calls are short; the shared client has no total timeout (streams).
const GATEWAY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Asks the gateway to refund the full amount of an order, in the configured flavour.
pub async fn refund(
    http: &reqwest::Client,
    credit: &CreditSettings,
    request: &RefundRequest<'_>,
) -> Result<RefundAnswer> {
    let mut form: Vec<(&str, String)> = vec![
        ("pid", credit.pid.clone()),
        ("key", credit.key.clone()),
        ("out_trade_no", request.out_trade_no.to_string()),
        ("money", request.money.format_2dp()),
    ];
    if let Some(trade_no) = request.trade_no {
        form.push(("trade_no", trade_no.to_string()));
    }
    let mut builder = http.post(epay::api_url(&credit.gateway_url));
    if credit.flavour == "classic" {
        builder = builder.query(&[("act", "refund")]);
    }
    let body = serde_urlencoded::to_string(&form).map_err(|e| Error::internal(e.to_string()))?;
    let response = builder
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .timeout(GATEWAY_CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| gateway_error(e, credit))?;
    let mut answer = parse_refund_answer(&read_json(response, credit).await?);
    answer.message = redact::scrub(&answer.message, &[&credit.key]);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_answers_accept_numbers_or_strings() {
        let paid = parse_order_answer(&json!({"code": 1, "status": "1", "trade_no": "G1", "money": "30.00"}));
        assert!(paid.found && paid.paid);
        assert_eq!(paid.money, Some(Money::units(30)));
        let unpaid = parse_order_answer(&json!({"code": "1", "status": 0, "money": "30.00"}));
        assert!(unpaid.found && !unpaid.paid && unpaid.unpaid);
        let missing = parse_order_answer(&json!({"code": -1, "msg": "订单不存在"}));
        assert!(!missing.found && !missing.paid);
        assert_eq!(missing.message, "订单不存在");
    }

    #[test]
    fn only_code_one_is_a_successful_refund() {
        assert!(parse_refund_answer(&json!({"code": 1, "msg": "ok"})).ok);
        let refused = parse_refund_answer(&json!({"code": 0, "msg": "余额不足"}));
        assert!(!refused.ok);
        assert_eq!(refused.message, "余额不足");
        assert!(!parse_refund_answer(&json!({"msg": "?"})).ok);
    }
}
