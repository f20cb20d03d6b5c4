//! Usage logs: `/usage` (the user's own requests) and `/admin/usage` (everyone's),
//! filtered by date, model and key (or user), paginated. Reads through
//! `billing::usage::list`, the same query as the JSON API.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use serde::Deserialize;

use super::ctx::{AdminPage, Ctx, Signed};
use super::view::{self, Pager};
use super::{error_page_for, render, FieldErrors};
use crate::domain::auth::api_keys;
use crate::domain::billing::usage::{self, UsageFilter, UsageRow, UsageSummary};
use crate::domain::users;
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/usage", get(user_usage))
        .route("/admin/usage", get(admin_usage))
        .route("/usage.csv", get(super::usage_export::user_csv))
        .route("/admin/usage.csv", get(super::usage_export::admin_csv))
}

const PER_PAGE: i64 = 50;

/// The filter form as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UsageQuery {
    pub from: String,
    pub to: String,
    pub model: String,
    pub key: String,
    pub user: String,
    /// A request id, searched exactly.
    pub request: String,
    pub page: Option<i64>,
}

impl UsageQuery {
    fn date(field: &str, text: &str) -> Result<Option<String>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(|d| Some(crate::foundation::clock::date_key(d)))
            .map_err(|_| Error::validation(field, "must be a date such as 2026-01-31"))
    }

    /// The domain filter (without the user, which the caller decides).
    pub fn filter(&self) -> Result<UsageFilter> {
        Ok(UsageFilter {
            user_id: None,
            api_key_id: self.key.trim().parse().ok(),
            model: Some(self.model.trim().to_string()).filter(|m| !m.is_empty()),
            date_from: Self::date("from", &self.from)?,
            date_to: Self::date("to", &self.to)?,
            request_id: Some(self.request.trim().to_string()).filter(|r| !r.is_empty()),
        })
    }

    fn base_url(&self, path: &str) -> String {
        let query = serde_urlencoded::to_string([
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("model", self.model.as_str()),
            ("key", self.key.as_str()),
            ("user", self.user.as_str()),
            ("request", self.request.as_str()),
        ])
        .unwrap_or_default();
        format!("{path}?{query}")
    }

    /// The same filters on the CSV export.
    pub fn csv_url(&self, admin: bool) -> String {
        self.base_url(if admin { "/admin/usage.csv" } else { "/usage.csv" })
    }
}

/// One usage log line as the table shows it.
pub struct UsageLine {
    pub time: String,
    pub request_id: String,
    /// Why a request failed or was cut short (empty for a clean one).
    pub error: String,
    pub model: String,
    /// The key's name (user page) or the user's email (admin page).
    pub who: String,
    pub user_id: i64,
    pub tokens_in: i64,
    pub tokens_cached: i64,
    pub tokens_out: i64,
    pub cost: String,
    pub package_cost: String,
    pub balance_cost: String,
    pub estimated: bool,
    pub ok: bool,
    pub status: i64,
    pub latency: String,
}

impl UsageLine {
    fn new(row: &UsageRow, who: String, state: &AppState) -> Self {
        UsageLine {
            time: view::time(state.calendar(), row.created_at),
            request_id: row.request_id.clone(),
            error: row.error.clone().unwrap_or_default(),
            model: row.model.clone(),
            who,
            user_id: row.user_id,
            tokens_in: row.input_tokens,
            tokens_cached: row.cached_tokens,
            tokens_out: row.output_tokens,
            cost: view::money_6dp(row.cost),
            package_cost: view::money_6dp(row.package_cost),
            balance_cost: view::money_6dp(row.balance_cost),
            estimated: row.estimated != 0,
            ok: (200..300).contains(&row.status_code) && row.error.is_none(),
            status: row.status_code,
            latency: row.total_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "—".into()),
        }
    }
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage<'a> {
    ctx: &'a Ctx,
    admin: bool,
    query: &'a UsageQuery,
    keys: Vec<(i64, String)>,
    lines: Vec<UsageLine>,
    pager: Pager,
    summary: SummaryView,
    errors: FieldErrors,
}

