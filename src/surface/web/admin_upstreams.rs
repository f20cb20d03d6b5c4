//! Admin pages of the upstreams: `/admin/upstreams` (list with health, add, switch
//! on/off, delete), `/admin/upstreams/{id}` (edit every field, the model map included)
//! and its "test connection" (one real `GET {base}/models` with the stored key).
//!
//! The credential is write-only: no page shows it back (a masked hint names it), a
//! refused form does not echo it, and on the edit form a blank key keeps the stored one
//! while the address stays on its host (another host needs the key typed again).
//! Every write refreshes the proxy's catalog and leaves an audit row, as the API does.

use std::collections::BTreeMap;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;

use super::admin_write::{back_or_error_page, FormWrite};
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::{error_page_for, render, FieldErrors};
use crate::domain::proxy::upstream_check::{self, ConnectionCheck, LISTED_MODELS};
use crate::domain::proxy::upstreams::{self, Upstream, UpstreamInput, UpstreamView};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;
use crate::surface::admin::catalog;
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/upstreams", get(upstreams_page).post(create_upstream))
        .route("/admin/upstreams/{id}", get(edit_page).post(save_upstream))
        .route("/admin/upstreams/{id}/test", post(test_connection))
        .route("/admin/upstreams/{id}/toggle", post(toggle_upstream))
        .route("/admin/upstreams/{id}/delete", post(delete_upstream))
}

/// A connection test waits at most this long (the admin is looking at the page).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
struct Empty {}

/// The upstream form as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UpstreamForm {
    name: String,
    base_url: String,
    api_key: String,
    models: String,
    model_map: String,
    priority: String,
    weight: String,
}

fn whole(field: &str, text: &str, default: i64) -> Result<i64> {
    if text.trim().is_empty() {
        return Ok(default);
    }
    text.trim().parse().map_err(|_| Error::validation(field, "must be a whole number"))
}

/// Reads `client = upstream` pairs, one per line or comma-separated; blank = no map.
fn parse_model_map(text: &str) -> Result<Option<BTreeMap<String, String>>> {
    let mut map = BTreeMap::new();
    for entry in text.split(['\n', ',']).map(str::trim).filter(|e| !e.is_empty()) {
        let Some((from, to)) = entry.split_once('=') else {
            return Err(Error::validation("model_map", "write each entry as model = upstream model"));
        };
        let (from, to) = (from.trim(), to.trim());
        if from.is_empty() || to.is_empty() {
            return Err(Error::validation("model_map", "write each entry as model = upstream model"));
        }
        map.insert(from.to_string(), to.to_string());
    }
    Ok((!map.is_empty()).then_some(map))
}

/// The model map as the form shows it: one `client = upstream` per line.
fn format_model_map(map: &Option<BTreeMap<String, String>>) -> String {
    map.iter().flatten().map(|(from, to)| format!("{from} = {to}")).collect::<Vec<_>>().join("\n")
}

impl UpstreamForm {
    /// The form of a stored upstream; the key field stays empty (write-only).
    fn of(upstream: &Upstream) -> Self {
        UpstreamForm {
            name: upstream.name.clone(),
            base_url: upstream.base_url.clone(),
            api_key: String::new(),
            models: upstream.models.as_ref().map(|m| m.join(", ")).unwrap_or_default(),
            model_map: format_model_map(&upstream.model_map),
            priority: upstream.priority.to_string(),
            weight: upstream.weight.to_string(),
        }
    }

    /// The input with every problem of the form, all at once. `stored` is the upstream
    /// being edited: its key is kept when the field is blank and the address stays on the same
    /// host (`upstreams::key_for_edit`), and its switch stays as is.
    fn input(&self, ctx: &Ctx, stored: Option<&Upstream>) -> std::result::Result<UpstreamInput, FieldErrors> {
        let mut errors = FieldErrors::none();
        let models: Vec<String> =
            self.models.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect();
        let typed = (!self.api_key.trim().is_empty()).then(|| SecretString::from(self.api_key.clone()));
        let api_key = match stored {
            Some(current) => errors.take(ctx, upstreams::key_for_edit(current, &self.base_url, typed)),
            None => Some(typed.unwrap_or_else(|| SecretString::from(String::new()))),
        }
        .unwrap_or_else(|| SecretString::from(String::new()));
        let model_map = errors.take(ctx, parse_model_map(&self.model_map));
        let priority = errors.take(ctx, whole("priority", &self.priority, 0));
        let weight = errors.take(ctx, whole("weight", &self.weight, 1));
        let mut input = UpstreamInput {
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            api_key,
            models: (!models.is_empty()).then_some(models),
            model_map: model_map.flatten(),
            priority: priority.unwrap_or(0),
            weight: weight.unwrap_or(1),
            enabled: stored.is_none_or(|s| s.enabled),
        };
        upstreams::problems(&mut input).iter().for_each(|e| errors.add(ctx, e));
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(errors)
        }
    }

    /// The form as shown again after a refusal: never with the key typed.
    fn without_key(self) -> Self {
        UpstreamForm { api_key: String::new(), ..self }
    }
}

