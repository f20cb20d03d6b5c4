//! One billing batch: many admissions and settlements in one transaction.
//!
//! The transaction locks every user of the batch (ascending id, so two instances'
//! batches can never deadlock), reads what the rules need with one statement per kind
//! of fact, applies the jobs in arrival order to an in-memory copy of those facts — so
//! the second request of a user sees the first one's hold or charge exactly as if they
//! had run one after another — and writes the result with a handful of multi-row
//! statements. The semantics are those of running each job alone in its own
//! transaction; only the number of round trips and commits changes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::AnyConnection;

use super::rules::{self, AdmissionFacts, Refusal};
use super::{AdmissionRequest, Hold, Settlement, UsageRecord, HOLD_LIFETIME_HOURS};
use crate::auth::api_keys::{check_owner, KeyOwner, KeyRefusal};
use crate::clock::{date_key, to_micros, BusinessCalendar};
use crate::db::{Backend, Db};
use crate::error::{Error, Result};
use crate::ledger;
use crate::money::Money;

/// Work for the billing writer.
pub enum Job {
    /// `forced`: the request is already on its way upstream (admitted on this instance's
    /// headroom hint), so a hold is written even when the rules would refuse it, and the
    /// refusal is reported on the hold instead.
    Admit {
        request: AdmissionRequest,
        now: DateTime<Utc>,
        default_cap: Option<Money>,
        forced: bool,
    },
    Settle {
        hold: Hold,
        record: Box<UsageRecord>,
        now: DateTime<Utc>,
    },
}

/// What a job came to, in the same order as the jobs.
pub enum Outcome {
    Admit(Result<std::result::Result<Hold, KeyRefusal>>),
    Settle(Result<Settlement>),
}

impl Job {
    /// The outcome of a job whose transaction failed.
    pub fn failed(&self, error: Error) -> Outcome {
        match self {
            Job::Admit { .. } => Outcome::Admit(Err(error)),
            Job::Settle { .. } => Outcome::Settle(Err(error)),
        }
    }

    /// True when a caller waits for this job before answering its client: the writer
    /// commits at once instead of lingering to gather a bigger batch.
    pub fn urgent(&self) -> bool {
        matches!(self, Job::Admit { forced: false, .. })
    }

    fn user_id(&self) -> i64 {
        match self {
            Job::Admit { request, .. } => request.user_id,
            Job::Settle { hold, .. } => hold.user_id,
        }
    }
}

/// Runs `jobs` in one transaction; an `Err` means nothing was written.
pub async fn run(db: &Db, calendar: &BusinessCalendar, jobs: &[Job]) -> Result<Vec<Outcome>> {
    let mut tx = db.begin().await?;
    let backend = db.backend();
    let facts = Facts::read(tx.conn(), backend, calendar, jobs).await?;
    let mut plan = Plan { facts, ..Plan::default() };
    let mut outcomes: Vec<Outcome> = jobs.iter().map(|job| plan.apply(job, calendar)).collect();
    let hold_ids = plan.write(tx.conn(), backend).await?;
    tx.commit().await?;
    for outcome in &mut outcomes {
        if let Outcome::Admit(Ok(Ok(hold))) = outcome {
            hold.id = hold_ids.get(&hold.request_id).copied().unwrap_or_default();
        }
    }
    Ok(outcomes)
}

/// A user's row as locked at the start of the batch, then as changed by its jobs.
struct UserFacts {
    balance: i64,
    held: i64,
    daily_cap: Option<i64>,
    status: String,
    role: String,
}

struct KeyFacts {
    user_id: i64,
    status: String,
    spend_limit: Option<i64>,
    spent: i64,
    expires_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: i64,
    user_id: i64,
    status: String,
    spend_limit: Option<i64>,
    spent: i64,
    expires_at: Option<i64>,
}

struct PackageFacts {
    id: i64,
    daily_limit: i64,
    starts_at: i64,
    ends_at: i64,
}

/// Everything read under the locks.
#[derive(Default)]
struct Facts {
    users: HashMap<i64, UserFacts>,
    keys: HashMap<i64, KeyFacts>,
    /// Packages that may apply to an admission of the batch, per user in precedence order.
    packages: HashMap<i64, Vec<PackageFacts>>,
    /// Daily limits of the packages named by the holds being settled.
    package_limits: HashMap<i64, i64>,
    /// (user, business date) → (package used, balance used).
    days: HashMap<(i64, String), (i64, i64)>,
    /// Request ids already settled by an earlier transaction.
    settled: HashSet<String>,
    /// Holds still present (not released by the expiry job), deleted by this batch.
    released: HashSet<i64>,
}

