//! Accounts: an admin's changes to a user (status, role, caps) and to their balance.

use serde_json::json;

use super::Actor;
use crate::domain::audit::{self, AuditedTx, Change};
use crate::domain::auth::users::{self, User, UserPatch};
use crate::domain::auth::{Role, Status};
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

/// Applies an admin patch to a user; an admin may not suspend or demote themselves.
pub async fn update_user(state: &AppState, actor: &Actor, id: i64, patch: &UserPatch) -> Result<User> {
    if id == actor.id && (patch.status == Some(Status::Suspended) || patch.role == Some(Role::User)) {
        return Err(Error::conflict("cannot_demote_self", "an admin cannot suspend or demote their own account"));
    }
    let before = users::find_by_id(&state.db, id).await?.ok_or(Error::NotFound("user"))?;
    let now = state.now();
    let after = users::update(&state.db, id, patch, now).await?;
    let calendar = state.calendar();
    let change =
        Change::new("user.update", format!("user:{id}")).before(&before.view(calendar)).after(&after.view(calendar));
    audit::record_change(&state.db, actor, change, now).await?;
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
    let mut tx = AuditedTx::begin(&state.db, actor.clone(), state.now()).await?;
    let now = tx.now();
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
    let change = Change::new("user.balance_adjust", format!("user:{}", adj.user_id))
        .before(&json!({ "balance": balance.checked_sub(adj.amount).unwrap_or(balance) }))
        .after(&json!({ "balance": balance, "amount": adj.amount, "reason": reason }));
    tx.commit(change).await?;
    crate::domain::billing::user_changed(state.env(), adj.user_id).await;
    Ok(balance)
}
