//! Where a user stands in each window of the packages in force, and their billing
//! preference: the figures of `/api/user/daily-usage`, `/api/user/quota` and the
//! dashboard, computed with the same window arithmetic as admission.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

use super::allowance::{package_scope, Terms, TermsRow, TERMS_COLUMNS};
use super::rules::Preference;
use super::Env;
use crate::foundation::clock::windows::{WindowKind, BLOCK_HOURS};
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// One window of a package as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WindowView {
    pub window: WindowKind,
    pub limit: Money,
    pub used: Money,
    pub remaining: Money,
    /// When the window ends; `null` for a 5-hour block that has not started (the next
    /// request starts one).
    pub resets_at: Option<String>,
    /// Share of the limit used, 0-100 (for bars).
    pub percent: i64,
    /// `resets_at` as an instant, and the window's length in minutes (Codex headers).
    #[serde(skip)]
    pub resets: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub minutes: i64,
}

/// A package in force with its windows.
#[derive(Debug, Clone, Serialize)]
pub struct PackageWindows {
    pub id: i64,
    pub name: String,
    pub ends_at: String,
    pub windows: Vec<WindowView>,
    /// The models the package pays for (absent = every model): admission counts its room
    /// only for those, so the dashboard states per model what a request may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// The packages in force for `user_id` at `now` (earliest-ending first, the order they
/// pay in), each with its windows.
pub async fn packages_in_force(
    conn: &mut AnyConnection,
    calendar: &BusinessCalendar,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<PackageWindows>> {
    let rows: Vec<TermsRow> = sqlx::query_as(&format!(
        "SELECT {TERMS_COLUMNS} FROM user_packages \
         WHERE user_id = $1 AND status IN ('active', 'queued') AND starts_at <= $2 AND ends_at > $2 \
         ORDER BY ends_at, id"
    ))
    .bind(user_id)
    .bind(to_micros(now))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let terms = row.terms();
        let windows = windows_of(conn, calendar, &terms, now).await?;
        out.push(PackageWindows {
            id: row.id,
            name: row.name,
            ends_at: calendar.format(from_micros(row.ends_at)),
            windows,
            models: terms.models,
        });
    }
    Ok(out)
}

/// A package's windows at `now`, read from `window_usage` with one statement.
async fn windows_of(
    conn: &mut AnyConnection,
    calendar: &BusinessCalendar,
    terms: &Terms,
    now: DateTime<Utc>,
) -> Result<Vec<WindowView>> {
    let scope = package_scope(terms.id);
    let since = to_micros(now - Duration::hours(BLOCK_HOURS));
    let used: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT kind, period, starts_at, used FROM window_usage WHERE scope = $1 \
         AND (period IN ($2, $3, $4, 'total') OR (kind = '5h' AND starts_at > $5))",
    )
    .bind(&scope)
    .bind(calendar.day_span(now).period)
    .bind(calendar.week_span(now).period)
    .bind(calendar.month_span(now).period)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    let block = used.iter().filter(|r| r.0 == "5h").map(|r| r.2).max().map(from_micros);
    let running = block.filter(|start| *start + Duration::hours(BLOCK_HOURS) > now);
    let lookup = |span: &crate::foundation::clock::windows::Span| {
        let micros = used
            .iter()
            .find(|(kind, period, _, _)| kind == span.kind.as_str() && *period == span.period)
            .map_or(0, |r| r.3);
        Money::from_micros(micros)
    };
    Ok(terms
        .windows(calendar, now, running, &lookup)
        .into_iter()
        .map(|w| {
            // No block runs: the next request starts a fresh one.
            let idle = w.span.kind == WindowKind::FiveHour && running.is_none();
            let used = if idle { Money::ZERO } else { w.used };
            let remaining = w.limit.saturating_sub(used).max(Money::ZERO);
            WindowView {
                window: w.span.kind,
                limit: w.limit,
                used,
                remaining,
                resets_at: (!idle).then(|| calendar.format(w.span.end)),
                percent: percent(used, w.limit),
                resets: (!idle).then_some(w.span.end),
                minutes: (w.span.end - w.span.start).num_minutes(),
            }
        })
        .collect())
}

/// `used` as a share of `limit`, 0-100.
pub fn percent(used: Money, limit: Money) -> i64 {
    if !limit.is_positive() {
        return if used.is_positive() { 100 } else { 0 };
    }
    let share = i128::from(used.micros().max(0)) * 100 / i128::from(limit.micros());
    i64::try_from(share.min(100)).unwrap_or(100)
}

/// The user's billing preference and whether it is their own choice.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PreferenceView {
    pub preference: Preference,
    /// False when the user chose nothing and the admin default applies.
    pub chosen: bool,
}

/// The preference in force for a user.
pub async fn preference(env: Env<'_>, user_id: i64) -> Result<PreferenceView> {
    let stored: Option<String> = sqlx::query_scalar("SELECT billing_preference FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(env.db.pool())
        .await?
        .ok_or(Error::NotFound("user"))?;
    let default = env.settings.get().await?.default_billing_preference;
    let chosen = stored.as_deref().and_then(Preference::parse);
    Ok(PreferenceView { preference: chosen.unwrap_or(default), chosen: chosen.is_some() })
}

/// Sets a user's preference; their next request is admitted under it (the hint of
/// what they may spend is dropped, since it was computed under the old one).
pub async fn set_preference(env: Env<'_>, user_id: i64, preference: Preference) -> Result<PreferenceView> {
    let done = sqlx::query("UPDATE users SET billing_preference = $1, updated_at = $2 WHERE id = $3")
        .bind(preference.as_str())
        .bind(to_micros(env.now()))
        .bind(user_id)
        .execute(env.db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("user"));
    }
    super::user_changed(env, user_id).await;
    Ok(PreferenceView { preference, chosen: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_capped_and_safe_on_zero_limits() {
        let m = |s: &str| Money::parse(s).unwrap();
        assert_eq!(percent(m("2.5"), m("10")), 25);
        assert_eq!(percent(m("12"), m("10")), 100);
        assert_eq!(percent(m("0"), m("0")), 0);
        assert_eq!(percent(m("1"), m("0")), 100);
    }
}
