//! Site announcements: create, edit, delete.

use super::Actor;
use crate::domain::announcements::{self, Announcement, AnnouncementInput};
use crate::domain::audit::{AuditedTx, Change};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;

fn target(id: i64) -> String {
    format!("announcement:{id}")
}

/// Publishes an announcement written by `actor`.
pub async fn create(state: &AppState, actor: Actor, input: &AnnouncementInput) -> Result<Announcement> {
    let author = actor.id;
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let now = tx.now();
    let created = announcements::create(tx.conn(), input, author, now).await?;
    tx.commit(Change::new("announcement.create", target(created.id)).after(&created.view(state.calendar()))).await?;
    Ok(created)
}

/// Replaces an announcement's fields with what `edit` makes of it as it was (the API
/// merges a partial body into it; the edit page sends every field).
pub async fn update(
    state: &AppState,
    actor: Actor,
    id: i64,
    edit: impl FnOnce(&Announcement) -> Result<AnnouncementInput>,
) -> Result<Announcement> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let now = tx.now();
    let before = announcements::find_in(tx.conn(), id).await?.ok_or(Error::NotFound("announcement"))?;
    let input = edit(&before)?;
    let after = announcements::update(tx.conn(), id, &input, now).await?;
    let calendar = state.calendar();
    tx.commit(
        Change::new("announcement.update", target(id)).before(&before.view(calendar)).after(&after.view(calendar)),
    )
    .await?;
    Ok(after)
}

/// Deletes an announcement.
pub async fn delete(state: &AppState, actor: Actor, id: i64) -> Result<()> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let before = announcements::find_in(tx.conn(), id).await?.ok_or(Error::NotFound("announcement"))?;
    announcements::delete(tx.conn(), id).await?;
    tx.commit(Change::new("announcement.delete", target(id)).before(&before.view(state.calendar()))).await
}
