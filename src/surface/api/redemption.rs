//! Redemption codes: admins generate and list/export batches, users redeem a code.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiQuery, ClientAddr};
use super::pagination::PageQuery;
use crate::domain::auth::{AdminUser, CurrentUser};
use crate::domain::redemption::{self, BatchRequest};
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin;

/// Most rows one CSV export carries.
const MAX_EXPORT_ROWS: i64 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/redemption-codes", get(list).post(generate)).route("/api/user/redeem", post(redeem))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    count: i64,
    amount: Option<Money>,
    package_id: Option<i64>,
    note: Option<String>,
}

async fn generate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiJson(body): ApiJson<GenerateBody>,
) -> ApiResult<impl IntoResponse> {
    let mut request = BatchRequest {
        count: body.count,
        amount: body.amount,
        package_id: body.package_id,
        note: body.note,
        actor_id: admin.user.id,
    };
    request.validate()?;
    let batch = redemption::generate_audited(&state.db, &request, client.ip(), state.now()).await?;
    Ok((StatusCode::CREATED, Json(batch)))
}

#[derive(Deserialize)]
struct ListQuery {
    batch: Option<i64>,
    format: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    match query.format.as_deref() {
        None | Some("json") => {
            let page = PageQuery::new(query.page, query.per_page);
            let (rows, total) = redemption::list(&state.db, query.batch, page.limit(), page.offset()).await?;
            let items = rows.iter().map(|r| r.view(state.calendar())).collect();
            Ok(Json(page.wrap(items, total)).into_response())
        }
        Some("csv") => {
            let (rows, _) = redemption::list(&state.db, query.batch, MAX_EXPORT_ROWS, 0).await?;
            let name = match query.batch {
                Some(id) => format!("redemption-codes-batch-{id}.csv"),
                None => "redemption-codes.csv".to_string(),
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            let csv = redemption::to_csv(&rows, state.calendar());
            admin::codes_exported(&state, &client.actor(admin.user.id), query.batch, rows.len()).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                csv,
            )
                .into_response())
        }
        Some(_) => Err(Error::validation("format", "must be json or csv").into()),
    }
}

#[derive(Deserialize)]
struct RedeemBody {
    code: String,
}

async fn redeem(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<RedeemBody>,
) -> ApiResult<impl IntoResponse> {
    let credited = redemption::redeem(&state.db, current.user.id, &body.code, state.now()).await?;
    Ok(Json(credited))
}
