//! The EasyPay (易支付) protocol as LINUX DO Credit speaks it: MD5 signing and
//! verification, the parameters of `submit.php`, and reading a notify.
//!
//! One implementation serves both sides: the merchant (orders, notify) and the
//! built-in sandbox gateway, so a signing bug cannot hide behind a matching bug.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::foundation::money::Money;

/// Parameters as received or sent, sorted by name (the order signing needs).
pub type Params = BTreeMap<String, String>;

/// The string that is hashed: non-empty params except `sign`/`sign_type`, sorted,
/// joined as `k=v&...` with raw (not URL-encoded) values, then the key appended.
pub fn signing_payload(params: &Params, key: &str) -> String {
    let mut payload = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && k.as_str() != "sign" && k.as_str() != "sign_type")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    payload.push_str(key);
    payload
}

/// Lowercase hex MD5 signature of `params` under the merchant `key`.
pub fn sign(params: &Params, key: &str) -> String {
    hex::encode(Md5::digest(signing_payload(params, key).as_bytes()))
}

/// Checks the `sign` parameter in constant time; false when it is absent.
pub fn verify(params: &Params, key: &str) -> bool {
    let Some(presented) = params.get("sign") else {
        return false;
    };
    let expected = sign(params, key);
    expected.as_bytes().ct_eq(presented.to_ascii_lowercase().as_bytes()).into()
}

/// Adds `sign` and `sign_type=MD5` to a parameter set.
pub fn signed(mut params: Params, key: &str) -> Params {
    params.remove("sign");
    params.remove("sign_type");
    let signature = sign(&params, key);
    params.insert("sign".into(), signature);
    params.insert("sign_type".into(), "MD5".into());
    params
}

/// What the merchant sends to `{base}/pay/submit.php` for one order.
#[derive(Debug, Clone)]
pub struct SubmitOrder<'a> {
    pub pid: &'a str,
    pub pay_type: &'a str,
    pub out_trade_no: &'a str,
    pub notify_url: &'a str,
    pub return_url: &'a str,
    pub name: &'a str,
    pub money: Money,
}

/// The signed form fields for `submit.php` (money formatted with exactly two decimals).
pub fn submit_params(order: &SubmitOrder<'_>, key: &str) -> Params {
    let params: Params = [
        ("pid", order.pid.to_string()),
        ("type", order.pay_type.to_string()),
        ("out_trade_no", order.out_trade_no.to_string()),
        ("notify_url", order.notify_url.to_string()),
        ("return_url", order.return_url.to_string()),
        ("name", order.name.to_string()),
        ("money", order.money.format_2dp()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    signed(params, key)
}

/// The gateway's URL for creating an order: `{base}/pay/submit.php`.
pub fn submit_url(gateway_url: &str) -> String {
    format!("{}/pay/submit.php", gateway_url.trim_end_matches('/'))
}

/// The gateway's API endpoint: `{base}/api.php`.
pub fn api_url(gateway_url: &str) -> String {
    format!("{}/api.php", gateway_url.trim_end_matches('/'))
}

/// The fields of a notify the merchant acts on (after the signature was verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub pid: String,
    pub trade_no: String,
    pub out_trade_no: String,
    pub money: Money,
    pub trade_status: String,
}

/// Why a notify cannot be used; the text is what the notify log records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("money `{0}` is not a non-negative amount with at most two decimals")]
    BadMoney(String),
}

/// Reads the fields of a notify (does not check the signature: see [`verify`]).
pub fn parse_notify(params: &Params) -> Result<Notify, NotifyError> {
    let field =
        |name: &'static str| params.get(name).filter(|v| !v.is_empty()).cloned().ok_or(NotifyError::Missing(name));
    let money_text = field("money")?;
    // A payment is never negative (found by the notify fuzz target in tests/fuzz.rs).
    let money = Money::parse_cents(&money_text)
        .ok()
        .filter(|m| !m.is_negative())
        .ok_or_else(|| NotifyError::BadMoney(money_text.clone()))?;
    Ok(Notify {
        pid: field("pid")?,
        trade_no: field("trade_no")?,
        out_trade_no: field("out_trade_no")?,
        money,
        trade_status: field("trade_status")?,
    })
}

