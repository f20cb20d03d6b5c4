//! Reading a batch: lock its users, then read every fact the rules need with one
//! statement per kind of fact (keys, running requests of capped keys, packages, day
//! totals, window usage, settled ids, holds to release).

use std::collections::{HashMap, HashSet};

use chrono::Duration;
use sqlx::AnyConnection;

use super::{bind_all, placeholders, Job};
use crate::domain::billing::allowance::{key_scope, package_scope, user_scope, Terms, TermsRow, TERMS_COLUMNS};
use crate::foundation::clock::windows::BLOCK_HOURS;
use crate::foundation::clock::{date_key, to_micros, BusinessCalendar};
use crate::foundation::db::Backend;
use crate::foundation::error::Result;

/// A user's row as locked at the start of the batch, then as changed by its jobs.
pub(super) struct UserFacts {
    pub balance: i64,
    pub held: i64,
    pub daily_cap: Option<i64>,
    pub status: String,
    pub role: String,
    pub preference: Option<String>,
    pub five_hour_cap: Option<i64>,
}

pub(super) struct KeyFacts {
    pub user_id: i64,
    pub status: String,
    pub spend_limit: Option<i64>,
    pub spent: i64,
    pub expires_at: Option<i64>,
    pub daily_cap: Option<i64>,
    pub max_concurrency: Option<i64>,
    /// Requests of the key holding money now, and their holds (read for capped keys).
    pub running: i64,
    pub running_held: i64,
}

