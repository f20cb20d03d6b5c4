//! Site announcements: admins write markdown, the dashboard shows the ones currently
//! in their window (enabled, started, not ended), rendered by [`render_markdown`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;

pub use crate::foundation::markdown::render_markdown;

use crate::foundation::clock::{from_micros, to_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};

const MAX_TITLE_CHARS: usize = 200;
const MAX_BODY_CHARS: usize = 20_000;

/// A row of `announcements`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Announcement {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub enabled: i64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, title, body, enabled, starts_at, ends_at, created_by, created_at, updated_at";

/// What the API shows: the markdown source and its sanitised HTML.
#[derive(Debug, Clone, Serialize)]
pub struct AnnouncementView {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub body_html: String,
    pub enabled: bool,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Announcement {
    pub fn view(&self, calendar: &BusinessCalendar) -> AnnouncementView {
        let fmt = |m: i64| calendar.format(from_micros(m));
        AnnouncementView {
            id: self.id,
            title: self.title.clone(),
            body: self.body.clone(),
            body_html: render_markdown(&self.body),
            enabled: self.enabled != 0,
            starts_at: self.starts_at.map(fmt),
            ends_at: self.ends_at.map(fmt),
            created_at: fmt(self.created_at),
            updated_at: fmt(self.updated_at),
        }
    }
}

/// The editable fields of an announcement, already merged and parsed.
#[derive(Debug, Clone)]
pub struct AnnouncementInput {
    pub title: String,
    pub body: String,
    pub enabled: bool,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl AnnouncementInput {
    /// The current values of a stored announcement (the base for a partial update).
    pub fn from_row(row: &Announcement) -> Self {
        AnnouncementInput {
            title: row.title.clone(),
            body: row.body.clone(),
            enabled: row.enabled != 0,
            starts_at: row.starts_at.map(from_micros),
            ends_at: row.ends_at.map(from_micros),
        }
    }

    /// Checks the rules, naming the field that breaks one.
    pub fn validate(&mut self) -> Result<()> {
        self.title = self.title.trim().to_string();
        if self.title.is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(Error::validation("title", format!("must be 1 to {MAX_TITLE_CHARS} characters")));
        }
        if self.body.trim().is_empty() || self.body.chars().count() > MAX_BODY_CHARS {
            return Err(Error::validation("body", format!("must be 1 to {MAX_BODY_CHARS} characters")));
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at) {
            if end <= start {
                return Err(Error::validation("ends_at", "must be after starts_at"));
            }
        }
        Ok(())
    }
}

/// Every announcement, newest first (admin list).
pub async fn list_all(db: &Db, limit: i64, offset: i64) -> Result<(Vec<Announcement>, i64)> {
    let rows = sqlx::query_as::<_, Announcement>(&format!(
        "SELECT {COLUMNS} FROM announcements ORDER BY id DESC LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM announcements").fetch_one(db.pool()).await?;
    Ok((rows, total))
}

/// The announcements to show now: enabled and inside their window, newest first.
pub async fn current(db: &Db, now: DateTime<Utc>) -> Result<Vec<Announcement>> {
    Ok(sqlx::query_as::<_, Announcement>(&format!(
        "SELECT {COLUMNS} FROM announcements WHERE enabled = 1 \
           AND (starts_at IS NULL OR starts_at <= $1) AND (ends_at IS NULL OR ends_at > $1) \
         ORDER BY id DESC LIMIT 20"
    ))
    .bind(to_micros(now))
    .fetch_all(db.pool())
    .await?)
}

pub async fn find_in(conn: &mut AnyConnection, id: i64) -> Result<Option<Announcement>> {
    Ok(sqlx::query_as::<_, Announcement>(&format!("SELECT {COLUMNS} FROM announcements WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Inserts a validated announcement on the caller's transaction.
pub async fn create(
    conn: &mut AnyConnection,
    input: &AnnouncementInput,
    actor_id: i64,
    now: DateTime<Utc>,
) -> Result<Announcement> {
    Ok(sqlx::query_as::<_, Announcement>(&format!(
        "INSERT INTO announcements (title, body, enabled, starts_at, ends_at, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {COLUMNS}"
    ))
    .bind(&input.title)
    .bind(&input.body)
    .bind(i64::from(input.enabled))
    .bind(input.starts_at.map(to_micros))
    .bind(input.ends_at.map(to_micros))
    .bind(actor_id)
    .bind(to_micros(now))
    .fetch_one(conn)
    .await?)
}

/// Replaces the editable fields of an announcement on the caller's transaction.
pub async fn update(
    conn: &mut AnyConnection,
    id: i64,
    input: &AnnouncementInput,
    now: DateTime<Utc>,
) -> Result<Announcement> {
    sqlx::query_as::<_, Announcement>(&format!(
        "UPDATE announcements SET title = $1, body = $2, enabled = $3, starts_at = $4, ends_at = $5, updated_at = $6 \
         WHERE id = $7 RETURNING {COLUMNS}"
    ))
    .bind(&input.title)
    .bind(&input.body)
    .bind(i64::from(input.enabled))
    .bind(input.starts_at.map(to_micros))
    .bind(input.ends_at.map(to_micros))
    .bind(to_micros(now))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("announcement"))
}

pub async fn delete(conn: &mut AnyConnection, id: i64) -> Result<()> {
    let done = sqlx::query("DELETE FROM announcements WHERE id = $1").bind(id).execute(conn).await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("announcement"));
    }
    Ok(())
}
