//! Writing a batch: the plan's holds, usage rows, ledger entries and counters, with a
//! handful of multi-row statements on the batch's transaction.

use std::collections::HashMap;

use chrono::Duration;
use sqlx::AnyConnection;

use super::plan::Plan;
use super::rows;
use crate::domain::billing::HOLD_LIFETIME_HOURS;
use crate::domain::ledger;
use crate::foundation::clock::{date_key, to_micros};
use crate::foundation::db::Backend;
use crate::foundation::error::{Error, Result};

impl Plan {
    /// Writes the plan; returns the new holds' ids by request id (a hold netted with
    /// its settlement in the batch is not written and has none).
    pub async fn write(&self, conn: &mut AnyConnection, backend: Backend) -> Result<HashMap<String, i64>> {
        let mut hold_ids = HashMap::new();
        let holds: Vec<_> = self.holds.iter().filter(|h| !h.netted).collect();
        if !holds.is_empty() {
            let sql = format!(
                "INSERT INTO holds (user_id, api_key_id, amount, created_at, expires_at, request_id) VALUES {} \
                 RETURNING id, request_id",
                rows(backend, holds.len(), 6)
            );
            let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
            for h in &holds {
                let expires = h.created_at + Duration::hours(HOLD_LIFETIME_HOURS).num_microseconds().unwrap_or(0);
                query = query
                    .bind(h.user_id)
                    .bind(h.api_key_id)
                    .bind(h.amount)
                    .bind(h.created_at)
                    .bind(expires)
                    .bind(&h.request_id);
            }
            for (id, request_id) in query.fetch_all(&mut *conn).await? {
                hold_ids.insert(request_id, id);
            }
            if hold_ids.len() != holds.len() {
                return Err(Error::internal("a batch of holds was not inserted whole"));
            }
        }
        if !self.usage.is_empty() {
            self.insert_usage(conn, backend).await?;
        }
        if !self.entries.is_empty() {
            self.insert_entries(conn, backend).await?;
        }
        for ((user_id, date), d) in &self.days {
            sqlx::query(
                "INSERT INTO daily_usage (user_id, business_date, package_used, balance_used, requests, user_package_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id, business_date) DO UPDATE SET \
                   package_used = daily_usage.package_used + excluded.package_used, \
                   balance_used = daily_usage.balance_used + excluded.balance_used, \
                   requests = daily_usage.requests + excluded.requests, \
                   user_package_id = CASE WHEN excluded.user_package_id IS NULL THEN daily_usage.user_package_id \
                                          ELSE excluded.user_package_id END, \
                   updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(date)
            .bind(d.package)
            .bind(d.balance)
            .bind(d.requests)
            .bind(d.user_package_id)
            .bind(d.updated_at)
            .execute(&mut *conn)
            .await?;
        }
        if !self.windows.is_empty() {
            self.upsert_windows(conn, backend).await?;
        }
        for (user_id, change) in &self.users {
            sqlx::query(
                "UPDATE users SET balance = balance + $1, held = CASE WHEN held + $2 < 0 THEN 0 ELSE held + $2 END, \
                   updated_at = CASE WHEN $3 IS NULL THEN updated_at ELSE $3 END WHERE id = $4",
            )
            .bind(change.balance)
            .bind(change.held)
            .bind(change.updated_at)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        }
        for (key_id, (spent, last_used_at)) in &self.keys {
            sqlx::query("UPDATE api_keys SET spent = spent + $1, last_used_at = $2 WHERE id = $3")
                .bind(spent)
                .bind(last_used_at)
                .bind(key_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(hold_ids)
    }

    async fn insert_usage(&self, conn: &mut AnyConnection, backend: Backend) -> Result<()> {
        let sql = format!(
            "INSERT INTO usage_logs (request_id, user_id, api_key_id, upstream_id, endpoint, model, status_code, \
               streamed, input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost, package_cost, \
               balance_cost, estimated, first_byte_ms, total_ms, business_date, error, created_at) \
             VALUES {} ON CONFLICT (request_id) DO NOTHING",
            rows(backend, self.usage.len(), 21)
        );
        let mut query = sqlx::query(&sql);
        for u in &self.usage {
            let (hold, r) = (&u.hold, &u.record);
            let total_ms = r.total_ms.unwrap_or_else(|| (u.created_at - hold.admitted_at).num_milliseconds());
            query = query
                .bind(&r.request_id)
                .bind(hold.user_id)
                .bind(hold.api_key_id)
                .bind(r.upstream_id)
                .bind(&r.endpoint)
                .bind(&r.model)
                .bind(i64::from(r.status_code))
                .bind(i64::from(r.streamed))
                .bind(r.input_tokens)
                .bind(r.cached_tokens)
                .bind(r.output_tokens)
                .bind(r.reasoning_tokens)
                .bind(r.cost.micros())
                .bind(u.package_cost)
                .bind(u.balance_cost)
                .bind(i64::from(r.estimated))
                .bind(r.first_byte_ms)
                .bind(total_ms)
                .bind(date_key(hold.business_date))
                .bind(r.error.as_deref())
                .bind(to_micros(hold.admitted_at));
        }
        let inserted = query.execute(&mut *conn).await?.rows_affected();
        if inserted != self.usage.len() as u64 {
            // Another transaction settled one of these request ids since the check:
            // abort, and the writer retries each job alone.
            return Err(Error::conflict("usage_already_settled", "a request of the batch was settled concurrently"));
        }
        Ok(())
    }

    async fn insert_entries(&self, conn: &mut AnyConnection, backend: Backend) -> Result<()> {
        let sql = format!(
            "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, package_amount, user_package_id, \
               business_date, reference, note, actor_id, created_at) VALUES {}",
            rows(backend, self.entries.len(), 11)
        );
        let mut query = sqlx::query(&sql);
        for e in &self.entries {
            query = query
                .bind(e.user_id)
                .bind(ledger::kind::USAGE)
                .bind(e.amount)
                .bind(e.balance_after)
                .bind(e.package_amount)
                .bind(e.user_package_id)
                .bind(&e.business_date)
                .bind(&e.reference)
                .bind(&e.note)
                .bind(None::<i64>)
                .bind(e.created_at);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }

    /// Adds the batch's use of each window to `window_usage` (one statement).
    async fn upsert_windows(&self, conn: &mut AnyConnection, backend: Backend) -> Result<()> {
        let sql = format!(
            "INSERT INTO window_usage (scope, kind, period, starts_at, used, updated_at) VALUES {} \
             ON CONFLICT (scope, kind, period) DO UPDATE SET used = window_usage.used + excluded.used, \
               updated_at = excluded.updated_at",
            rows(backend, self.windows.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for ((scope, kind, period), change) in &self.windows {
            query = query
                .bind(scope)
                .bind(*kind)
                .bind(period)
                .bind(change.starts_at)
                .bind(change.used)
                .bind(change.updated_at);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}