impl KeyFacts {
    /// Keys with a cap of their own are admitted before forwarding, never on a hint.
    pub fn capped(&self) -> bool {
        self.daily_cap.is_some() || self.max_concurrency.is_some()
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    balance: i64,
    held: i64,
    daily_cap: Option<i64>,
    status: String,
    role: String,
    billing_preference: Option<String>,
    five_hour_cap: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: i64,
    user_id: i64,
    status: String,
    spend_limit: Option<i64>,
    spent: i64,
    expires_at: Option<i64>,
    daily_cap: Option<i64>,
    max_concurrency: Option<i64>,
}

/// The key of a window's usage: (scope, kind, period).
pub(super) type WindowKey = (String, &'static str, String);

/// Everything read under the locks.
#[derive(Default)]
pub(super) struct Facts {
    pub users: HashMap<i64, UserFacts>,
    pub keys: HashMap<i64, KeyFacts>,
    /// Packages that may apply to an admission of the batch, per user, earliest-ending first.
    pub packages: HashMap<i64, Vec<Terms>>,
    /// Every package read (also those named by the holds being settled), by id.
    pub terms: HashMap<i64, Terms>,
    /// (user, business date) → (package used, balance used).
    pub days: HashMap<(i64, String), (i64, i64)>,
    /// What was used in each window read.
    pub windows: HashMap<WindowKey, i64>,
    /// The start of the latest 5-hour block of each scope (micro-seconds).
    pub blocks: HashMap<String, i64>,
    /// Request ids already settled by an earlier transaction.
    pub settled: HashSet<String>,
    /// Holds still present (not released by the expiry job), deleted by this batch.
    pub released: HashSet<i64>,
}

/// What the jobs of a batch name, collected once.
#[derive(Default)]
struct Wanted {
    users: Vec<i64>,
    keys: Vec<i64>,
    admitting_users: Vec<i64>,
    packages: Vec<i64>,
    requests: Vec<String>,
    holds: Vec<i64>,
    dates: Vec<String>,
    /// Keys of the day, week and month windows of every instant of the batch.
    periods: Vec<String>,
    earliest: i64,
    latest: i64,
}

impl Wanted {
    fn of(calendar: &BusinessCalendar, jobs: &[Job]) -> Wanted {
        let mut w = Wanted { earliest: i64::MAX, latest: i64::MIN, ..Wanted::default() };
        for job in jobs {
            w.users.push(job.user_id());
            let at = match job {
                Job::Admit { request, now, .. } => {
                    w.keys.push(request.api_key_id);
                    w.admitting_users.push(request.user_id);
                    *now
                }
                Job::Settle { hold, record, .. } => {
                    // Read to learn whether the key's day is counted (a cap set since admission).
                    w.keys.push(hold.api_key_id);
                    w.packages.extend(&hold.packages);
                    w.requests.push(record.request_id.clone());
                    w.holds.push(hold.id);
                    hold.admitted_at
                }
                Job::SettleAdmitted { record, now, .. } => {
                    // Its admission is in the batch and names everything else.
                    w.requests.push(record.request_id.clone());
                    *now
                }
            };
            w.earliest = w.earliest.min(to_micros(at));
            w.latest = w.latest.max(to_micros(at));
            w.dates.push(date_key(calendar.business_date(at)));
            w.periods.push(calendar.day_span(at).period);
            w.periods.push(calendar.week_span(at).period);
            w.periods.push(calendar.month_span(at).period);
        }
        w.periods.push("total".to_string());
        for ids in [&mut w.users, &mut w.keys, &mut w.admitting_users, &mut w.packages, &mut w.holds] {
            ids.sort_unstable();
            ids.dedup();
        }
        for texts in [&mut w.dates, &mut w.periods] {
            texts.sort_unstable();
            texts.dedup();
        }
        w
    }
}

impl Facts {
    pub async fn read(
        conn: &mut AnyConnection,
        backend: Backend,
        calendar: &BusinessCalendar,
        jobs: &[Job],
    ) -> Result<Facts> {
        let mut facts = Facts::default();
        let wanted = Wanted::of(calendar, jobs);
        for id in &wanted.users {
            let row: Option<UserRow> = sqlx::query_as(
                "UPDATE users SET held = held WHERE id = $1 \
                 RETURNING balance, held, daily_cap, status, role, billing_preference, five_hour_cap",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(u) = row {
                let user = UserFacts {
                    balance: u.balance,
                    held: u.held,
                    daily_cap: u.daily_cap,
                    status: u.status,
                    role: u.role,
                    preference: u.billing_preference,
                    five_hour_cap: u.five_hour_cap,
                };
                facts.users.insert(*id, user);
            }
        }
        facts.read_keys(conn, backend, &wanted.keys).await?;
        facts.read_packages(conn, backend, &wanted).await?;
        facts.read_days(conn, backend, &wanted).await?;
        facts.read_windows(conn, backend, &wanted).await?;
        if !wanted.requests.is_empty() {
            let sql = format!(
                "SELECT request_id FROM usage_logs WHERE request_id IN ({})",
                placeholders(backend, 1, wanted.requests.len())
            );
            let rows: Vec<(String,)> = bind_all(sqlx::query_as(&sql), &wanted.requests).fetch_all(&mut *conn).await?;
            facts.settled.extend(rows.into_iter().map(|(id,)| id));
        }
        if !wanted.holds.is_empty() {
            let sql = format!(
                "DELETE FROM holds WHERE id IN ({}) RETURNING id",
                placeholders(backend, 1, wanted.holds.len())
            );
            let rows: Vec<(i64,)> = bind_all(sqlx::query_as(&sql), &wanted.holds).fetch_all(&mut *conn).await?;
            facts.released.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(facts)
    }

    /// The keys being admitted or settled, and how many requests the capped ones run now.
    async fn read_keys(&mut self, conn: &mut AnyConnection, backend: Backend, key_ids: &[i64]) -> Result<()> {
        if key_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT id, user_id, status, spend_limit, spent, expires_at, daily_cap, max_concurrency \
             FROM api_keys WHERE id IN ({})",
            placeholders(backend, 1, key_ids.len())
        );
        let rows: Vec<KeyRow> = bind_all(sqlx::query_as(&sql), key_ids).fetch_all(&mut *conn).await?;
        for k in rows {
            let key = KeyFacts {
                user_id: k.user_id,
                status: k.status,
                spend_limit: k.spend_limit,
                spent: k.spent,
                expires_at: k.expires_at,
                daily_cap: k.daily_cap,
                max_concurrency: k.max_concurrency,
                running: 0,
                running_held: 0,
            };
            self.keys.insert(k.id, key);
        }
        let mut capped: Vec<i64> = self.keys.iter().filter(|(_, k)| k.capped()).map(|(id, _)| *id).collect();
        if capped.is_empty() {
            return Ok(());
        }
        capped.sort_unstable();
        let sql = format!(
            "SELECT api_key_id, COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM holds \
             WHERE api_key_id IN ({}) GROUP BY api_key_id",
            placeholders(backend, 1, capped.len())
        );
        let rows: Vec<(i64, i64, i64)> = bind_all(sqlx::query_as(&sql), &capped).fetch_all(&mut *conn).await?;
        for (id, running, held) in rows {
            if let Some(key) = self.keys.get_mut(&id) {
                key.running = running;
                key.running_held = held;
            }
        }
        Ok(())
    }

    /// The packages in force for the admitting users, and those the settled holds name.
    async fn read_packages(&mut self, conn: &mut AnyConnection, backend: Backend, w: &Wanted) -> Result<()> {
        let mut clauses = Vec::new();
        let mut n = 0;
        if !w.packages.is_empty() {
            clauses.push(format!("id IN ({})", placeholders(backend, 1, w.packages.len())));
            n += w.packages.len();
        }
        if !w.admitting_users.is_empty() {
            let users = placeholders(backend, n + 1, w.admitting_users.len());
            n += w.admitting_users.len();
            clauses.push(format!(
                "(user_id IN ({users}) AND status IN ('active', 'queued') AND starts_at <= {} AND ends_at > {})",
                placeholders(backend, n + 1, 1),
                placeholders(backend, n + 2, 1)
            ));
        }
        if clauses.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {TERMS_COLUMNS} FROM user_packages WHERE {} ORDER BY user_id, ends_at, id",
            clauses.join(" OR ")
        );
        let mut query = bind_all(sqlx::query_as::<_, TermsRow>(&sql), &w.packages);
        if !w.admitting_users.is_empty() {
            query = bind_all(query, &w.admitting_users).bind(w.latest).bind(w.earliest);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let terms = row.terms();
            let admitting = w.admitting_users.binary_search(&row.user_id).is_ok();
            if admitting && (row.status == "active" || row.status == "queued") {
                self.packages.entry(row.user_id).or_default().push(terms.clone());
            }
            self.terms.insert(row.id, terms);
        }
        Ok(())
    }

    async fn read_days(&mut self, conn: &mut AnyConnection, backend: Backend, w: &Wanted) -> Result<()> {
        let sql = format!(
            "SELECT user_id, business_date, package_used, balance_used FROM daily_usage \
             WHERE user_id IN ({}) AND business_date IN ({})",
            placeholders(backend, 1, w.users.len()),
            placeholders(backend, w.users.len() + 1, w.dates.len())
        );
        let rows: Vec<(i64, String, i64, i64)> =
            bind_all(bind_all(sqlx::query_as(&sql), &w.users), &w.dates).fetch_all(&mut *conn).await?;
        for (user_id, date, package_used, balance_used) in rows {
            self.days.insert((user_id, date), (package_used, balance_used));
        }
        Ok(())
    }

    /// Usage of the windows of every package read, of the 5-hour cap of users who have
    /// one and of the daily cap of keys that have one: the calendar windows of the
    /// batch's instants, the terms, and every 5-hour block that may still run.
    async fn read_windows(&mut self, conn: &mut AnyConnection, backend: Backend, w: &Wanted) -> Result<()> {
        let mut scopes: Vec<String> = self.terms.keys().map(|id| package_scope(*id)).collect();
        scopes.extend(self.users.iter().filter(|(_, u)| u.five_hour_cap.is_some()).map(|(id, _)| user_scope(*id)));
        scopes.extend(self.keys.iter().filter(|(_, k)| k.daily_cap.is_some()).map(|(id, _)| key_scope(*id)));
        if scopes.is_empty() {
            return Ok(());
        }
        scopes.sort_unstable();
        let block_since = w.earliest.saturating_sub(Duration::hours(BLOCK_HOURS).num_microseconds().unwrap_or(0));
        let sql = format!(
            "SELECT scope, kind, period, starts_at, used FROM window_usage WHERE scope IN ({}) \
             AND (period IN ({}) OR (kind = '5h' AND starts_at > {}))",
            placeholders(backend, 1, scopes.len()),
            placeholders(backend, scopes.len() + 1, w.periods.len()),
            placeholders(backend, scopes.len() + w.periods.len() + 1, 1)
        );
        let rows: Vec<(String, String, String, i64, i64)> =
            bind_all(bind_all(sqlx::query_as(&sql), &scopes), &w.periods)
                .bind(block_since)
                .fetch_all(&mut *conn)
                .await?;
        for (scope, kind, period, starts_at, used) in rows {
            let Some(kind) = crate::foundation::clock::windows::WindowKind::parse(&kind) else { continue };
            if kind == crate::foundation::clock::windows::WindowKind::FiveHour {
                let latest = self.blocks.entry(scope.clone()).or_insert(starts_at);
                *latest = (*latest).max(starts_at);
            }
            self.windows.insert((scope, kind.as_str(), period), used);
        }
        Ok(())
    }
}
