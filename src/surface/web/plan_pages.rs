//! The dashboard's plan card: every window of the packages in force (used, limit,
//! reset, bar) and the billing preference switch (`POST /dashboard/billing-preference`).

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::ctx::{CsrfForm, Ctx, Signed};
use super::error_page_for;
use crate::domain::billing::quota::{self, PackageWindows};
use crate::domain::billing::rules::Preference;
use crate::foundation::clock::windows::WindowKind;
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard/billing-preference", post(set_preference))
}

/// One window as the dashboard shows it.
pub struct WindowRow {
    pub label: String,
    pub used: String,
    pub limit: String,
    pub remaining: String,
    /// Empty for a 5-hour block that has not started.
    pub resets: String,
    pub percent: i64,
    /// Bar colour: "", "warn" (80 %+) or "bad" (used up).
    pub level: &'static str,
}

/// A package in force and its windows.
pub struct PlanRow {
    pub name: String,
    pub windows: Vec<WindowRow>,
}

/// The preference switch: (value, label, selected).
pub type PreferenceChoice = (&'static str, String, bool);

fn window_label(ctx: &Ctx, kind: WindowKind) -> String {
    ctx.t(match kind {
        WindowKind::FiveHour => "plan.window_5h",
        WindowKind::Day => "plan.window_day",
        WindowKind::Week => "plan.window_week",
        WindowKind::Month => "plan.window_month",
        WindowKind::Total => "plan.window_total",
    })
    .to_string()
}

/// The rows of the plan card.
pub fn plan_rows(
    ctx: &Ctx,
    calendar: &crate::foundation::clock::BusinessCalendar,
    plans: &[PackageWindows],
) -> Vec<PlanRow> {
    plans
        .iter()
        .map(|p| PlanRow {
            name: p.name.clone(),
            windows: p
                .windows
                .iter()
                .map(|w| WindowRow {
                    label: window_label(ctx, w.window),
                    used: w.used.to_string(),
                    limit: w.limit.to_string(),
                    remaining: w.remaining.to_string(),
                    resets: w
                        .resets
                        .map(|t| super::view::time(calendar, crate::foundation::clock::to_micros(t)))
                        .unwrap_or_default(),
                    percent: w.percent,
                    level: if w.percent >= 100 {
                        "bad"
                    } else if w.percent >= 80 {
                        "warn"
                    } else {
                        ""
                    },
                })
                .collect(),
        })
        .collect()
}

/// The choices of the preference switch, the one in force selected.
pub fn preference_choices(ctx: &Ctx, current: Preference) -> Vec<PreferenceChoice> {
    Preference::ALL
        .into_iter()
        .map(|p| (p.as_str(), ctx.t(&format!("plan.pref_{}", p.as_str())).to_string(), p == current))
        .collect()
}

#[derive(Deserialize)]
struct PreferenceForm {
    preference: String,
}

async fn set_preference(
    State(state): State<AppState>,
    signed: Signed,
    CsrfForm(form): CsrfForm<PreferenceForm>,
) -> Response {
    let Some(preference) = Preference::parse(form.preference.trim()) else {
        let error =
            Error::validation("preference", "must be package_first, balance_first, package_only or balance_only");
        return error_page_for(&signed.ctx, &error);
    };
    match quota::set_preference(state.env(), signed.user.id, preference).await {
        Ok(_) => Redirect::to("/dashboard").into_response(),
        Err(e) => error_page_for(&signed.ctx, &e),
    }
}
