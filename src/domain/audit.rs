//! The audit trail of admin actions: who did what to which object, before and after.
//!
//! Every admin change, from a page or the JSON API, is written in one shape:
//! [`AuditedTx::begin`] → read the object as it was → change it → [`AuditedTx::commit`]
//! with the [`Change`] (action, target, before, after). The transaction can only be
//! committed together with its audit row, so no admin action can forget it. Writes that
//! go through a store of their own (upstreams, prices, packages) are audited right after
//! with [`record_change`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::foundation::clock::to_micros;
use crate::foundation::db::{Db, Tx};
use crate::foundation::error::Result;

/// Who acts, and from where (for the audit row).
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: i64,
    pub ip: Option<String>,
}

/// What one admin change did: the action (`coupon.update`), the object (`coupon:7`) and
/// its views before and after (`None` for a creation's before or a deletion's after).
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub action: &'a str,
    pub target: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl<'a> Change<'a> {
    /// A change of `target` with no snapshots yet.
    pub fn new(action: &'a str, target: impl Into<String>) -> Change<'a> {
        Change { action, target: Some(target.into()), before: None, after: None }
    }

    /// A change that concerns no single object (an export of every code).
    pub fn of_all(action: &'a str) -> Change<'a> {
        Change { action, target: None, before: None, after: None }
    }

    /// The object as it was (a view, as the API shows it).
    pub fn before<T: Serialize>(mut self, view: &T) -> Change<'a> {
        self.before = snapshot(view);
        self
    }

    /// The object as it is now.
    pub fn after<T: Serialize>(mut self, view: &T) -> Change<'a> {
        self.after = snapshot(view);
        self
    }

    /// The audit row of this change made by `actor`.
    pub fn by(self, actor: &Actor) -> AuditEvent<'a> {
        AuditEvent {
            actor_id: Some(actor.id),
            action: self.action,
            target: self.target,
            before: self.before,
            after: self.after,
            ip: actor.ip.clone(),
        }
    }
}

/// The transaction of one admin change; committing it writes the audit row in it.
/// Dropped without [`AuditedTx::commit`] (an error, a refusal), it rolls back whole.
pub struct AuditedTx {
    tx: Tx,
    actor: Actor,
    now: DateTime<Utc>,
}

impl AuditedTx {
    /// Opens the transaction for `actor`'s change at `now`.
    pub async fn begin(db: &Db, actor: Actor, now: DateTime<Utc>) -> Result<AuditedTx> {
        Ok(AuditedTx { tx: db.begin().await?, actor, now })
    }

    /// The connection to read the object and change it on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.tx.conn()
    }

    /// The time of the change (also the audit row's).
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Writes the audit row of `change` and commits both.
    pub async fn commit(mut self, change: Change<'_>) -> Result<()> {
        let event = change.by(&self.actor);
        record(self.tx.conn(), &event, self.now).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Audits a change that was written through a store of its own (and committed there).
pub async fn record_change(db: &Db, actor: &Actor, change: Change<'_>, now: DateTime<Utc>) -> Result<()> {
    record_standalone(db, &change.by(actor), now).await
}

/// One admin action to record.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent<'a> {
    pub actor_id: Option<i64>,
    pub action: &'a str,
    pub target: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub ip: Option<String>,
}

/// Writes the event on the caller's connection or transaction.
pub async fn record(conn: &mut AnyConnection, event: &AuditEvent<'_>, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_logs (actor_id, action, target, before_value, after_value, ip, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.actor_id)
    .bind(event.action)
    .bind(event.target.as_deref())
    .bind(event.before.as_ref().map(|v| v.to_string()))
    .bind(event.after.as_ref().map(|v| v.to_string()))
    .bind(event.ip.as_deref())
    .bind(to_micros(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an event on a connection of its own, for admin writes that were not part of
/// a larger transaction.
pub async fn record_standalone(db: &Db, event: &AuditEvent<'_>, now: DateTime<Utc>) -> Result<()> {
    let mut conn = db.pool().acquire().await?;
    record(&mut conn, event, now).await
}

/// Serialises a view for the before/after columns.
pub fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

/// Filters for the admin audit listing; every field optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<i64>,
    /// Matches actions starting with this text (`redemption.` finds every redemption action).
    pub action_prefix: Option<String>,
    /// Half-open instant range `[from, until)`.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A row of `audit_logs` with the actor's email.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub actor_id: Option<i64>,
    pub actor_email: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub before_value: Option<String>,
    pub after_value: Option<String>,
    pub ip: Option<String>,
    pub created_at: i64,
}

/// What the API shows of an audit row (before/after as JSON again).
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: i64,
    pub actor_id: Option<i64>,
    pub actor_email: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub ip: Option<String>,
    pub created_at: String,
}

impl AuditRow {
    pub fn view(&self, calendar: &crate::foundation::clock::BusinessCalendar) -> AuditView {
        let parse = |v: &Option<String>| v.as_deref().map(|t| serde_json::from_str(t).unwrap_or_else(|_| t.into()));
        AuditView {
            id: self.id,
            actor_id: self.actor_id,
            actor_email: self.actor_email.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            before: parse(&self.before_value),
            after: parse(&self.after_value),
            ip: self.ip.clone(),
            created_at: calendar.format(crate::foundation::clock::from_micros(self.created_at)),
        }
    }
}

/// Escapes `LIKE` wildcards so a prefix filter matches literally (escape character `!`).
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '!' | '%' | '_') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// One page of audit rows, newest first, plus the total matching.
pub async fn list(
    db: &crate::foundation::db::Db,
    filter: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<AuditRow>, i64)> {
    let where_clause = "WHERE ($1 IS NULL OR a.actor_id = $1) AND ($2 IS NULL OR a.action LIKE $2 ESCAPE '!') \
                        AND ($3 IS NULL OR a.created_at >= $3) AND ($4 IS NULL OR a.created_at < $4)";
    let pattern = filter.action_prefix.as_deref().map(like_prefix);
    let from = filter.from.map(to_micros);
    let until = filter.until.map(to_micros);
    let rows = sqlx::query_as::<_, AuditRow>(&format!(
        "SELECT a.id, a.actor_id, u.email AS actor_email, a.action, a.target, a.before_value, a.after_value, \
           a.ip, a.created_at \
         FROM audit_logs a LEFT JOIN users u ON u.id = a.actor_id {where_clause} \
         ORDER BY a.id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(filter.actor_id)
    .bind(pattern.clone())
    .bind(from)
    .bind(until)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM audit_logs a {where_clause}"))
        .bind(filter.actor_id)
        .bind(pattern)
        .bind(from)
        .bind(until)
        .fetch_one(db.pool())
        .await?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_prefixes_match_wildcards_literally() {
        assert_eq!(like_prefix("redemption."), "redemption.%");
        assert_eq!(like_prefix("a_b%c!"), "a!_b!%c!!%");
    }
}
