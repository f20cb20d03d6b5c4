//! Announcements: admin CRUD under `/api/admin/announcements` (audited with before/after)
//! and `GET /api/announcements`, the ones to show right now (no sign-in needed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr};
use super::pagination::PageQuery;
use crate::domain::announcements::{self, AnnouncementInput};
use crate::domain::auth::AdminUser;
use crate::foundation::error::Error;
use crate::runtime::state::AppState;
use crate::surface::admin::announcements as admin_announcements;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/announcements", get(current))
        .route("/api/admin/announcements", get(list).post(create))
        .route("/api/admin/announcements/{id}", put(update).delete(remove))
}

/// Create and update body; on update absent fields keep their value and `null` clears a time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnouncementBody {
    title: Option<String>,
    body: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "super::nullable")]
    starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::nullable")]
    ends_at: Option<Option<String>>,
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Error> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t.trim())
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| Error::validation(field, "must be an RFC 3339 time such as 2026-01-15T08:00:00+08:00"))
    })
    .transpose()
}

impl AnnouncementBody {
    /// Applies this body over `base` and validates the result.
    fn merge_into(self, mut base: AnnouncementInput) -> Result<AnnouncementInput, Error> {
        if let Some(title) = self.title {
            base.title = title;
        }
        if let Some(body) = self.body {
            base.body = body;
        }
        if let Some(enabled) = self.enabled {
            base.enabled = enabled;
        }
        if let Some(starts_at) = self.starts_at {
            base.starts_at = parse_time("starts_at", starts_at.as_deref())?;
        }
        if let Some(ends_at) = self.ends_at {
            base.ends_at = parse_time("ends_at", ends_at.as_deref())?;
        }
        base.validate()?;
        Ok(base)
    }
}

async fn current(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let rows = announcements::current(&state.db, state.now()).await?;
    let items: Vec<_> = rows.iter().map(|a| a.view(state.calendar())).collect();
    Ok(Json(json!({ "items": items })))
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let (rows, total) = announcements::list_all(&state.db, page.limit(), page.offset()).await?;
    let items = rows.iter().map(|a| a.view(state.calendar())).collect();
    Ok(Json(page.wrap(items, total)))
}

async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiJson(body): ApiJson<AnnouncementBody>,
) -> ApiResult<impl IntoResponse> {
    let empty =
        AnnouncementInput { title: String::new(), body: String::new(), enabled: true, starts_at: None, ends_at: None };
    let input = body.merge_into(empty)?;
    let created = admin_announcements::create(&state, client.actor(admin.user.id), &input).await?;
    Ok((StatusCode::CREATED, Json(json!({ "announcement": created.view(state.calendar()) }))))
}

async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<AnnouncementBody>,
) -> ApiResult<impl IntoResponse> {
    let actor = client.actor(admin.user.id);
    let after =
        admin_announcements::update(&state, actor, id, |before| body.merge_into(AnnouncementInput::from_row(before)))
            .await?;
    Ok(Json(json!({ "announcement": after.view(state.calendar()) })))
}

async fn remove(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    admin_announcements::delete(&state, client.actor(admin.user.id), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
