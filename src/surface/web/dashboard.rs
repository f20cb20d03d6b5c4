//! `/dashboard`: the balance (a debt with its sign, plainly), today's spend, the package
//! in force with the days it has left, the packages queued behind it, the countdown to
//! the next daily reset in the named business zone, every plan window and the 30-day
//! chart. Every amount is exact (the figures of `GET /api/user/daily-usage`). It also
//! shows what the next request may use: the figure admission compares a request's
//! worst-case hold with (`billing::rules::funds_available`), per set of models when a
//! package pays only for some, so a refusal that names "X USD is left" matches the page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::chart::SpendChart;
use super::ctx::{Ctx, Signed};
use super::view;
use super::{error_page_for, render};
use crate::domain::auth::api_keys;
use crate::domain::billing::{self, usage::PackageToday};
use crate::domain::packages::held::{self, status, UserPackage};
use crate::foundation::clock::{to_micros, BusinessCalendar};
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage<'a> {
    ctx: &'a Ctx,
    balance: String,
    /// The amount owed when the balance is below zero (without its sign).
    debt: Option<String>,
    spent_today: String,
    spent_package: String,
    spent_balance: String,
    active_keys: usize,
    next_reset: String,
    /// "in 5 h 12 min", to the next reset.
    countdown: String,
    package: Option<PackageStatus>,
    queued: Vec<QueuedPackage>,
    chart: SpendChart,
    /// Current announcements: title and sanitised HTML from their markdown.
    announcements: Vec<(String, String)>,
    /// Every package in force with its windows, and the billing preference switch.
    plans: Vec<super::plan_pages::PlanRow>,
    preferences: Vec<super::plan_pages::PreferenceChoice>,
    admits: Admits,
}

/// What the gateway admits the next request against, and its parts, as the page shows them.
#[derive(Debug, PartialEq, Eq)]
struct Admits {
    /// One line when every package in force pays for every model; otherwise one line per
    /// set of models the same packages pay for, then the line for every other model
    /// (admission counts a package's room only for the models it covers).
    lines: Vec<AdmitLine>,
    balance: String,
    held: String,
}

/// The figure for requests to some models.
#[derive(Debug, PartialEq, Eq)]
struct AdmitLine {
    /// The models of this line; `None` for any model not named on another line.
    models: Option<Vec<String>>,
    /// Package room + balance (as the preference allows) − running holds; `None` when a
    /// package paying for these models has no limit at all.
    figure: Option<String>,
    package_room: String,
}

impl AdmitLine {
    /// The models joined for the page, or "" for the line of every other model.
    fn names(&self) -> String {
        self.models.as_ref().map(|m| m.join(", ")).unwrap_or_default()
    }

    /// The models joined by spaces (a `data-models` attribute tests and scripts read).
    fn key(&self) -> String {
        self.models.as_ref().map(|m| m.join(" ")).unwrap_or_else(|| "*".to_string())
    }
}