/// The only success value of `trade_status`.
pub const TRADE_SUCCESS: &str = "TRADE_SUCCESS";

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    // Vectors computed outside Rust, e.g.
    // printf '%s' "money=10.00&name=月度会员&out_trade_no=M202501010001&pid=10001&type=epaySECRET" | md5sum
    #[test]
    fn the_documented_example_signs_to_the_independent_md5() {
        let p = params(&[
            ("pid", "10001"),
            ("type", "epay"),
            ("out_trade_no", "M202501010001"),
            ("name", "月度会员"),
            ("money", "10.00"),
        ]);
        assert_eq!(
            signing_payload(&p, "SECRET"),
            "money=10.00&name=月度会员&out_trade_no=M202501010001&pid=10001&type=epaySECRET"
        );
        assert_eq!(sign(&p, "SECRET"), "19a03731b2ebd7a8343942a962960cd6");
    }

    #[test]
    fn empty_params_and_sign_fields_are_left_out_and_urls_stay_raw() {
        let p = params(&[
            ("pid", "42"),
            ("type", "epay"),
            ("out_trade_no", "P1"),
            ("notify_url", "http://x/n"),
            ("return_url", "http://x/r"),
            ("name", "基础套餐"),
            ("money", "30.00"),
            ("param", ""),
            ("sign", "whatever"),
            ("sign_type", "MD5"),
        ]);
        // printf '%s' "money=30.00&name=基础套餐&notify_url=http://x/n&out_trade_no=P1&pid=42&return_url=http://x/r&type=epayk3y" | md5sum
        assert_eq!(sign(&p, "k3y"), "6aa57b78d207830ac42a290167890361");
    }

    #[test]
    fn a_notify_signed_by_the_gateway_verifies_and_any_change_breaks_it() {
        // printf '%s' "money=1.00&out_trade_no=T9&pid=7&trade_no=G1&trade_status=TRADE_SUCCESS&type=epayabc" | md5sum
        let mut p = params(&[
            ("pid", "7"),
            ("trade_no", "G1"),
            ("out_trade_no", "T9"),
            ("type", "epay"),
            ("money", "1.00"),
            ("trade_status", "TRADE_SUCCESS"),
            ("sign", "49c689efa4118aebdf8edef7fcb220b0"),
            ("sign_type", "MD5"),
        ]);
        assert!(verify(&p, "abc"));
        assert!(!verify(&p, "abd"));
        p.insert("money".into(), "100.00".into());
        assert!(!verify(&p, "abc"));
        p.insert("money".into(), "1.00".into());
        p.insert("extra".into(), "x".into());
        assert!(!verify(&p, "abc"), "unknown non-empty params take part in the signature");
        p.remove("extra");
        p.remove("sign");
        assert!(!verify(&p, "abc"));
    }

    #[test]
    fn submit_params_carry_two_decimal_money_and_a_valid_signature() {
        let order = SubmitOrder {
            pid: "42",
            pay_type: "epay",
            out_trade_no: "P1",
            notify_url: "http://x/n",
            return_url: "http://x/r",
            name: "基础套餐",
            money: Money::units(30),
        };
        let p = submit_params(&order, "k3y");
        assert_eq!(p["money"], "30.00");
        assert_eq!(p["sign"], "6aa57b78d207830ac42a290167890361");
        assert_eq!(p["sign_type"], "MD5");
        assert!(verify(&p, "k3y"));
        assert_eq!(submit_url("https://credit.linux.do/epay/"), "https://credit.linux.do/epay/pay/submit.php");
    }

    #[test]
    fn notifies_are_parsed_with_exact_money() {
        let p = params(&[
            ("pid", "7"),
            ("trade_no", "G1"),
            ("out_trade_no", "T9"),
            ("money", "29.99"),
            ("trade_status", "TRADE_SUCCESS"),
        ]);
        assert_eq!(parse_notify(&p).unwrap().money, Money::from_micros(29_990_000));
        let mut bad = p.clone();
        bad.insert("money".into(), "29.999".into());
        assert!(matches!(parse_notify(&bad), Err(NotifyError::BadMoney(_))));
        let mut missing = p;
        missing.insert("trade_no".into(), String::new());
        assert_eq!(parse_notify(&missing), Err(NotifyError::Missing("trade_no")));
    }

    #[test]
    fn a_negative_amount_is_not_a_payment() {
        let p = params(&[("pid", "1"), ("trade_no", "T"), ("out_trade_no", "O"), ("trade_status", "TRADE_SUCCESS")]);
        for money in ["-10.00", "-0.01"] {
            let mut p = p.clone();
            p.insert("money".into(), money.into());
            assert_eq!(parse_notify(&p), Err(NotifyError::BadMoney(money.into())));
        }
    }
}
