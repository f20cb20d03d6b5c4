//! Read side of billing: where a user stands today, their spend history, and the
//! usage log listings for users and admins.

use chrono::{Days, NaiveDate};
use serde::Serialize;

use super::Env;
use super::{applicable_package, day_usage};
use crate::foundation::clock::{date_key, from_micros, BusinessCalendar};
use crate::foundation::error::Result;
use crate::foundation::money::Money;

/// `GET /api/user/daily-usage`.
#[derive(Debug, Serialize)]
pub struct DailyUsageView {
    pub date: String,
    pub timezone: String,
    pub next_reset_at: String,
    pub balance: Money,
    pub package: Option<PackageToday>,
    pub spent_today: SpentToday,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<DaySpend>>,
    /// Who pays first for this user now.
    pub billing_preference: super::rules::Preference,
    /// The windows of the package in force (`package`): 5h, day, week, month, total.
    pub windows: Vec<super::quota::WindowView>,
    /// Every package in force, earliest-ending (first to pay) first, with its windows.
    pub packages_in_force: Vec<super::quota::PackageWindows>,
}

/// The package in force and how much of today's allowance is left.
#[derive(Debug, Serialize)]
pub struct PackageToday {
    pub id: i64,
    pub name: String,
    /// `null` when the plan has no daily window (then `remaining_today` is `null` too).
    pub daily_limit: Option<Money>,
    pub used_today: Money,
    pub remaining_today: Option<Money>,
    pub starts_at: String,
    pub ends_at: String,
}

#[derive(Debug, Serialize)]
pub struct SpentToday {
    pub package: Money,
    pub balance: Money,
    pub total: Money,
}

/// One business day of spend, for charts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DaySpend {
    pub date: String,
    pub package: Money,
    pub balance: Money,
    pub total: Money,
    pub requests: i64,
}

/// Where a user stands now; `history_days` adds that many days of spend (today last).
pub async fn daily_usage(env: Env<'_>, user_id: i64, history_days: Option<u32>) -> Result<DailyUsageView> {
    let now = env.now();
    let calendar = env.calendar();
    let today = calendar.business_date(now);
    let mut conn = env.db.pool().acquire().await?;
    let balance: i64 =
        sqlx::query_scalar("SELECT balance FROM users WHERE id = $1").bind(user_id).fetch_one(&mut *conn).await?;
    let package = applicable_package(&mut conn, user_id, now).await?;
    let (package_used, balance_used) = day_usage(&mut conn, user_id, today).await?;
    let package = package.map(|p| {
        let limit = p.daily_limit.map(Money::from_micros);
        PackageToday {
            id: p.id,
            name: p.name,
            daily_limit: limit,
            used_today: package_used,
            remaining_today: limit.map(|l| super::rules::remaining_allowance(Some(l), package_used)),
            starts_at: calendar.format(from_micros(p.starts_at)),
            ends_at: calendar.format(from_micros(p.ends_at)),
        }
    });
    let in_force = super::quota::packages_in_force(&mut conn, calendar, user_id, now).await?;
    drop(conn);
    let windows = package
        .as_ref()
        .and_then(|p| in_force.iter().find(|f| f.id == p.id))
        .or(in_force.first())
        .map(|f| f.windows.clone())
        .unwrap_or_default();
    let billing_preference = super::quota::preference(env, user_id).await?.preference;
    let history = match history_days {
        Some(days) => Some(history(env, user_id, today, days.clamp(1, 366)).await?),
        None => None,
    };
    Ok(DailyUsageView {
        date: date_key(today),
        timezone: calendar.zone_name().to_string(),
        next_reset_at: calendar.format(calendar.next_reset(now)),
        balance: Money::from_micros(balance),
        package,
        spent_today: SpentToday {
            package: package_used,
            balance: balance_used,
            total: package_used.saturating_add(balance_used),
        },
        history,
        billing_preference,
        windows,
        packages_in_force: in_force,
    })
}

/// Spend per day for the `days` days ending `today`, zero-filled.
pub async fn history(env: Env<'_>, user_id: i64, today: NaiveDate, days: u32) -> Result<Vec<DaySpend>> {
    let first = today.checked_sub_days(Days::new(u64::from(days) - 1)).unwrap_or(today);
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT business_date, package_used, balance_used, requests FROM daily_usage \
         WHERE user_id = $1 AND business_date >= $2 AND business_date <= $3",
    )
    .bind(user_id)
    .bind(date_key(first))
    .bind(date_key(today))
    .fetch_all(env.db.pool())
    .await?;
    Ok(zero_filled(&rows, first, today))
}

/// One [`DaySpend`] per date from `first` to `today` (oldest first) out of
/// `(business_date, package, balance, requests)` rows, zeros where a day has none.
pub fn zero_filled(rows: &[(String, i64, i64, i64)], first: NaiveDate, today: NaiveDate) -> Vec<DaySpend> {
    let mut out = Vec::new();
    let mut date = first;
    while date <= today {
        let key = date_key(date);
        let (package, balance, requests) = rows
            .iter()
            .find(|r| r.0 == key)
            .map(|r| (Money::from_micros(r.1), Money::from_micros(r.2), r.3))
            .unwrap_or((Money::ZERO, Money::ZERO, 0));
        out.push(DaySpend { date: key, package, balance, total: package.saturating_add(balance), requests });
        match date.checked_add_days(Days::new(1)) {
            Some(next) => date = next,
            None => break,
        }
    }
    out
}

