//! HTTP tests against the real application; each runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod accounts;
mod admin;
mod billing;
mod keys;
mod ops;
mod packages;
mod payments;
mod proxy;
mod proxy_admin;
mod proxy_failures;
mod reliability_invariants;
mod reliability_limits;
mod reliability_payments;
mod reliability_proxy;
mod security_access;
