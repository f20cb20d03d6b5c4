//! Payments through LINUX DO Credit / EasyPay.
//!
//! - [`epay`]: the protocol (MD5 signing, submit parameters, notify parsing);
//! - [`client`]: order query and refund calls to the gateway;
//! - [`notify`]: the gateway's asynchronous notify;
//! - [`page`]: `/pay/{out_trade_no}`, the auto-submitting form that sends the buyer to the gateway;
//! - [`sandbox`]: a Credit-compatible simulator, mounted only with `GATEWAY_PAY_SANDBOX=true`.

pub mod client;
pub mod epay;
pub mod notify;
pub mod page;
pub mod sandbox;

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
