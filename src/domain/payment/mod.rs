//! Payments through LINUX DO Credit / EasyPay.
//!
//! - [`epay`]: the protocol (MD5 signing, submit parameters, notify parsing);
//! - [`client`]: order query and refund calls to the gateway;
//!
//! The protocol only: the notify's checks and the fulfilment are in `domain::orders::notify`
//! and `domain::orders::fulfil`; the `/pay/{out_trade_no}` page and the Credit-compatible
//! sandbox are handlers in `surface::web::{pay_page, pay_sandbox}`.

pub mod client;
pub mod epay;

use axum::body::Bytes;
use axum::extract::RawQuery;

use epay::Params;

/// Merges a query string and an `application/x-www-form-urlencoded` body into one
/// parameter set (gateways send GET or POST; the body wins on duplicates).
pub fn collect_params(RawQuery(query): &RawQuery, body: &Bytes) -> Params {
    let mut params = Params::new();
    if let Some(q) = query {
        if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q) {
            params.extend(pairs);
        }
    }
    if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        params.extend(pairs);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_parameters_are_merged_and_decoded() {
        let query = RawQuery(Some("pid=1&name=%E6%9C%88%E5%BA%A6&money=1.00".into()));
        let body = Bytes::from_static(b"money=2.00&param=");
        let params = collect_params(&query, &body);
        assert_eq!(params["name"], "月度");
        assert_eq!(params["money"], "2.00", "the body wins");
        assert_eq!(params["param"], "");
        assert!(collect_params(&RawQuery(None), &Bytes::new()).is_empty());
    }
}
