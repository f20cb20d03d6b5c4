//! `/usage.csv` and `/admin/usage.csv`: the rows the usage page's filters match, as CSV
//! (exact amounts, the request id and the failure reason), for a spreadsheet or an
//! invoice. At most [`MAX_ROWS`] rows, newest first; the page's total says how many match.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ctx::{AdminPage, Signed};
use super::error_page_for;
use super::usage_pages::UsageQuery;
use super::view;
use crate::domain::billing::usage::{self, UsageFilter, UsageRow};
use crate::foundation::error::Result;
use crate::runtime::state::AppState;

/// Rows one export carries at most.
pub const MAX_ROWS: i64 = 10_000;

const HEADER: &str = "time,request_id,user_id,api_key_id,endpoint,model,status,input_tokens,cached_tokens,\
output_tokens,cost,package_cost,balance_cost,estimated,error";

/// One CSV field: quoted when it holds a separator, quote or line break; a leading
/// `= + - @` that is not a number is defused with `'` so a spreadsheet never runs it.
pub fn field(text: &str) -> String {
    let risky =
        text.starts_with(['=', '+', '-', '@', '\t', '\r']) && crate::foundation::money::Money::parse(text).is_err();
    let text = if risky { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn line(row: &UsageRow, state: &AppState) -> String {
    let cells = [
        state.calendar().format(crate::foundation::clock::from_micros(row.created_at)),
        row.request_id.clone(),
        row.user_id.to_string(),
        row.api_key_id.map(|k| k.to_string()).unwrap_or_default(),
        row.endpoint.clone(),
        row.model.clone(),
        row.status_code.to_string(),
        row.input_tokens.to_string(),
        row.cached_tokens.to_string(),
        row.output_tokens.to_string(),
        view::money_6dp(row.cost),
        view::money_6dp(row.package_cost),
        view::money_6dp(row.balance_cost),
        (row.estimated != 0).to_string(),
        row.error.clone().unwrap_or_default(),
    ];
    cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",")
}

async fn csv(state: &AppState, filter: &UsageFilter, name: &str) -> Result<Response> {
    let (rows, _) = usage::list(state.env(), filter, MAX_ROWS, 0).await?;
    let mut body = String::with_capacity(64 * (rows.len() + 1));
    body.push_str(HEADER);
    body.push('\n');
    for row in &rows {
        body.push_str(&line(row, state));
        body.push('\n');
    }
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// The signed-in user's rows.
pub async fn user_csv(State(state): State<AppState>, signed: Signed, Query(query): Query<UsageQuery>) -> Response {
    let answer = async {
        let filter = UsageFilter { user_id: Some(signed.user.id), ..query.filter()? };
        csv(&state, &filter, "usage.csv").await
    }
    .await;
    answer.unwrap_or_else(|e| error_page_for(&signed.ctx, &e))
}

/// Everyone's rows (or one user's, by email), for operators.
pub async fn admin_csv(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<UsageQuery>,
) -> Response {
    let answer = async {
        let mut filter = query.filter()?;
        if !query.user.trim().is_empty() {
            let user = crate::domain::users::find_by_email(&state.db, &query.user).await?;
            filter.user_id = Some(user.map(|u| u.id).unwrap_or(-1));
        }
        csv(&state, &filter, "usage-all.csv").await
    }
    .await;
    answer.unwrap_or_else(|e| error_page_for(&signed.ctx, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("gpt-5"), "gpt-5");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-0.002075"), "-0.002075", "a negative amount stays a number");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
    }
}
