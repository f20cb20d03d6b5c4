//! Admin actions shared by the JSON API and the web pages, so both surfaces apply the
//! same rules and leave the same audit trail: user changes, balance adjustments and
//! settings updates.

use serde_json::{json, Value};

use crate::domain::audit::{self, AuditEvent};
use crate::domain::auth::{Role, Status};
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::settings::Settings;
use crate::domain::users::{self, User, UserPatch};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

pub use crate::domain::audit::Actor;

/// Applies an admin patch to a user; an admin may not suspend or demote themselves.
pub async fn update_user(state: &AppState, actor: &Actor, id: i64, patch: &UserPatch) -> Result<User> {
    if id == actor.id && (patch.status == Some(Status::Suspended) || patch.role == Some(Role::User)) {
        return Err(Error::conflict("cannot_demote_self", "an admin cannot suspend or demote their own account"));
    }
    let before = users::find_by_id(&state.db, id).await?.ok_or(Error::NotFound("user"))?;
    let now = state.now();
    let after = users::update(&state.db, id, patch, now).await?;
    let event = AuditEvent {
        actor_id: Some(actor.id),
        action: "user.update",
        target: Some(format!("user:{id}")),
        before: audit::snapshot(&before.view(state.calendar())),
        after: audit::snapshot(&after.view(state.calendar())),
        ip: actor.ip.clone(),
    };
    audit::record_standalone(&state.db, &event, now).await?;
    crate::domain::billing::user_changed(state.env(), id).await;
    Ok(after)
}

/// A manual balance change with its mandatory reason.
#[derive(Debug, Clone)]
pub struct BalanceAdjustment<'a> {
    pub user_id: i64,
    pub amount: Money,
    pub reason: &'a str,
}

/// Credits or debits a balance through the ledger (never below zero) and audits it;
/// returns the new balance.
pub async fn adjust_balance(state: &AppState, actor: &Actor, adj: &BalanceAdjustment<'_>) -> Result<Money> {
    let reason = adj.reason.trim();
    if reason.is_empty() {
        return Err(Error::validation("reason", "is required for every balance adjustment"));
    }
    if adj.amount == Money::ZERO {
        return Err(Error::validation("amount", "must not be zero"));
    }
    let now = state.now();
    let mut tx = state.db.begin().await?;
    let details =
        EntryDetails { note: Some(reason), actor_id: Some(actor.id), reference: Some("admin"), ..Default::default() };
    let balance = ledger::change_balance(
        tx.conn(),
        adj.user_id,
        ledger::kind::ADMIN_ADJUST,
        adj.amount,
        Overdraft::Refuse,
        &details,
        now,
    )
    .await?;
    let event = AuditEvent {
        actor_id: Some(actor.id),
        action: "user.balance_adjust",
        target: Some(format!("user:{}", adj.user_id)),
        before: Some(json!({ "balance": balance.checked_sub(adj.amount).unwrap_or(balance) })),
        after: Some(json!({ "balance": balance, "amount": adj.amount, "reason": reason })),
        ip: actor.ip.clone(),
    };
    audit::record(tx.conn(), &event, now).await?;
    tx.commit().await?;
    crate::domain::billing::user_changed(state.env(), adj.user_id).await;
    Ok(balance)
}

/// Merges a partial settings document, validates, saves and audits it.
pub async fn update_settings(state: &AppState, actor: &Actor, patch: Value) -> Result<std::sync::Arc<Settings>> {
    let current = state.settings.get().await?;
    let next = crate::surface::api::settings::apply_patch(&current, patch)?;
    let now = state.now();
    let saved = state.settings.save(next, now).await?;
    let public_url = &state.config.public_url;
    let event = AuditEvent {
        actor_id: Some(actor.id),
        action: "settings.update",
        target: Some("settings".into()),
        before: Some(crate::surface::api::settings::public_view(&current, public_url)),
        after: Some(crate::surface::api::settings::public_view(&saved, public_url)),
        ip: actor.ip.clone(),
    };
    audit::record_standalone(&state.db, &event, now).await?;
    Ok(saved)
}
