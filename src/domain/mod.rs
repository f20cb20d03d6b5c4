//! The business: accounts and keys, billing, packages, orders and payments, the proxy's
//! forwarding and metering, and the records every change leaves (ledger, audit). A domain
//! module takes the narrow things it uses and never the HTTP state; none of them reaches
//! up into `runtime`, `surface` or `app` (checked by `tests/architecture.rs`).

pub mod announcements;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod coupons;
pub mod ledger;
pub mod oauth;
pub mod orders;
pub mod packages;
pub mod payment;
pub mod proxy;
pub mod ratelimit;
pub mod redemption;
pub mod settings;
pub mod telemetry;