/// A row of `usage_logs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub id: i64,
    pub request_id: String,
    pub user_id: i64,
    pub api_key_id: Option<i64>,
    pub upstream_id: Option<i64>,
    pub endpoint: String,
    pub model: String,
    pub status_code: i64,
    pub streamed: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
    pub package_cost: i64,
    pub balance_cost: i64,
    pub estimated: i64,
    pub first_byte_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub business_date: String,
    pub error: Option<String>,
    pub created_at: i64,
}

const USAGE_COLUMNS: &str =
    "id, request_id, user_id, api_key_id, upstream_id, endpoint, model, status_code, streamed, \
    input_tokens, cached_tokens, output_tokens, reasoning_tokens, cost, package_cost, balance_cost, estimated, \
    first_byte_ms, total_ms, business_date, error, created_at";

/// What the API shows of a usage row.
#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    pub id: i64,
    pub request_id: String,
    pub user_id: i64,
    pub api_key_id: Option<i64>,
    pub upstream_id: Option<i64>,
    pub endpoint: String,
    pub model: String,
    pub status: i64,
    pub streamed: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: Money,
    pub package_cost: Money,
    pub balance_cost: Money,
    pub estimated: bool,
    pub first_byte_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub business_date: String,
    pub error: Option<String>,
    pub created_at: String,
}

impl UsageRow {
    pub fn view(&self, calendar: &BusinessCalendar) -> UsageView {
        UsageView {
            id: self.id,
            request_id: self.request_id.clone(),
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            upstream_id: self.upstream_id,
            endpoint: self.endpoint.clone(),
            model: self.model.clone(),
            status: self.status_code,
            streamed: self.streamed != 0,
            input_tokens: self.input_tokens,
            cached_tokens: self.cached_tokens,
            output_tokens: self.output_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost: Money::from_micros(self.cost),
            package_cost: Money::from_micros(self.package_cost),
            balance_cost: Money::from_micros(self.balance_cost),
            estimated: self.estimated != 0,
            first_byte_ms: self.first_byte_ms,
            total_ms: self.total_ms,
            business_date: self.business_date.clone(),
            error: self.error.clone(),
            created_at: calendar.format(from_micros(self.created_at)),
        }
    }
}

/// Filters for usage listings; `None` = any.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<i64>,
    pub api_key_id: Option<i64>,
    pub model: Option<String>,
    /// Business dates, inclusive.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// One request by its id (what a user quotes to support, or finds in a client log).
    pub request_id: Option<String>,
}

/// The `WHERE` shared by the listing, the summary and the export ($1..$6 bound by [`bind_filter`]).
const FILTER_WHERE: &str = "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR api_key_id = $2) \
    AND ($3 IS NULL OR model = $3) AND ($4 IS NULL OR business_date >= $4) AND ($5 IS NULL OR business_date <= $5) \
    AND ($6 IS NULL OR request_id = $6)";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    filter: &'q UsageFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    query
        .bind(filter.user_id)
        .bind(filter.api_key_id)
        .bind(filter.model.as_deref())
        .bind(filter.date_from.as_deref())
        .bind(filter.date_to.as_deref())
        .bind(filter.request_id.as_deref())
}

/// Totals of the requests a filter matches, overall and per model (largest cost first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageSummary {
    pub requests: i64,
    pub cost: Money,
    pub package_cost: Money,
    pub balance_cost: Money,
    pub models: Vec<ModelTotal>,
}

/// One model's line of a [`UsageSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTotal {
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Money,
}

/// The period total and per-model breakdown of everything `filter` matches (all pages),
/// summed by SQL in integer micros.
pub async fn summary(env: Env<'_>, filter: &UsageFilter) -> Result<UsageSummary> {
    type Line = (String, i64, i64, i64, i64, i64, i64);
    let sql = format!(
        "SELECT model, COUNT(*), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
           CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost), 0) AS BIGINT), \
           CAST(COALESCE(SUM(package_cost), 0) AS BIGINT), CAST(COALESCE(SUM(balance_cost), 0) AS BIGINT) \
         FROM usage_logs {FILTER_WHERE} GROUP BY model"
    );
    let mut lines: Vec<Line> = bind_filter(sqlx::query_as::<_, Line>(&sql), filter).fetch_all(env.db.pool()).await?;
    lines.sort_by(|a, b| b.4.cmp(&a.4).then_with(|| a.0.cmp(&b.0)));
    let mut total = UsageSummary::default();
    for (model, requests, input_tokens, output_tokens, cost, package_cost, balance_cost) in lines {
        total.requests += requests;
        total.cost = total.cost.saturating_add(Money::from_micros(cost));
        total.package_cost = total.package_cost.saturating_add(Money::from_micros(package_cost));
        total.balance_cost = total.balance_cost.saturating_add(Money::from_micros(balance_cost));
        total.models.push(ModelTotal { model, requests, input_tokens, output_tokens, cost: Money::from_micros(cost) });
    }
    Ok(total)
}

/// One page of usage rows, newest first, and the total matching.
pub async fn list(env: Env<'_>, filter: &UsageFilter, limit: i64, offset: i64) -> Result<(Vec<UsageRow>, i64)> {
    let sql = format!("SELECT {USAGE_COLUMNS} FROM usage_logs {FILTER_WHERE} ORDER BY id DESC LIMIT $7 OFFSET $8");
    let rows = bind_filter(sqlx::query_as::<_, UsageRow>(&sql), filter)
        .bind(limit)
        .bind(offset)
        .fetch_all(env.db.pool())
        .await?;
    let count_sql = format!("SELECT COUNT(*) FROM usage_logs {FILTER_WHERE}");
    let (total,): (i64,) =
        bind_filter(sqlx::query_as::<_, (i64,)>(&count_sql), filter).fetch_one(env.db.pool()).await?;
    Ok((rows, total))
}