/// A row of the list: the upstream and when it was last checked.
struct UpstreamRow {
    u: UpstreamView,
    checked: String,
    model_map: String,
}

#[derive(Template)]
#[template(path = "admin_upstreams.html")]
struct UpstreamsPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<UpstreamRow>,
    form: UpstreamForm,
    errors: FieldErrors,
}

fn status_for(errors: &FieldErrors) -> StatusCode {
    if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

async fn render_upstreams(state: &AppState, ctx: &Ctx, form: UpstreamForm, errors: FieldErrors) -> Response {
    let stored = match upstreams::list(&state.db, &state.secrets).await {
        Ok(rows) => rows,
        Err(e) => return error_page_for(ctx, &e),
    };
    let rows = stored
        .iter()
        .map(|u| UpstreamRow {
            u: u.view(state.calendar()),
            checked: super::view::time_or_dash(state.calendar(), u.last_checked_at),
            model_map: u.model_map.iter().flatten().map(|(a, b)| format!("{a} → {b}")).collect::<Vec<_>>().join(", "),
        })
        .collect();
    render(ctx, status_for(&errors), &UpstreamsPage { ctx, rows, form, errors })
}

async fn upstreams_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    render_upstreams(&state, &signed.ctx, UpstreamForm::default(), FieldErrors::none()).await
}

async fn create_upstream(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<UpstreamForm>,
) -> Response {
    let ctx = &signed.ctx;
    let input = match form.input(ctx, None) {
        Ok(input) => input,
        Err(errors) => return render_upstreams(&state, ctx, form.without_key(), errors).await,
    };
    let result = catalog::create_upstream(&state, &client.actor(signed.user.id), input).await.map(|_| ());
    let form_write = FormWrite::new(ctx, "/admin/upstreams");
    form_write.answer(result, async |errors| render_upstreams(&state, ctx, form.without_key(), errors).await).await
}

/// What a connection test found, as the page says it.
struct CheckView {
    ok: bool,
    title: String,
    detail: String,
}

impl CheckView {
    fn new(ctx: &Ctx, check: &ConnectionCheck) -> Self {
        match check {
            ConnectionCheck::Connected { status, models } => {
                let mut listed = models.iter().take(LISTED_MODELS).cloned().collect::<Vec<_>>().join(", ");
                if models.len() > LISTED_MODELS {
                    listed.push_str(&format!(" (+{})", models.len() - LISTED_MODELS));
                }
                let detail = if models.is_empty() {
                    ctx.t("ups.check_no_models").to_string()
                } else {
                    ctx.t("ups.check_models").replace("{n}", &models.len().to_string()).replace("{models}", &listed)
                };
                let title = ctx.t("ups.check_connected").replace("{status}", &status.to_string());
                CheckView { ok: true, title, detail }
            }
            ConnectionCheck::Refused { status, detail } => CheckView {
                ok: false,
                title: ctx.t("ups.check_refused").replace("{status}", &status.to_string()),
                detail: detail.clone(),
            },
            ConnectionCheck::Unreachable { detail } => {
                CheckView { ok: false, title: ctx.t("ups.check_unreachable").to_string(), detail: detail.clone() }
            }
        }
    }
}

#[derive(Template)]
#[template(path = "admin_upstream_edit.html")]
struct EditPage<'a> {
    ctx: &'a Ctx,
    u: UpstreamView,
    form: UpstreamForm,
    errors: FieldErrors,
    check: Option<CheckView>,
}

#[derive(Template)]
#[template(path = "_upstream_check.html")]
struct CheckFragment {
    check: Option<CheckView>,
}

struct Edit<'a> {
    upstream: &'a Upstream,
    form: UpstreamForm,
    errors: FieldErrors,
    check: Option<CheckView>,
}

fn render_edit(state: &AppState, ctx: &Ctx, edit: Edit<'_>) -> Response {
    let page = EditPage {
        ctx,
        u: edit.upstream.view(state.calendar()),
        form: edit.form,
        errors: edit.errors,
        check: edit.check,
    };
    render(ctx, status_for(&page.errors), &page)
}

