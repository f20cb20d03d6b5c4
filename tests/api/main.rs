//! HTTP tests against the real application; each runs on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod accounts;
mod admin;
mod admin_metrics;
mod announcements;
mod audit;
mod bench_mock;
mod billing;
mod codex;
mod coupons;
mod keys;
mod oauth;
mod ops;
mod packages;
mod payments;
mod plans;
mod proxy;
mod proxy_admin;
mod proxy_failures;
mod redemption;
mod reliability_invariants;
mod reliability_limits;
mod reliability_payments;
mod reliability_proxy;
mod scale_out;
mod security_access;
mod security_defects;
mod shared_limits;
mod web;
mod web_community;
mod web_community_sales;
mod web_proxy;
mod web_shop;
mod web_usage;
