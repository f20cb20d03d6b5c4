//! Every admin change, written once and audited, for both admin surfaces: the JSON API
//! (`surface::api`) and the admin pages (`surface::web`) read their input each in their
//! own way and answer in their own shape, and make the change through these.
//!
//! One shape: [`AuditedTx::begin`](crate::domain::audit::AuditedTx::begin) → read the
//! object as it was → change it → `commit` with its [`Change`](crate::domain::audit::Change),
//! so the audit row and the change commit together or not at all; a store that commits on
//! its own (upstreams, prices, packages, settings) is written and then audited with
//! [`audit::record_change`](crate::domain::audit::record_change). No surface writes an
//! admin change or an audit row itself.

pub mod announcements;
pub mod catalog;
pub mod coupons;
pub mod settings;
pub mod users;

pub use crate::domain::audit::Actor;

use serde_json::json;

use crate::domain::audit::{self, Change};
use crate::domain::orders::{self, refund::RefundBy, Order};
use crate::foundation::error::Result;
use crate::runtime::state::AppState;

/// Records an export of redemption codes (of one batch, or of all): exporting hands out
/// spendable codes, so it is on the trail like a write (the codes themselves are not).
pub async fn codes_exported(state: &AppState, actor: &Actor, batch: Option<i64>, rows: usize) -> Result<()> {
    let change = match batch {
        Some(id) => Change::new("redemption.export", format!("redemption_batch:{id}")),
        None => Change::of_all("redemption.export"),
    };
    let change = change.after(&json!({ "batch_id": batch, "rows": rows }));
    audit::record_change(&state.db, actor, change, state.now()).await
}

/// An admin's refund of order `otn` (through the gateway, or to the balance), audited.
pub async fn refund_order(state: &AppState, actor: &Actor, otn: &str) -> Result<Order> {
    let order = orders::refund::refund(state.env(), otn, RefundBy { actor_id: actor.id }).await?;
    let change = Change::new("order.refund", format!("order:{otn}")).after(&order.view(state.calendar()));
    audit::record_change(&state.db, actor, change, state.now()).await?;
    Ok(order)
}
