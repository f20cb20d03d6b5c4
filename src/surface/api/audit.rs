//! `GET /api/admin/audit`: the admin action trail, paginated and filtered.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::ApiQuery;
use super::pagination::PageQuery;
use crate::domain::audit::{self, AuditFilter};
use crate::domain::auth::AdminUser;
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/audit", get(list))
}

/// `?actor=ID&action=prefix&date=YYYY-MM-DD` (or `from`/`to`, inclusive business dates).
#[derive(Deserialize)]
struct AuditQuery {
    actor: Option<i64>,
    action: Option<String>,
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

fn parse_date(field: &str, text: Option<&str>) -> Result<Option<NaiveDate>, Error> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| {
            NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").map_err(|_| Error::validation(field, "must be YYYY-MM-DD"))
        })
        .transpose()
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = PageQuery::new(query.page, query.per_page);
    let date = parse_date("date", query.date.as_deref())?;
    let from = parse_date("from", query.from.as_deref())?.or(date);
    let to = parse_date("to", query.to.as_deref())?.or(date);
    let calendar = state.calendar();
    let filter = AuditFilter {
        actor_id: query.actor,
        action_prefix: query.action.filter(|a| !a.trim().is_empty()),
        from: from.map(|d| calendar.day_start(d)),
        until: to.and_then(|d| d.succ_opt()).map(|d| calendar.day_start(d)),
    };
    let (rows, total) = audit::list(&state.db, &filter, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|r| r.view(calendar)).collect();
    Ok(Json(page.wrap(items, total)))
}
