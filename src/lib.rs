//! codex-gateway: an API gateway that resells OpenAI-compatible models and bills
//! every request against package allowances and balances.
//!
//! The tree is the architecture, in layers from the bottom up; a layer may use the ones
//! below it, never one above (ARCHITECTURE.md has the codemap, `tests/architecture.rs`
//! checks it):
//! - [`foundation`]: money, the calendar, the database, the one domain error, secrets,
//!   configuration: nothing about the business.
//! - [`domain`]: the business rules: accounts and keys, billing, packages, orders and
//!   payments, the proxy's forwarding and metering, the ledger and the audit trail.
//! - [`runtime`]: the state the surfaces share (`AppState`) and the background jobs.
//! - [`surface`]: the JSON API, the pages, the `/v1` handlers and the router.
//! - [`app`]: the composition root: builds the state, binds, serves, stops.

pub mod app;
pub mod domain;
pub mod foundation;
pub mod runtime;
pub mod surface;