impl Admits {
    /// The packages' room is the tightest window of each package that pays for the
    /// request's model, summed, as admission counts it (`batch::plan::packages_now`).
    fn new(
        preference: billing::rules::Preference,
        packages: &[billing::quota::PackageWindows],
        balance: Money,
        held: Money,
    ) -> Self {
        let pays = |p: &billing::quota::PackageWindows, model: Option<&str>| match (&p.models, model) {
            (Some(models), Some(model)) => models.iter().any(|m| m == model),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let line = |models: Option<Vec<String>>, paying: Vec<&billing::quota::PackageWindows>| {
            let rooms: Vec<Option<Money>> =
                paying.iter().map(|p| p.windows.iter().map(|w| w.remaining).min()).collect();
            let unlimited = rooms.iter().any(Option::is_none);
            let room =
                (!paying.is_empty()).then(|| rooms.iter().flatten().fold(Money::ZERO, |sum, r| sum.saturating_add(*r)));
            let uses_package = preference != billing::rules::Preference::BalanceOnly;
            AdmitLine {
                models,
                // Never below zero: a refusal names the same floor ("0.00 USD is left").
                figure: (!(unlimited && uses_package)).then(|| {
                    billing::rules::funds_available(preference, room, balance, held).max(Money::ZERO).to_string()
                }),
                package_room: room.unwrap_or(Money::ZERO).to_string(),
            }
        };
        let named: std::collections::BTreeSet<&String> =
            packages.iter().flat_map(|p| p.models.iter().flatten()).collect();
        // Models the same packages pay for share a line.
        let mut groups: Vec<(Vec<i64>, Vec<String>)> = Vec::new();
        for model in named {
            let ids: Vec<i64> = packages.iter().filter(|p| pays(p, Some(model))).map(|p| p.id).collect();
            match groups.iter_mut().find(|(g, _)| *g == ids) {
                Some((_, models)) => models.push(model.clone()),
                None => groups.push((ids, vec![model.clone()])),
            }
        }
        let mut lines: Vec<AdmitLine> = groups
            .into_iter()
            .map(|(ids, models)| line(Some(models), packages.iter().filter(|p| ids.contains(&p.id)).collect()))
            .collect();
        lines.push(line(None, packages.iter().filter(|p| pays(p, None)).collect()));
        Admits { lines, balance: balance.to_string(), held: held.to_string() }
    }
}

/// The package in force, as the dashboard shows it.
struct PackageStatus {
    name: String,
    limit: String,
    used: String,
    remaining: String,
    percent: i64,
    /// Progress bar colour: "", "warn" (80 %+) or "bad" (used up).
    level: &'static str,
    ends: String,
    /// "12 days left".
    days_left: String,
}

/// A package bought or granted that starts when the one before it ends.
struct QueuedPackage {
    name: String,
    starts: String,
    ends: String,
    daily_limit: String,
    /// "30 days".
    days: String,
}

/// Whole days from `now` to `end`, counting a started day as one (0 once it is past).
pub fn days_until(now: DateTime<Utc>, end_micros: i64) -> i64 {
    const DAY: i64 = 86_400_000_000;
    let left = end_micros.saturating_sub(to_micros(now));
    if left <= 0 {
        0
    } else {
        (left + DAY - 1) / DAY
    }
}

/// The time to `next` as "in 5 h 12 min" in the page's language (minutes rounded up,
/// so the countdown never reads "0 min" before the reset).
pub fn countdown(ctx: &Ctx, now: DateTime<Utc>, next: DateTime<Utc>) -> String {
    let minutes = ((next - now).num_seconds().max(0) + 59) / 60;
    ctx.t("dashboard.countdown").replace("{h}", &(minutes / 60).to_string()).replace("{m}", &(minutes % 60).to_string())
}

fn days_text(ctx: &Ctx, key: &str, n: i64) -> String {
    ctx.t(key).replace("{n}", &n.to_string())
}

impl PackageStatus {
    fn new(ctx: &Ctx, p: &PackageToday, calendar: &BusinessCalendar, now: DateTime<Utc>) -> Self {
        // No daily window: the bar stays empty (the plan card shows the other windows).
        let percent = match p.daily_limit.map(Money::micros) {
            Some(limit) if limit > 0 => (p.used_today.micros().saturating_mul(100) / limit).clamp(0, 100),
            Some(_) => 100,
            None => 0,
        };
        let dash = || "—".to_string();
        let ends_micros = chrono::DateTime::parse_from_rfc3339(&p.ends_at).map(|t| t.timestamp_micros()).ok();
        PackageStatus {
            name: p.name.clone(),
            limit: p.daily_limit.map_or_else(dash, |l| l.to_string()),
            used: p.used_today.to_string(),
            remaining: p.remaining_today.map_or_else(dash, |r| r.to_string()),
            percent,
            level: if percent >= 100 {
                "bad"
            } else if percent >= 80 {
                "warn"
            } else {
                ""
            },
            ends: ends_micros.map(|m| view::time(calendar, m)).unwrap_or_else(|| p.ends_at.clone()),
            days_left: days_text(ctx, "dashboard.days_left", ends_micros.map(|m| days_until(now, m)).unwrap_or(0)),
        }
    }
}

/// The held packages that start later than `now` (the queue behind the one in force).
fn queued(ctx: &Ctx, held: &[UserPackage], calendar: &BusinessCalendar, now: DateTime<Utc>) -> Vec<QueuedPackage> {
    let t = to_micros(now);
    held.iter()
        .filter(|p| (p.status == status::QUEUED || p.status == status::ACTIVE) && p.starts_at > t)
        .map(|p| QueuedPackage {
            name: p.name.clone(),
            starts: view::time(calendar, p.starts_at),
            ends: view::time(calendar, p.ends_at),
            daily_limit: p.daily_limit.map_or_else(|| "—".to_string(), view::money),
            days: days_text(ctx, "dashboard.days", p.duration_days),
        })
        .collect()
}

/// Days of spend the dashboard chart shows.
const CHART_DAYS: u32 = 30;

pub async fn dashboard(State(state): State<AppState>, signed: Signed) -> Response {
    let ctx = &signed.ctx;
    let loaded = async {
        let keys = api_keys::list_for_user(&state.db, signed.user.id).await?;
        let usage = billing::usage::daily_usage(state.env(), signed.user.id, Some(CHART_DAYS)).await?;
        let news = crate::domain::announcements::current(&state.db, state.now()).await?;
        let held = held::list_for_user(&state.db, signed.user.id).await?;
        let holding: i64 = sqlx::query_scalar("SELECT held FROM users WHERE id = $1")
            .bind(signed.user.id)
            .fetch_one(state.db.pool())
            .await?;
        Ok::<_, Error>((keys, usage, news, held, Money::from_micros(holding)))
    }
    .await;
    let (keys, usage, news, held, holding) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let calendar = state.calendar();
    let now = state.now();
    let next_reset = calendar.next_reset(now);
    let page = DashboardPage {
        ctx,
        balance: usage.balance.to_string(),
        debt: usage
            .balance
            .is_negative()
            .then(|| crate::foundation::money::Money::ZERO.saturating_sub(usage.balance).to_string()),
        spent_today: usage.spent_today.total.to_string(),
        spent_package: usage.spent_today.package.to_string(),
        spent_balance: usage.spent_today.balance.to_string(),
        active_keys: keys.iter().filter(|k| k.status == "active").count(),
        next_reset: view::time(calendar, to_micros(next_reset)),
        countdown: countdown(ctx, now, next_reset),
        package: usage.package.as_ref().map(|p| PackageStatus::new(ctx, p, calendar, now)),
        queued: queued(ctx, &held, calendar, now),
        chart: SpendChart::new(usage.history.as_deref().unwrap_or(&[])),
        announcements: news
            .iter()
            .map(|a| (a.title.clone(), crate::foundation::markdown::render_markdown(&a.body)))
            .collect(),
        plans: super::plan_pages::plan_rows(ctx, calendar, &usage.packages_in_force),
        preferences: super::plan_pages::preference_choices(ctx, usage.billing_preference),
        admits: Admits::new(usage.billing_preference, &usage.packages_in_force, usage.balance, holding),
    };
    render(ctx, StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn package(id: i64, models: Option<&[&str]>, remaining: &[&str]) -> billing::quota::PackageWindows {
        let window = |left: &&str| billing::quota::WindowView {
            window: crate::foundation::clock::windows::WindowKind::Day,
            limit: Money::parse("10").unwrap(),
            used: Money::ZERO,
            remaining: Money::parse(left).unwrap(),
            resets_at: None,
            percent: 0,
            resets: None,
            minutes: 0,
        };
        billing::quota::PackageWindows {
            id,
            name: "p".into(),
            ends_at: String::new(),
            windows: remaining.iter().map(window).collect(),
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn figures(a: &Admits) -> Vec<(String, Option<&str>)> {
        a.lines.iter().map(|l| (l.key(), l.figure.as_deref())).collect()
    }

    #[test]
    fn the_admitted_figure_sums_each_packages_tightest_window_with_the_balance_minus_holds() {
        use billing::rules::Preference;
        let m = |s: &str| Money::parse(s).unwrap();
        let two = [package(1, None, &["1.5", "0.25"]), package(2, None, &["0.5"])];
        let a = Admits::new(Preference::PackageFirst, &two, m("1"), m("0.1"));
        assert_eq!(figures(&a), [("*".to_string(), Some("1.65"))], "0.25 + 0.5 + 1 − 0.1");
        assert_eq!(a.lines[0].package_room, "0.75");
        let only = |pref, p: &[_]| figures(&Admits::new(pref, p, m("1"), m("0.1")))[0].1.map(str::to_string);
        assert_eq!(only(Preference::BalanceOnly, &two).as_deref(), Some("0.90"));
        assert_eq!(only(Preference::PackageOnly, &[]).as_deref(), Some("0.00"), "−0.1 held, never below zero");
        let open = [package(1, None, &[])];
        assert_eq!(only(Preference::PackageFirst, &open), None, "no limit");
        assert_eq!(only(Preference::BalanceOnly, &open).as_deref(), Some("0.90"));
    }

    #[test]
    fn a_model_restricted_package_counts_only_on_the_lines_of_its_models() {
        use billing::rules::Preference;
        let m = |s: &str| Money::parse(s).unwrap();
        let held = [
            package(1, Some(&["gpt-5-codex", "gpt-5"]), &["0.4"]),
            package(2, Some(&["gpt-5"]), &["0.2"]),
            package(3, None, &["0.1"]),
        ];
        let a = Admits::new(Preference::PackageFirst, &held, m("1"), m("0"));
        let want = |k: &str, f: &str| (k.to_string(), Some(f.to_string()));
        let got: Vec<_> = figures(&a).into_iter().map(|(k, f)| (k, f.map(str::to_string))).collect();
        assert_eq!(
            got,
            [want("gpt-5", "1.70"), want("gpt-5-codex", "1.50"), want("*", "1.10")],
            "gpt-5: all three + 1; gpt-5-codex: packages 1 and 3 + 1; any other model: package 3 + 1"
        );
        assert_eq!(a.lines[0].names(), "gpt-5");
        // Two models the same packages pay for share a line; with none unrestricted, the
        // other models have the balance only.
        let a = Admits::new(Preference::PackageFirst, &held[..1], m("1"), m("0"));
        let got: Vec<_> = figures(&a).into_iter().map(|(k, f)| (k, f.map(str::to_string))).collect();
        assert_eq!(got, [want("gpt-5 gpt-5-codex", "1.40"), want("*", "1.00")]);
        assert_eq!(a.lines[1].package_room, "0.00");
        assert_eq!(a.lines[0].names(), "gpt-5, gpt-5-codex");
    }

    #[test]
    fn days_left_count_a_started_day_and_stop_at_zero() {
        let now = utc("2026-01-15T12:00:00Z");
        assert_eq!(days_until(now, to_micros(utc("2026-01-15T12:00:01Z"))), 1);
        assert_eq!(days_until(now, to_micros(utc("2026-01-16T12:00:00Z"))), 1);
        assert_eq!(days_until(now, to_micros(utc("2026-01-16T12:00:01Z"))), 2);
        assert_eq!(days_until(now, to_micros(utc("2026-01-01T00:00:00Z"))), 0);
    }

    #[test]
    fn the_countdown_rounds_minutes_up() {
        let ctx = Ctx::bare(super::super::i18n::Lang::En);
        let now = utc("2026-01-15T10:47:30Z");
        assert_eq!(countdown(&ctx, now, utc("2026-01-15T16:00:00Z")), "in 5 h 13 min");
        assert_eq!(countdown(&ctx, now, utc("2026-01-15T10:47:31Z")), "in 0 h 1 min");
    }
}
