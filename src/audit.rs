//! The audit trail of admin actions: who did what to which object, before and after.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::clock::to_micros;
use crate::error::Result;

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

/// Serialises a view for the before/after columns.
pub fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}
