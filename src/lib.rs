//! codex-gateway: an API gateway that resells OpenAI-compatible models and bills
//! every request against package allowances and balances.
//!
//! A tour of the tree:
//! - [`config`]: start-up settings from the environment (and an optional TOML file).
//! - [`clock`]: "now" and the business day (00:00 Asia/Shanghai by default).
//! - [`money`]: exact integer micro-units; parsing and printing of decimals.
//! - [`db`]: one code path for SQLite and PostgreSQL, and the migrations.
//! - [`error`]: the domain error every surface maps to HTTP once.
//! - [`auth`]: passwords, sessions, API keys, and the `CurrentUser`/`AdminUser` extractors.
//! - [`billing`]: admission holds and settlement (package allowance first, then balance).
//! - [`users`], [`ledger`], [`audit`], [`settings`]: accounts, money movements, admin trail, run-time settings.
//! - [`proxy`]: the OpenAI-compatible `/v1` gateway: upstreams, prices, metering.
//! - [`redemption`], [`announcements`] (with [`markdown`]), [`oauth`]: redemption codes, site
//!   announcements, LINUX DO sign-in.
//! - [`api`]: the JSON API under `/api`; [`web`]: server-rendered pages.
//! - [`jobs`]: periodic work under cluster-wide leases; [`telemetry`]: metrics and request ids;
//!   [`cluster`]: cache invalidation across instances.
//! - [`packages`], [`orders`], [`payment`]: the catalog and activation, payment orders, the Credit gateway.
//! - [`client_ip`]: who the client is (the peer, or what a trusted proxy forwarded).
//! - [`redact`]: keeping stored secrets out of answers, errors and logs (hints, scrubbing).
//! - [`app`], [`routes`]: building, binding and serving the application.

pub mod announcements;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod client_ip;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coupons;
pub mod db;
pub mod error;
pub mod jobs;
pub mod ledger;
pub mod markdown;
pub mod money;
pub mod oauth;
pub mod orders;
pub mod packages;
pub mod payment;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod redemption;
pub mod routes;
pub mod secrets;
pub mod settings;
pub mod telemetry;
pub mod users;
pub mod web;
