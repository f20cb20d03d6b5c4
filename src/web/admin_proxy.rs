//! Admin pages of the proxy: `/admin/upstreams` (list with health, add, switch on/off,
//! delete; the credential is write-only) and `/admin/pricing` (model prices per 1M
//! tokens, add or change, switch on/off, delete; the markup lives in settings).
//! Every write refreshes the proxy's catalog and leaves an audit row, as the API does.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;

use super::admin_write::{back_or_error_page, FormWrite};
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::{error_page_for, render, FieldErrors};
use crate::api::extract::ClientAddr;
use crate::api::upstreams::catalog_changed;
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::error::{Error, Result};
use crate::money::Money;
use crate::proxy::pricing::{self, ModelPrice};
use crate::proxy::upstreams::{self, UpstreamInput, UpstreamView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/upstreams", get(upstreams_page).post(create_upstream))
        .route("/admin/upstreams/{id}/toggle", post(toggle_upstream))
        .route("/admin/upstreams/{id}/delete", post(delete_upstream))
        .route("/admin/pricing", get(pricing_page).post(save_price))
        .route("/admin/pricing/{model}/toggle", post(toggle_price))
        .route("/admin/pricing/{model}/delete", post(delete_price))
}

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
    priority: String,
    weight: String,
}

fn whole(field: &str, text: &str, default: i64) -> Result<i64> {
    if text.trim().is_empty() {
        return Ok(default);
    }
    text.trim().parse().map_err(|_| Error::validation(field, "must be a whole number"))
}

impl UpstreamForm {
    fn input(&self) -> Result<UpstreamInput> {
        let models: Vec<String> =
            self.models.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect();
        Ok(UpstreamInput {
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            api_key: SecretString::from(self.api_key.clone()),
            models: (!models.is_empty()).then_some(models),
            model_map: None,
            priority: whole("priority", &self.priority, 0)?,
            weight: whole("weight", &self.weight, 1)?,
            enabled: true,
        })
    }
}

#[derive(Template)]
#[template(path = "admin_upstreams.html")]
struct UpstreamsPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<(UpstreamView, String)>,
    form: UpstreamForm,
    errors: FieldErrors,
}

async fn render_upstreams(state: &AppState, ctx: &Ctx, form: UpstreamForm, errors: FieldErrors) -> Response {
    let rows = match upstreams::list(&state.db, &state.secrets).await {
        Ok(rows) => rows,
        Err(e) => return error_page_for(ctx, &e),
    };
    let rows = rows
        .iter()
        .map(|u| {
            let checked = super::view::time_or_dash(state.calendar(), u.last_checked_at);
            (u.view(state.calendar()), checked)
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &UpstreamsPage { ctx, rows, form, errors })
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
    let result = async {
        let created = upstreams::create(&state.db, &state.secrets, form.input()?, state.now()).await?;
        let change = Change::new("upstream.create", format!("upstream:{}", created.id));
        catalog_changed(&state, &client.actor(signed.user.id), change.after(&created.view(state.calendar()))).await
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/upstreams");
    form_write
        .answer(result, async |errors| {
            render_upstreams(&state, ctx, UpstreamForm { api_key: String::new(), ..form }, errors).await
        })
        .await
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
        let before = current.view(state.calendar());
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
        let updated = upstreams::update(&state.db, &state.secrets, id, input, state.now()).await?;
        let change = Change::new("upstream.update", format!("upstream:{id}"));
        let change = change.before(&before).after(&updated.view(state.calendar()));
        catalog_changed(&state, &client.actor(signed.user.id), change).await
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
    let result = async {
        let before = upstreams::find(&state.db, &state.secrets, id).await?.view(state.calendar());
        upstreams::delete(&state.db, id).await?;
        let change = Change::new("upstream.delete", format!("upstream:{id}")).before(&before);
        catalog_changed(&state, &client.actor(signed.user.id), change).await
    }
    .await;
    back_or_error_page(&signed.ctx, result, "/admin/upstreams")
}

/// The price form as typed (USD per 1M tokens).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PriceForm {
    model: String,
    input: String,
    cached_input: String,
    output: String,
}

fn price_amount(field: &str, text: &str) -> Result<Money> {
    Money::parse(text.trim()).map_err(|_| Error::validation(field, "must be an amount such as 1.50"))
}

/// A price row with its amounts formatted.
struct PriceRow {
    model: String,
    input: String,
    cached_input: String,
    output: String,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "admin_pricing.html")]
