//! `/admin/announcements`: write, edit and delete site announcements (markdown, shown
//! sanitised on the dashboard while enabled and inside their dates). Writes go through
//! [`crate::domain::announcements`] and are audited like the JSON API's.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::NaiveDate;
use serde::Deserialize;

use super::admin_write::FormWrite;
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::{error_page_for, render, FieldErrors};
use crate::domain::announcements::{self, Announcement, AnnouncementInput};
use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;
use crate::surface::admin::announcements as admin_announcements;
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/announcements", get(list_page).post(create))
        .route("/admin/announcements/{id}", get(edit_page).post(save))
        .route("/admin/announcements/{id}/delete", post(delete))
}

const LIST_LIMIT: i64 = 100;

/// The announcement form as typed; dates are business days, the end day included.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AnnouncementForm {
    pub title: String,
    pub body: String,
    pub starts_on: String,
    pub ends_on: String,
    pub enabled: String,
}

fn date(field: &str, text: &str) -> Result<Option<NaiveDate>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Error::validation(field, "must be a date such as 2026-01-31"))
}

impl AnnouncementForm {
    fn from_row(a: &Announcement, calendar: &BusinessCalendar) -> Self {
        AnnouncementForm {
            title: a.title.clone(),
            body: a.body.clone(),
            starts_on: a.starts_at.map(|m| calendar.business_date(from_micros(m)).to_string()).unwrap_or_default(),
            // The stored end is the start of the day after the last day shown.
            ends_on: a.ends_at.map(|m| calendar.business_date(from_micros(m - 1)).to_string()).unwrap_or_default(),
            enabled: if a.enabled != 0 { "on".into() } else { String::new() },
        }
    }

    fn input(&self, calendar: &BusinessCalendar) -> Result<AnnouncementInput> {
        let ends = date("ends_on", &self.ends_on)?.and_then(|d| d.succ_opt());
        let mut input = AnnouncementInput {
            title: self.title.clone(),
            body: self.body.clone(),
            enabled: !self.enabled.is_empty(),
            starts_at: date("starts_on", &self.starts_on)?.map(|d| calendar.day_start(d)),
            ends_at: ends.map(|d| calendar.day_start(d)),
        };
        input.validate().map_err(|e| match e {
            Error::Validation { field, .. } if field == "ends_at" => {
                Error::validation("ends_on", "must not be before the start date")
            }
            other => other,
        })?;
        Ok(input)
    }
}

/// An announcement in the admin list, with its rendered preview.
pub struct AnnouncementRow {
    pub id: i64,
    pub title: String,
    pub html: String,
    /// `showing`, `scheduled`, `ended` or `off`.
    pub state: &'static str,
    /// `from → until`, empty when shown without dates.
    pub window: String,
    pub updated: String,
}

impl AnnouncementRow {
    fn new(a: &Announcement, state: &AppState) -> Self {
        let now = to_micros(state.now());
        let form = AnnouncementForm::from_row(a, state.calendar());
        let phase = if a.enabled == 0 {
            "off"
        } else if a.starts_at.is_some_and(|s| now < s) {
            "scheduled"
        } else if a.ends_at.is_some_and(|e| now >= e) {
            "ended"
        } else {
            "showing"
        };
        let or_dots = |s: &str| if s.is_empty() { "…".to_string() } else { s.to_string() };
        let window = if form.starts_on.is_empty() && form.ends_on.is_empty() {
            String::new()
        } else {
            format!("{} → {}", or_dots(&form.starts_on), or_dots(&form.ends_on))
        };
        AnnouncementRow {
            id: a.id,
            title: a.title.clone(),
            html: announcements::render_markdown(&a.body),
            state: phase,
            window,
            updated: super::view::time(state.calendar(), a.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_announcements.html")]
struct ListPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<AnnouncementRow>,
    form: AnnouncementForm,
    notice: Option<&'static str>,
    errors: FieldErrors,
}

async fn render_list(state: &AppState, ctx: &Ctx, form: AnnouncementForm, errors: FieldErrors) -> Response {
    render_list_with(state, ctx, (form, None), errors).await
}

async fn render_list_with(
    state: &AppState,
    ctx: &Ctx,
    (form, notice): (AnnouncementForm, Option<&'static str>),
    errors: FieldErrors,
) -> Response {
    let rows = match announcements::list_all(&state.db, LIST_LIMIT, 0).await {
        Ok((rows, _)) => rows.iter().map(|a| AnnouncementRow::new(a, state)).collect(),
        Err(e) => return error_page_for(ctx, &e),
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &ListPage { ctx, rows, form, notice, errors })
}

async fn list_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    let form = AnnouncementForm { enabled: "on".into(), ..Default::default() };
    render_list(&state, &signed.ctx, form, FieldErrors::none()).await
}

async fn create(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<AnnouncementForm>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        let input = form.input(state.calendar())?;
        admin_announcements::create(&state, client.actor(signed.user.id), &input).await.map(|_| ())
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/announcements");
    form_write.answer(result, async |errors| render_list(&state, ctx, form, errors).await).await
}

#[derive(Template)]
#[template(path = "admin_announcement_edit.html")]
struct EditPage<'a> {
    ctx: &'a Ctx,
    id: i64,
    form: AnnouncementForm,
    errors: FieldErrors,
}

async fn edit_page(State(state): State<AppState>, AdminPage(signed): AdminPage, Path(id): Path<i64>) -> Response {
    let ctx = &signed.ctx;
    let found = async {
        let mut conn = state.db.pool().acquire().await?;
        announcements::find_in(&mut conn, id).await
    }
    .await;
    match found {
        Ok(Some(a)) => {
            let form = AnnouncementForm::from_row(&a, state.calendar());
            render(ctx, StatusCode::OK, &EditPage { ctx, id, form, errors: FieldErrors::none() })
        }
        Ok(None) => error_page_for(ctx, &Error::NotFound("announcement")),
        Err(e) => error_page_for(ctx, &e),
    }
}

async fn save(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<AnnouncementForm>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        let input = form.input(state.calendar())?;
        admin_announcements::update(&state, client.actor(signed.user.id), id, |_| Ok(input)).await.map(|_| ())
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/announcements").editing();
    form_write
        .answer(result, async |errors| {
            render(ctx, StatusCode::UNPROCESSABLE_ENTITY, &EditPage { ctx, id, form, errors })
        })
        .await
}

#[derive(Deserialize)]
struct Empty {}

async fn delete(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let result = admin_announcements::delete(&state, client.actor(signed.user.id), id).await;
    match result {
        Ok(()) => {
            let form = AnnouncementForm { enabled: "on".into(), ..Default::default() };
            render_list_with(&state, ctx, (form, Some("news.deleted")), FieldErrors::none()).await
        }
        Err(e) => error_page_for(ctx, &e),
    }
}