async fn edit_page(State(state): State<AppState>, AdminPage(signed): AdminPage, Path(id): Path<i64>) -> Response {
    let ctx = &signed.ctx;
    match upstreams::find(&state.db, &state.secrets, id).await {
        Ok(upstream) => {
            let form = UpstreamForm::of(&upstream);
            render_edit(&state, ctx, Edit { upstream: &upstream, form, errors: FieldErrors::none(), check: None })
        }
        Err(e) => error_page_for(ctx, &e),
    }
}

async fn save_upstream(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<UpstreamForm>,
) -> Response {
    let ctx = &signed.ctx;
    let current = match upstreams::find(&state.db, &state.secrets, id).await {
        Ok(current) => current,
        Err(e) => return error_page_for(ctx, &e),
    };
    let input = match form.input(ctx, Some(&current)) {
        Ok(input) => input,
        Err(errors) => {
            return render_edit(&state, ctx, Edit { upstream: &current, form: form.without_key(), errors, check: None })
        }
    };
    let result = catalog::update_upstream(&state, &client.actor(signed.user.id), &current, input).await.map(|_| ());
    let form_write = FormWrite::new(ctx, "/admin/upstreams").editing();
    let again = async |errors| {
        render_edit(&state, ctx, Edit { upstream: &current, form: form.without_key(), errors, check: None })
    };
    form_write.answer(result, again).await
}

/// Runs the check; htmx gets the result box alone, a plain post the whole edit page.
async fn test_connection(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Path(id): Path<i64>,
    headers: HeaderMap,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let ctx = &signed.ctx;
    let upstream = match upstreams::find(&state.db, &state.secrets, id).await {
        Ok(upstream) => upstream,
        Err(e) => return error_page_for(ctx, &e),
    };
    let timeout = state.config.upstream_first_byte_timeout.min(CHECK_TIMEOUT);
    let found = upstream_check::check_connection(&state.http, &upstream, timeout).await;
    tracing::info!(upstream = %upstream.name, connected = found.is_connected(), "upstream connection tested");
    let check = Some(CheckView::new(ctx, &found));
    if headers.contains_key("hx-request") {
        return render(ctx, StatusCode::OK, &CheckFragment { check });
    }
    let form = UpstreamForm::of(&upstream);
    render_edit(&state, ctx, Edit { upstream: &upstream, form, errors: FieldErrors::none(), check })
}

async fn toggle_upstream(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let result = async {
        let current = upstreams::find(&state.db, &state.secrets, id).await?;
        let input = UpstreamInput {
            name: current.name.clone(),
            base_url: current.base_url.clone(),
            api_key: current.api_key.clone(),
            models: current.models.clone(),
            model_map: current.model_map.clone(),
            priority: current.priority,
            weight: current.weight,
            enabled: !current.enabled,
        };
        catalog::update_upstream(&state, &client.actor(signed.user.id), &current, input).await.map(|_| ())
    }
    .await;
    back_or_error_page(&signed.ctx, result, "/admin/upstreams")
}

async fn delete_upstream(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(id): Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let result = catalog::delete_upstream(&state, &client.actor(signed.user.id), id).await;
    back_or_error_page(&signed.ctx, result, "/admin/upstreams")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surface::web::i18n::Lang;

    #[test]
    fn a_model_map_is_read_from_lines_or_commas_and_shown_one_per_line() {
        let map = parse_model_map("gpt-5 = gpt-5-2025\n  codex=gpt-5-codex , \n").unwrap().unwrap();
        assert_eq!(map.get("gpt-5").map(String::as_str), Some("gpt-5-2025"));
        assert_eq!(map.get("codex").map(String::as_str), Some("gpt-5-codex"));
        assert_eq!(format_model_map(&Some(map)), "codex = gpt-5-codex\ngpt-5 = gpt-5-2025");
        assert_eq!(parse_model_map("  \n ").unwrap(), None);
        for bad in ["gpt-5", "= x", "x ="] {
            assert!(matches!(parse_model_map(bad), Err(Error::Validation { field, .. }) if field == "model_map"));
        }
    }

    #[test]
    fn a_form_reports_every_wrong_field_at_once() {
        let ctx = Ctx::bare(Lang::En);
        let form = UpstreamForm {
            name: String::new(),
            base_url: "ftp://x".into(),
            api_key: String::new(),
            model_map: "nonsense".into(),
            priority: "high".into(),
            weight: "0".into(),
            ..UpstreamForm::default()
        };
        let errors = form.input(&ctx, None).unwrap_err();
        for field in ["name", "base_url", "api_key", "model_map", "priority", "weight"] {
            assert!(errors.has(field), "{field} has its error");
        }
    }
}