struct PricingPage<'a> {
    ctx: &'a Ctx,
    rows: Vec<PriceRow>,
    markup: String,
    form: PriceForm,
    errors: FieldErrors,
}

async fn render_pricing(state: &AppState, ctx: &Ctx, form: PriceForm, errors: FieldErrors) -> Response {
    let loaded = async { Ok::<_, Error>((pricing::list(&state.db).await?, state.settings.get().await?)) }.await;
    let (prices, settings) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(ctx, &e),
    };
    let rows = prices
        .iter()
        .map(|p| PriceRow {
            model: p.model.clone(),
            input: p.input.to_string(),
            cached_input: p.cached_input.to_string(),
            output: p.output.to_string(),
            enabled: p.enabled,
        })
        .collect();
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    render(ctx, status, &PricingPage { ctx, rows, markup: settings.markup.to_string(), form, errors })
}

async fn pricing_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    render_pricing(&state, &signed.ctx, PriceForm::default(), FieldErrors::none()).await
}

/// Adds a model's price, or changes it when the model is already priced.
async fn save_price(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<PriceForm>,
) -> Response {
    let ctx = &signed.ctx;
    let result = async {
        let model = form.model.trim().to_string();
        if model.is_empty() {
            return Err(Error::validation("model", "is required"));
        }
        let input = price_amount("input", &form.input)?;
        let cached_input =
            if form.cached_input.trim().is_empty() { input } else { price_amount("cached_input", &form.cached_input)? };
        let output = price_amount("output", &form.output)?;
        let current = pricing::find(&state.db, &model).await?;
        let price = ModelPrice {
            model: model.clone(),
            input,
            cached_input,
            output,
            cache_write: current.as_ref().and_then(|c| c.cache_write),
            enabled: current.as_ref().is_none_or(|c| c.enabled),
        };
        let action = match &current {
            Some(_) => pricing::update(&state.db, &price, state.now()).await.map(|()| "price.update")?,
            None => pricing::create(&state.db, &price, state.now()).await.map(|()| "price.create")?,
        };
        // A new model has no before (not a JSON null).
        let before = current.as_ref().and_then(audit::snapshot);
        let change = Change { before, ..Change::new(action, format!("price:{model}")).after(&price) };
        catalog_changed(&state, &client.actor(signed.user.id), change).await
    }
    .await;
    let form_write = FormWrite::new(ctx, "/admin/pricing");
    form_write.answer(result, async |errors| render_pricing(&state, ctx, form, errors).await).await
}

async fn toggle_price(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(model): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let result = async {
        let current = pricing::find(&state.db, &model).await?.ok_or(Error::NotFound("price"))?;
        let price = ModelPrice { enabled: !current.enabled, ..current.clone() };
        pricing::update(&state.db, &price, state.now()).await?;
        let change = Change::new("price.update", format!("price:{model}")).before(&current).after(&price);
        catalog_changed(&state, &client.actor(signed.user.id), change).await
    }
    .await;
    back_or_error_page(&signed.ctx, result, "/admin/pricing")
}

async fn delete_price(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    Path(model): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Response {
    let result = async {
        let current = pricing::find(&state.db, &model).await?.ok_or(Error::NotFound("price"))?;
        pricing::delete(&state.db, &model).await?;
        let change = Change::new("price.delete", format!("price:{model}")).before(&current);
        catalog_changed(&state, &client.actor(signed.user.id), change).await
    }
    .await;
    back_or_error_page(&signed.ctx, result, "/admin/pricing")
}