impl Facts {
    async fn read(
        conn: &mut AnyConnection,
        backend: Backend,
        calendar: &BusinessCalendar,
        jobs: &[Job],
    ) -> Result<Facts> {
        let mut facts = Facts::default();
        let mut user_ids: Vec<i64> = jobs.iter().map(Job::user_id).collect();
        user_ids.sort_unstable();
        user_ids.dedup();
        for id in &user_ids {
            let row: Option<(i64, i64, Option<i64>, String, String)> = sqlx::query_as(
                "UPDATE users SET held = held WHERE id = $1 RETURNING balance, held, daily_cap, status, role",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((balance, held, daily_cap, status, role)) = row {
                facts.users.insert(*id, UserFacts { balance, held, daily_cap, status, role });
            }
        }

        let mut key_ids = Vec::new();
        let mut admitting_users = Vec::new();
        let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
        let mut package_ids = Vec::new();
        let mut request_ids = Vec::new();
        let mut hold_ids = Vec::new();
        let mut dates = Vec::new();
        for job in jobs {
            match job {
                Job::Admit { request, now, .. } => {
                    key_ids.push(request.api_key_id);
                    admitting_users.push(request.user_id);
                    earliest = earliest.min(to_micros(*now));
                    latest = latest.max(to_micros(*now));
                    dates.push(date_key(calendar.business_date(*now)));
                }
                Job::Settle { hold, record, .. } => {
                    package_ids.extend(hold.user_package_id);
                    request_ids.push(record.request_id.clone());
                    hold_ids.push(hold.id);
                    dates.push(date_key(hold.business_date));
                }
            }
        }
        for ids in [&mut key_ids, &mut admitting_users, &mut package_ids, &mut hold_ids] {
            ids.sort_unstable();
            ids.dedup();
        }
        dates.sort_unstable();
        dates.dedup();

        if !key_ids.is_empty() {
            let sql = format!(
                "SELECT id, user_id, status, spend_limit, spent, expires_at FROM api_keys WHERE id IN ({})",
                placeholders(backend, 1, key_ids.len())
            );
            let rows: Vec<KeyRow> = bind_all(sqlx::query_as(&sql), &key_ids).fetch_all(&mut *conn).await?;
            for KeyRow { id, user_id, status, spend_limit, spent, expires_at } in rows {
                facts.keys.insert(id, KeyFacts { user_id, status, spend_limit, spent, expires_at });
            }
        }
        if !admitting_users.is_empty() {
            let n = admitting_users.len();
            let sql = format!(
                "SELECT user_id, id, daily_limit, starts_at, ends_at FROM user_packages \
                 WHERE user_id IN ({}) AND status IN ('active', 'queued') AND starts_at <= {} AND ends_at > {} \
                 ORDER BY user_id, starts_at, id",
                placeholders(backend, 1, n),
                placeholders(backend, n + 1, 1),
                placeholders(backend, n + 2, 1)
            );
            let rows: Vec<(i64, i64, i64, i64, i64)> = bind_all(sqlx::query_as(&sql), &admitting_users)
                .bind(latest)
                .bind(earliest)
                .fetch_all(&mut *conn)
                .await?;
            for (user_id, id, daily_limit, starts_at, ends_at) in rows {
                facts.packages.entry(user_id).or_default().push(PackageFacts { id, daily_limit, starts_at, ends_at });
            }
        }
        if !package_ids.is_empty() {
            let sql = format!(
                "SELECT id, daily_limit FROM user_packages WHERE id IN ({})",
                placeholders(backend, 1, package_ids.len())
            );
            let rows: Vec<(i64, i64)> = bind_all(sqlx::query_as(&sql), &package_ids).fetch_all(&mut *conn).await?;
            facts.package_limits.extend(rows);
        }
        {
            let sql = format!(
                "SELECT user_id, business_date, package_used, balance_used FROM daily_usage \
                 WHERE user_id IN ({}) AND business_date IN ({})",
                placeholders(backend, 1, user_ids.len()),
                placeholders(backend, user_ids.len() + 1, dates.len())
            );
            let rows: Vec<(i64, String, i64, i64)> =
                bind_all(bind_all(sqlx::query_as(&sql), &user_ids), &dates).fetch_all(&mut *conn).await?;
            for (user_id, date, package_used, balance_used) in rows {
                facts.days.insert((user_id, date), (package_used, balance_used));
            }
        }
        if !request_ids.is_empty() {
            let sql = format!(
                "SELECT request_id FROM usage_logs WHERE request_id IN ({})",
                placeholders(backend, 1, request_ids.len())
            );
            let rows: Vec<(String,)> = bind_all(sqlx::query_as(&sql), &request_ids).fetch_all(&mut *conn).await?;
            facts.settled.extend(rows.into_iter().map(|(id,)| id));
        }
        if !hold_ids.is_empty() {
            let sql =
                format!("DELETE FROM holds WHERE id IN ({}) RETURNING id", placeholders(backend, 1, hold_ids.len()));
            let rows: Vec<(i64,)> = bind_all(sqlx::query_as(&sql), &hold_ids).fetch_all(&mut *conn).await?;
            facts.released.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(facts)
    }
}

/// `$first, $first+1, ...` for `n` parameters. On SQLite the same statement uses
/// anonymous `?` parameters: SQLite looks each named parameter up by a linear scan,
/// which made binding a multi-row insert quadratic (7% of the CPU in a profile).
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    match backend {
        Backend::Sqlite => vec!["?"; n].join(", "),
        Backend::Postgres => (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "),
    }
}

fn bind_all<'q, O, T>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    values: &'q [T],
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
where
    &'q T: sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    T: 'q,
{
    for value in values {
        query = query.bind(value);
    }
    query
}

/// A hold to insert.
struct NewHold {
    user_id: i64,
    api_key_id: i64,
    amount: i64,
    created_at: i64,
    request_id: String,
}

/// A usage row to insert, with its settled split.
struct NewUsage {
    hold: Hold,
    record: UsageRecord,
    package_cost: i64,
    balance_cost: i64,
    created_at: DateTime<Utc>,
}

/// A ledger row to insert.
struct NewEntry {
    user_id: i64,
    amount: i64,
    balance_after: i64,
    package_amount: i64,
    user_package_id: Option<i64>,
    business_date: String,
    reference: String,
    note: String,
    created_at: i64,
}

/// Accumulated changes to one `daily_usage` row.
#[derive(Default)]
struct DayChange {
    package: i64,
    balance: i64,
    requests: i64,
    user_package_id: Option<i64>,
    updated_at: i64,
}

/// Accumulated changes to one user row.
#[derive(Default)]
struct UserChange {
    balance: i64,
    held: i64,
    updated_at: Option<i64>,
}

/// The batch's effect, built job by job in memory.
#[derive(Default)]
struct Plan {
    facts: Facts,
    holds: Vec<NewHold>,
    usage: Vec<NewUsage>,
    entries: Vec<NewEntry>,
    days: BTreeMap<(i64, String), DayChange>,
    users: BTreeMap<i64, UserChange>,
    /// Key id → (spent added, last used at).
    keys: BTreeMap<i64, (i64, i64)>,
}

impl Plan {
    fn apply(&mut self, job: &Job, calendar: &BusinessCalendar) -> Outcome {
        match job {
            Job::Admit { request, now, default_cap, forced } => {
                Outcome::Admit(self.admit(request, *now, *default_cap, *forced, calendar))
            }
            Job::Settle { hold, record, now } => Outcome::Settle(self.settle(hold, record, *now)),
        }
    }

    fn admit(
        &mut self,
        request: &AdmissionRequest,
        now: DateTime<Utc>,
        default_cap: Option<Money>,
        forced: bool,
        calendar: &BusinessCalendar,
    ) -> Result<std::result::Result<Hold, KeyRefusal>> {
        let user = self.facts.users.get(&request.user_id).ok_or(Error::NotFound("user"))?;
        let key = self.facts.keys.get(&request.api_key_id).filter(|k| k.user_id == request.user_id);
        // The key is re-checked here, under the user's lock, so a revocation, suspension
        // or spend limit takes effect on every instance at once whatever the key cache holds.
        let owner = key.map(|k| KeyOwner {
            key_id: request.api_key_id,
            user_id: request.user_id,
            key_status: k.status.clone(),
            spend_limit: k.spend_limit,
            spent: k.spent,
            expires_at: k.expires_at,
            user_status: user.status.clone(),
            role: user.role.clone(),
        });
        let mut refused = None;
        if let Err(refusal) = check_owner(owner, now) {
            metrics::counter!("gateway_billing_admissions_total", "outcome" => "key_refused").increment(1);
            if !forced {
                return Ok(Err(refusal));
            }
            refused = Some(refusal.code());
        }
        let today = calendar.business_date(now);
        let at = to_micros(now);
        let package = self
            .facts
            .packages
            .get(&request.user_id)
            .and_then(|list| list.iter().find(|p| p.starts_at <= at && p.ends_at > at));
        let (package_used, balance_used) = self.day(request.user_id, today);
        let facts = AdmissionFacts {
            hold: request.hold,
            balance: Money::from_micros(user.balance),
            held: Money::from_micros(user.held),
            daily_limit: package.map(|p| Money::from_micros(p.daily_limit)),
            package_used_today: Money::from_micros(package_used),
            spent_today: Money::from_micros(package_used.saturating_add(balance_used)),
            daily_cap: user.daily_cap.map(Money::from_micros).or(default_cap),
        };
        if let Err(refusal) = rules::decide(&facts) {
            let reason = match refusal {
                Refusal::CannotPay { .. } => "cannot_pay",
                Refusal::CapReached => "cap_reached",
            };
            metrics::counter!("gateway_billing_admissions_total", "outcome" => reason).increment(1);
            if !forced {
                return Err(super::refusal_error(refusal, calendar, now));
            }
            refused = refused.or(Some(reason));
        }
        let user_package_id = package.map(|p| p.id);
        let headroom = rules::remaining_allowance(facts.daily_limit, facts.package_used_today)
            .saturating_add(facts.balance)
            .saturating_sub(facts.held)
            .saturating_sub(request.hold);
        let amount = request.hold.micros();
        if let Some(user) = self.facts.users.get_mut(&request.user_id) {
            user.held = user.held.saturating_add(amount);
        }
        self.users.entry(request.user_id).or_default().held += amount;
        let request_id = request.request_id.clone().unwrap_or_else(crate::telemetry::new_request_id);
        self.holds.push(NewHold {
            user_id: request.user_id,
            api_key_id: request.api_key_id,
            amount,
            created_at: at,
            request_id: request_id.clone(),
        });
        metrics::counter!("gateway_billing_admissions_total", "outcome" => "admitted").increment(1);
        metrics::counter!("gateway_billing_held_micros_total").increment(amount.unsigned_abs());
        Ok(Ok(Hold {
            id: 0,
            request_id,
            user_id: request.user_id,
            api_key_id: request.api_key_id,
            amount: request.hold,
            admitted_at: now,
            business_date: today,
            user_package_id,
            headroom,
            refused,
        }))
    }

    /// Today's (package, balance) usage of a user as changed so far in the batch.
    fn day(&self, user_id: i64, date: NaiveDate) -> (i64, i64) {
        let key = (user_id, date_key(date));
        let (package, balance) = self.facts.days.get(&key).copied().unwrap_or((0, 0));
        match self.days.get(&key) {
            Some(change) => (package + change.package, balance + change.balance),
            None => (package, balance),
        }
    }

    fn settle(&mut self, hold: &Hold, record: &UsageRecord, now: DateTime<Utc>) -> Result<Settlement> {
        if !self.facts.users.contains_key(&hold.user_id) {
            return Err(Error::NotFound("user"));
        }
        // The batch deleted this hold if it was still there: give its amount back even
        // when the request turns out to be settled already.
        let release = if self.facts.released.remove(&hold.id) { hold.amount.micros() } else { 0 };
        if !self.facts.settled.insert(record.request_id.clone()) {
            // Already settled (a retry after an ambiguous commit): no charge.
            let balance = self.release_only(hold.user_id, release);
            return Ok(Settlement {
                package: Money::ZERO,
                balance: Money::ZERO,
                balance_after: Money::from_micros(balance),
                applied: false,
            });
        }
        let package = hold.user_package_id.and_then(|id| self.facts.package_limits.get(&id)).copied();
        let (package_used, _) = self.day(hold.user_id, hold.business_date);
        let split = rules::split_charge(record.cost, package.map(Money::from_micros), Money::from_micros(package_used));
        let date = date_key(hold.business_date);
        let at = to_micros(now);

        let day = self.days.entry((hold.user_id, date.clone())).or_default();
        day.package += split.package.micros();
        day.balance += split.balance.micros();
        day.requests += 1;
        day.user_package_id = hold.user_package_id.or(day.user_package_id);
        day.updated_at = at;

        let balance_after = match self.facts.users.get_mut(&hold.user_id) {
            Some(user) => {
                user.balance = user.balance.saturating_sub(split.balance.micros());
                user.held = (user.held - release).max(0);
                user.balance
            }
            None => return Err(Error::NotFound("user")),
        };
        let change = self.users.entry(hold.user_id).or_default();
        change.balance -= split.balance.micros();
        change.held -= release;
        change.updated_at = Some(at);

        if record.cost.is_positive() {
            self.entries.push(NewEntry {
                user_id: hold.user_id,
                amount: -split.balance.micros(),
                balance_after,
                package_amount: split.package.micros(),
                user_package_id: hold.user_package_id.filter(|_| split.package.is_positive()),
                business_date: date,
                reference: format!("usage:{}", record.request_id),
                note: record.model.clone(),
                created_at: at,
            });
            let key = self.keys.entry(hold.api_key_id).or_insert((0, at));
            key.0 += record.cost.micros();
            key.1 = at;
            if let Some(k) = self.facts.keys.get_mut(&hold.api_key_id) {
                k.spent += record.cost.micros();
            }
        }
        self.usage.push(NewUsage {
            hold: hold.clone(),
            record: record.clone(),
            package_cost: split.package.micros(),
            balance_cost: split.balance.micros(),
            created_at: now,
        });
        Ok(Settlement {
            package: split.package,
            balance: split.balance,
            balance_after: Money::from_micros(balance_after),
            applied: true,
        })
    }

    /// Gives a released hold back to the user's available funds; returns the balance.
    fn release_only(&mut self, user_id: i64, release: i64) -> i64 {
        if release > 0 {
            self.users.entry(user_id).or_default().held -= release;
        }
        match self.facts.users.get_mut(&user_id) {
            Some(user) => {
                user.held = (user.held - release).max(0);
                user.balance
            }
            None => 0,
        }
    }

    /// Writes the plan; returns the new holds' ids by request id.
    async fn write(&self, conn: &mut AnyConnection, backend: Backend) -> Result<HashMap<String, i64>> {
        let mut hold_ids = HashMap::new();
        if !self.holds.is_empty() {
            let sql = format!(
                "INSERT INTO holds (user_id, api_key_id, amount, created_at, expires_at, request_id) VALUES {} \
                 RETURNING id, request_id",
                rows(backend, self.holds.len(), 6)
            );
            let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
            for h in &self.holds {
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
            if hold_ids.len() != self.holds.len() {
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
}

/// `($1, ..., $width), ($width+1, ...)` for `count` rows.
fn rows(backend: Backend, count: usize, width: usize) -> String {
    (0..count).map(|row| format!("({})", placeholders(backend, row * width + 1, width))).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn m(units: &str) -> Money {
        Money::parse(units).unwrap()
    }

    fn calendar() -> BusinessCalendar {
        BusinessCalendar::from_name("Asia/Shanghai").unwrap()
    }

    /// A batch over user 1 (balance `balance`) with key 10, at 2026-01-01 12:00 UTC.
    fn plan(balance: &str, package_limit: Option<&str>) -> (Plan, DateTime<Utc>) {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let mut facts = Facts::default();
        let user = UserFacts {
            balance: m(balance).micros(),
            held: 0,
            daily_cap: None,
            status: "active".into(),
            role: "user".into(),
        };
        facts.users.insert(1, user);
        let key = KeyFacts { user_id: 1, status: "active".into(), spend_limit: None, spent: 0, expires_at: None };
        facts.keys.insert(10, key);
        if let Some(limit) = package_limit {
            let package = PackageFacts {
                id: 7,
                daily_limit: m(limit).micros(),
                starts_at: to_micros(now) - 1,
                ends_at: to_micros(now) + 1_000_000_000,
            };
            facts.packages.insert(1, vec![package]);
            facts.package_limits.insert(7, m(limit).micros());
        }
        (Plan { facts, ..Plan::default() }, now)
    }

    fn admit(plan: &mut Plan, now: DateTime<Utc>, hold: &str) -> Result<std::result::Result<Hold, KeyRefusal>> {
        let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 10, hold: m(hold) };
        plan.admit(&request, now, None, false, &calendar())
    }

    fn usage(id: &str, cost: &str) -> UsageRecord {
        UsageRecord { request_id: id.into(), model: "gpt-5".into(), cost: m(cost), ..UsageRecord::default() }
    }

    #[test]
    fn placeholders_number_rows_consecutively() {
        assert_eq!(placeholders(Backend::Postgres, 3, 2), "$3, $4");
        assert_eq!(rows(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn a_later_admission_in_the_same_batch_sees_the_earlier_hold() {
        let (mut plan, now) = plan("1.00", None);
        assert!(admit(&mut plan, now, "0.60").unwrap().is_ok());
        let refused = admit(&mut plan, now, "0.60").unwrap_err();
        assert_eq!(refused.code(), "insufficient_balance");
        assert!(admit(&mut plan, now, "0.40").unwrap().is_ok());
        assert_eq!(plan.holds.len(), 2);
        assert_eq!(plan.users[&1].held, m("1.00").micros());
    }

    #[test]
    fn a_forced_admission_holds_what_the_rules_refuse_and_says_why() {
        let (mut plan, now) = plan("1.00", None);
        if let Some(key) = plan.facts.keys.get_mut(&10) {
            key.status = "revoked".into();
        }
        let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 10, hold: m("3.00") };
        assert!(plan.admit(&request, now, None, false, &calendar()).unwrap().is_err(), "refused when not forced");
        let hold = plan.admit(&request, now, None, true, &calendar()).unwrap().unwrap();
        assert_eq!(hold.refused, Some("api_key_revoked"));
        assert!(hold.headroom.is_negative(), "the hint it would leave is below zero: {:?}", hold.headroom);
        assert_eq!(plan.holds.len(), 1, "the request was already forwarded: it is held and will be charged");
        assert_eq!(plan.users[&1].held, m("3.00").micros());
        if let Some(key) = plan.facts.keys.get_mut(&10) {
            key.status = "active".into();
        }
        let poor = plan.admit(&request, now, None, true, &calendar()).unwrap().unwrap();
        assert_eq!(poor.refused, Some("cannot_pay"));
    }

    #[test]
    fn settlements_in_one_batch_split_across_the_allowance_in_order_and_once() {
        let (mut plan, now) = plan("5.00", Some("1.00"));
        let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
        plan.facts.released.insert(hold.id);
        let first = plan.settle(&hold, &usage("a", "0.70"), now).unwrap();
        let second = plan.settle(&hold, &usage("b", "0.70"), now).unwrap();
        let again = plan.settle(&hold, &usage("a", "0.70"), now).unwrap();
        assert_eq!((first.package, first.balance), (m("0.70"), m("0")));
        assert_eq!((second.package, second.balance, second.balance_after), (m("0.30"), m("0.40"), m("4.60")));
        assert!(!again.applied && again.balance_after == m("4.60"));
        // The hold was released once; the user's row changes by the balance part only.
        assert_eq!(plan.users[&1].balance, -m("0.40").micros());
        assert_eq!(plan.users[&1].held, 0);
        assert_eq!(plan.entries.iter().map(|e| e.amount).sum::<i64>(), -m("0.40").micros());
        assert_eq!(plan.keys[&10].0, m("1.40").micros());
        let day = &plan.days[&(1, "2026-01-01".to_string())];
        assert_eq!((day.package, day.balance, day.requests), (m("1.00").micros(), m("0.40").micros(), 2));
    }

    #[test]
    fn a_duplicate_settlement_still_gives_back_the_hold_the_batch_deleted() {
        let (mut plan, now) = plan("5.00", None);
        let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
        plan.facts.settled.insert("done".into());
        plan.facts.released.insert(hold.id);
        let again = plan.settle(&hold, &usage("done", "0.70"), now).unwrap();
        assert!(!again.applied && again.balance_after == m("5.00"));
        assert_eq!(plan.users[&1].held, 0, "admitted 0.10, released 0.10");
        assert_eq!(plan.users[&1].balance, 0);
        assert!(plan.usage.is_empty() && plan.entries.is_empty());
    }

    #[test]
    fn a_key_over_its_limit_after_an_earlier_charge_of_the_batch_is_refused() {
        let (mut plan, now) = plan("5.00", None);
        if let Some(key) = plan.facts.keys.get_mut(&10) {
            key.spend_limit = Some(m("0.50").micros());
        }
        let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
        plan.settle(&hold, &usage("a", "0.50"), now).unwrap();
        assert_eq!(admit(&mut plan, now, "0.10").unwrap().unwrap_err(), KeyRefusal::SpendLimitReached);
        if let Some(user) = plan.facts.users.get_mut(&1) {
            user.status = "suspended".into();
        }
        if let Some(key) = plan.facts.keys.get_mut(&10) {
            key.spend_limit = None;
        }
        assert_eq!(admit(&mut plan, now, "0.10").unwrap().unwrap_err(), KeyRefusal::UserSuspended);
    }
}
