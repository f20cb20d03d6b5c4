//! Admin page of the proxy's prices: `/admin/pricing` (model prices per 1M tokens, add
//! or change, switch on/off, delete; the markup lives in settings). The upstreams have
//! theirs in [`super::admin_upstreams`]. Every write refreshes the proxy's catalog and
//! leaves an audit row, as the API does.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::admin_write::{back_or_error_page, FormWrite};
use super::ctx::{AdminPage, CsrfForm, Ctx};
use super::{error_page_for, render, FieldErrors};
use crate::domain::proxy::pricing::{self, ModelPrice};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::admin::catalog;
use crate::surface::api::extract::ClientAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/pricing", get(pricing_page).post(save_price))
        .route("/admin/pricing/{model}/toggle", post(toggle_price))
        .route("/admin/pricing/{model}/delete", post(delete_price))
}

#[derive(Deserialize)]
struct Empty {}

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

impl PriceForm {
    /// The price as typed with every problem of the form at once (`current`: the stored
    /// price of the model, whose cache-write price and switch are kept).
    fn price(&self, ctx: &Ctx, current: Option<&ModelPrice>) -> std::result::Result<ModelPrice, FieldErrors> {
        let mut errors = FieldErrors::none();
        let model = self.model.trim().to_string();
        if model.is_empty() {
            errors.add(ctx, &Error::validation("model", "is required"));
        }
        let input = errors.take(ctx, price_amount("input", &self.input));
        let cached_input = if self.cached_input.trim().is_empty() {
            input
        } else {
            errors.take(ctx, price_amount("cached_input", &self.cached_input))
        };
        let output = errors.take(ctx, price_amount("output", &self.output));
        let price = ModelPrice {
            model,
            input: input.unwrap_or_default(),
            cached_input: cached_input.unwrap_or_default(),
            output: output.unwrap_or_default(),
            cache_write: current.and_then(|c| c.cache_write),
            enabled: current.is_none_or(|c| c.enabled),
        };
        pricing::problems(&price).iter().for_each(|e| errors.add(ctx, e));
        if errors.is_empty() {
            Ok(price)
        } else {
            Err(errors)
        }
    }
}

/// Adds a model's price, or changes it when the model is already priced.
async fn save_price(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    client: ClientAddr,
    CsrfForm(form): CsrfForm<PriceForm>,
) -> Response {
    let ctx = &signed.ctx;
    let current = match pricing::find(&state.db, form.model.trim()).await {
        Ok(current) => current,
        Err(e) => return error_page_for(ctx, &e),
    };
    let price = match form.price(ctx, current.as_ref()) {
        Ok(price) => price,
        Err(errors) => return render_pricing(&state, ctx, form, errors).await,
    };
    let result = catalog::save_price(&state, &client.actor(signed.user.id), current.as_ref(), &price).await;
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
        catalog::save_price(&state, &client.actor(signed.user.id), Some(&current), &price).await
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
    let result = catalog::delete_price(&state, &client.actor(signed.user.id), &model).await;
    back_or_error_page(&signed.ctx, result, "/admin/pricing")
}
