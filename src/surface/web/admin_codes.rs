//! `/admin/codes`: redemption code batches (worth a balance amount or a package) with
//! their used/unused counts, the generate form (the new codes are shown once on the
//! page, and stay exportable), and the CSV export behind the admin session.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::view::{self, Pager};
use super::{error_page_for, render, FieldErrors};
use crate::domain::redemption::{self, batches, Batch, BatchRequest};
use crate::foundation::error::Error;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin;
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/codes", get(codes_page).post(generate))
        .route("/admin/codes/{batch}/export", get(export_csv))
}

const BATCHES_PER_PAGE: i64 = 25;
/// Most codes one CSV export carries (as the JSON API's export).
const MAX_EXPORT_ROWS: i64 = 10_000;

/// The generate form as typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CodesForm {
    /// `amount` (balance) or `package`.
    pub worth: String,
    pub amount: String,
    pub package_id: String,
    pub count: String,
    pub note: String,
}

impl Default for CodesForm {
    fn default() -> Self {
        CodesForm {
            worth: "amount".into(),
            amount: String::new(),
            package_id: String::new(),
            count: "10".into(),
            note: String::new(),
        }
    }
}

impl CodesForm {
    fn request(&self, actor_id: i64) -> Result<BatchRequest, Error> {
        let count =
            self.count.trim().parse::<i64>().map_err(|_| Error::validation("count", "must be a whole number"))?;
        let (amount, package_id) = if self.worth == "package" {
            let id =
                self.package_id.trim().parse::<i64>().map_err(|_| Error::validation("package_id", "is required"))?;
            (None, Some(id))
        } else {
            let amount = Money::parse(self.amount.trim())
                .map_err(|_| Error::validation("amount", "must be an amount such as 10.00"))?;
            (Some(amount), None)
        };
        let mut request = BatchRequest { count, amount, package_id, note: Some(self.note.clone()), actor_id };
        request.validate()?;
        Ok(request)
    }
}

/// A batch row of the list.
pub struct BatchRow {
    pub id: i64,
    pub worth: String,
    pub count: i64,
    pub used: i64,
    pub unused: i64,
    pub note: String,
    pub by: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "admin_codes.html")]
struct CodesPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<BatchRow>,
    pager: Pager,
    packages: Vec<(i64, String)>,
    form: CodesForm,
    /// The batch just generated: shown once in full.
    created: Option<Batch>,
    errors: FieldErrors,
}

struct Outcome {
    form: CodesForm,
    created: Option<Batch>,
    errors: FieldErrors,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageQuery {
    page: Option<i64>,
}

async fn render_codes(state: &AppState, ctx: &Ctx, page: i64, outcome: Outcome) -> Response {
    let loaded = async {
        let listed = batches::list(&state.db, BATCHES_PER_PAGE, view::page_offset(page, BATCHES_PER_PAGE)).await?;
        let catalog = crate::domain::packages::list(&state.db, false).await?;
        Ok::<_, Error>((listed, catalog))
    }
    .await;
    let ((list, total), catalog) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let rows = list
        .iter()
        .map(|b| BatchRow {
            id: b.id,
            worth: match (b.amount, &b.package_name) {
                (Some(a), _) => format!("{} USD", view::money(a)),
                (None, Some(name)) => format!("{}: {name}", ctx.t("codes.package")),
                (None, None) => "—".into(),
            },
            count: b.count,
            used: b.used,
            unused: b.count - b.used,
            note: b.note.clone().unwrap_or_default(),
            by: b.created_by_email.clone().unwrap_or_default(),
            created: view::time(state.calendar(), b.created_at),
        })
        .collect();
    let pager = Pager::new(ctx, "/admin/codes?", page, BATCHES_PER_PAGE, total);
    let packages = catalog.iter().map(|p| (p.id, p.name.clone())).collect();
    let Outcome { form, created, errors } = outcome;
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &CodesPage { ctx, rows, pager, packages, form, created, errors })
}

async fn codes_page(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(q): Query<PageQuery>,
) -> Response {
    let outcome = Outcome { form: CodesForm::default(), created: None, errors: FieldErrors::none() };
    render_codes(&state, &signed.ctx, view::page_number(q.page), outcome).await
}

async fn generate(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<CodesForm>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        let request = form.request(signed.user.id)?;
        redemption::generate_audited(&state.db, &request, client.ip(), state.now()).await
    }
    .await;
    match result {
        Ok(batch) => {
            let outcome = Outcome { form: CodesForm::default(), created: Some(batch), errors: FieldErrors::none() };
            render_codes(&state, ctx, 1, outcome).await
        }
        Err(e) if e.status_code().is_client_error() => {
            let errors = match &e {
                Error::NotFound(_) => FieldErrors::one("package_id", super::i18n::error_text(ctx.lang, &e)),
                _ => FieldErrors::from_error(ctx, &e),
            };
            render_codes(&state, ctx, 1, Outcome { form, created: None, errors }).await
        }
        Err(e) => error_page_for(ctx, &e),
    }
}

/// The batch's codes as CSV (the same file as `GET /api/admin/redemption-codes?format=csv`).
async fn export_csv(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(batch): Path<i64>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        let (rows, _) = redemption::list(&state.db, Some(batch), MAX_EXPORT_ROWS, 0).await?;
        if rows.is_empty() {
            return Err(Error::NotFound("redemption batch"));
        }
        admin::codes_exported(&state, &client.actor(signed.user.id), Some(batch), rows.len()).await?;
        Ok(redemption::to_csv(&rows, state.calendar()))
    }
    .await;
    match result {
        Ok(csv) => {
            let disposition = format!("attachment; filename=\"redemption-codes-batch-{batch}.csv\"");
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                csv,
            )
                .into_response()
        }
        Err(e) => error_page_for(ctx, &e),
    }
}
