//! Writing a batch: the plan's holds, usage rows, ledger entries and counters, with a
//! handful of multi-row statements on the batch's transaction.

use std::collections::HashMap;

use chrono::Duration;
use sqlx::AnyConnection;

use super::plan::{DayChange, Plan, UserChange};
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
        self.write_counters(conn, backend).await?;
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

    /// Writes the batch's ledger entries and its day, window, user and key counters: on
    /// SQLite in one multi-statement `execute`, on PostgreSQL one statement at a time.
    ///
    /// Why: every statement on SQLite is a round trip to the connection's worker thread
    /// (two thread hand-offs, the biggest cost left per request: README's Benchmark
    /// section), and none of these returns anything the batch reads. sqlx binds the
    /// arguments of a multi-statement SQLite query in order across its statements (`?`
    /// placeholders), stopping at the first failing statement, which fails the batch's
    /// transaction as before. PostgreSQL's extended protocol takes one statement per
    /// query, and its statements cost no thread hand-off there. Same statements, same
    /// order, same arguments on both.
    async fn write_counters(&self, conn: &mut AnyConnection, backend: Backend) -> Result<()> {
        let mut parts = Vec::new();
        if !self.entries.is_empty() {
            parts.push(Counter::Entries);
        }
        parts.extend(self.days.iter().map(|(key, change)| Counter::Day(key, change)));
        if !self.windows.is_empty() {
            parts.push(Counter::Windows);
        }
        parts.extend(self.users.iter().map(|(user_id, change)| Counter::User(*user_id, change)));
        parts.extend(self.keys.iter().map(|(key_id, used)| Counter::Key(*key_id, used)));
        match backend {
            Backend::Sqlite => {
                if parts.is_empty() {
                    return Ok(());
                }
                let sql = parts.iter().map(|part| part.sql(self, backend)).collect::<Vec<_>>().join(";\n");
                let mut query = sqlx::query(&sql);
                for part in &parts {
                    query = part.bind(self, query);
                }
                query.execute(&mut *conn).await?;
            }
            Backend::Postgres => {
                for part in &parts {
                    let sql = part.sql(self, backend);
                    part.bind(self, sqlx::query(&sql)).execute(&mut *conn).await?;
                }
            }
        }
        Ok(())
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// One statement of [`Plan::write_counters`].
enum Counter<'a> {
    /// Every ledger entry of the batch (one multi-row insert).
    Entries,
    Day(&'a (i64, String), &'a DayChange),
    /// Every window the batch used (one multi-row upsert).
    Windows,
    User(i64, &'a UserChange),
    Key(i64, &'a (i64, i64)),
}

impl<'a> Counter<'a> {
    /// The statement, its parameters numbered from 1 (`?` on SQLite, see [`rows`]).
    fn sql(&self, plan: &Plan, backend: Backend) -> String {
        let p = |i: usize| super::placeholders(backend, i, 1);
        match self {
            Counter::Entries => format!(
                "INSERT INTO ledger_entries (user_id, kind, amount, balance_after, package_amount, user_package_id, \
                   business_date, reference, note, actor_id, created_at) VALUES {}",
                rows(backend, plan.entries.len(), 11)
            ),
            Counter::Day(..) => format!(
                "INSERT INTO daily_usage (user_id, business_date, package_used, balance_used, requests, user_package_id, updated_at) \
                 VALUES ({}) \
                 ON CONFLICT (user_id, business_date) DO UPDATE SET \
                   package_used = daily_usage.package_used + excluded.package_used, \
                   balance_used = daily_usage.balance_used + excluded.balance_used, \
                   requests = daily_usage.requests + excluded.requests, \
                   user_package_id = CASE WHEN excluded.user_package_id IS NULL THEN daily_usage.user_package_id \
                                          ELSE excluded.user_package_id END, \
                   updated_at = excluded.updated_at",
                super::placeholders(backend, 1, 7)
            ),
            Counter::Windows => format!(
                "INSERT INTO window_usage (scope, kind, period, starts_at, used, updated_at) VALUES {} \
                 ON CONFLICT (scope, kind, period) DO UPDATE SET used = window_usage.used + excluded.used, \
                   updated_at = excluded.updated_at",
                rows(backend, plan.windows.len(), 6)
            ),
            // Each parameter appears once (the held change and the instant are bound
            // twice): anonymous `?` parameters are bound in order of appearance.
            Counter::User(..) => format!(
                "UPDATE users SET balance = balance + {}, held = CASE WHEN held + {} < 0 THEN 0 ELSE held + {} END, \
                   updated_at = CASE WHEN {} IS NULL THEN updated_at ELSE {} END WHERE id = {}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6)
            ),
            Counter::Key(..) => format!("UPDATE api_keys SET spent = spent + {}, last_used_at = {} WHERE id = {}", p(1), p(2), p(3)),
        }
    }

    /// Binds the statement's arguments, in the order of its parameters.
    fn bind<'q>(&self, plan: &'q Plan, query: Query<'q>) -> Query<'q>
    where
        'a: 'q,
    {
        match *self {
            Counter::Entries => plan.entries.iter().fold(query, |query, e| {
                query
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
                    .bind(e.created_at)
            }),
            Counter::Day((user_id, date), d) => query
                .bind(*user_id)
                .bind(date)
                .bind(d.package)
                .bind(d.balance)
                .bind(d.requests)
                .bind(d.user_package_id)
                .bind(d.updated_at),
            Counter::Windows => plan.windows.iter().fold(query, |query, ((scope, kind, period), change)| {
                query
                    .bind(scope)
                    .bind(*kind)
                    .bind(period)
                    .bind(change.starts_at)
                    .bind(change.used)
                    .bind(change.updated_at)
            }),
            Counter::User(user_id, change) => query
                .bind(change.balance)
                .bind(change.held)
                .bind(change.held)
                .bind(change.updated_at)
                .bind(change.updated_at)
                .bind(user_id),
            Counter::Key(key_id, (spent, last_used_at)) => query.bind(*spent).bind(*last_used_at).bind(key_id),
        }
    }
}