/// The period total and per-model lines above the table (exact amounts).
#[derive(Default)]
pub struct SummaryView {
    pub requests: i64,
    pub cost: String,
    pub package_cost: String,
    pub balance_cost: String,
    /// (model, requests, input tokens, output tokens, cost).
    pub models: Vec<(String, i64, i64, i64, String)>,
}

impl SummaryView {
    fn new(s: &UsageSummary) -> Self {
        SummaryView {
            requests: s.requests,
            cost: s.cost.to_string(),
            package_cost: s.package_cost.to_string(),
            balance_cost: s.balance_cost.to_string(),
            models: s
                .models
                .iter()
                .map(|m| (m.model.clone(), m.requests, m.input_tokens, m.output_tokens, m.cost.to_string()))
                .collect(),
        }
    }
}

/// One page of rows, the number matching and their totals.
async fn load(state: &AppState, filter: &UsageFilter, page: i64) -> Result<(Vec<UsageRow>, i64, SummaryView)> {
    let (rows, total) = usage::list(state.env(), filter, PER_PAGE, view::page_offset(page, PER_PAGE)).await?;
    let summary = usage::summary(state.env(), filter).await?;
    Ok((rows, total, SummaryView::new(&summary)))
}

async fn user_usage(State(state): State<AppState>, signed: Signed, Query(query): Query<UsageQuery>) -> Response {
    let ctx = &signed.ctx;
    let page = view::page_number(query.page);
    let keys = match api_keys::list_for_user(&state.db, signed.user.id).await {
        Ok(keys) => keys.into_iter().map(|k| (k.id, k.name)).collect::<Vec<_>>(),
        Err(e) => return error_page_for(ctx, &e),
    };
    let (rows, total, summary, errors) = match query.filter() {
        Ok(filter) => match load(&state, &UsageFilter { user_id: Some(signed.user.id), ..filter }, page).await {
            Ok((rows, total, summary)) => (rows, total, summary, FieldErrors::none()),
            Err(e) => return error_page_for(ctx, &e),
        },
        Err(e) => (Vec::new(), 0, SummaryView::default(), FieldErrors::from_error(ctx, &e)),
    };
    let names: HashMap<i64, &str> = keys.iter().map(|(id, name)| (*id, name.as_str())).collect();
    let lines = rows
        .iter()
        .map(|r| {
            let who = r.api_key_id.and_then(|id| names.get(&id).copied()).unwrap_or("—").to_string();
            UsageLine::new(r, who, &state)
        })
        .collect();
    let pager = Pager::new(ctx, &query.base_url("/usage"), page, PER_PAGE, total);
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &UsagePage { ctx, admin: false, query: &query, keys, lines, pager, summary, errors })
}

async fn admin_usage(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<UsageQuery>,
) -> Response {
    let ctx = &signed.ctx;
    let page = view::page_number(query.page);
    let loaded = async {
        let mut filter = query.filter()?;
        if !query.user.trim().is_empty() {
            // An unknown email matches nobody rather than everybody.
            filter.user_id = Some(users::find_by_email(&state.db, &query.user).await?.map(|u| u.id).unwrap_or(-1));
        }
        let (rows, total, summary) = load(&state, &filter, page).await?;
        let mut emails: HashMap<i64, String> = HashMap::new();
        for row in &rows {
            if let std::collections::hash_map::Entry::Vacant(slot) = emails.entry(row.user_id) {
                slot.insert(users::find_by_id(&state.db, row.user_id).await?.map(|u| u.email).unwrap_or_default());
            }
        }
        let lines = rows
            .iter()
            .map(|r| UsageLine::new(r, emails.get(&r.user_id).cloned().unwrap_or_default(), &state))
            .collect::<Vec<_>>();
        Ok::<_, Error>((lines, total, summary))
    }
    .await;
    let (lines, total, summary, errors) = match loaded {
        Ok((lines, total, summary)) => (lines, total, summary, FieldErrors::none()),
        Err(e @ Error::Validation { .. }) => (Vec::new(), 0, SummaryView::default(), FieldErrors::from_error(ctx, &e)),
        Err(e) => return error_page_for(ctx, &e),
    };
    let pager = Pager::new(ctx, &query.base_url("/admin/usage"), page, PER_PAGE, total);
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let page = UsagePage { ctx, admin: true, query: &query, keys: Vec::new(), lines, pager, summary, errors };
    render(ctx, status, &page)
}
