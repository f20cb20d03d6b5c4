//! `/pay/{out_trade_no}`: the page that sends the buyer's browser to the gateway with a
//! signed, auto-submitting form (a button does the same without JavaScript). The
//! parameters are signed when the page is rendered, so the key never leaves the server.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::domain::orders::{self, gateway_form, status};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;
use crate::surface::web::ctx::{Ctx, Guest};
use crate::surface::web::{error_page_for, render};

/// Routes of the payment pages.
pub fn router() -> Router<AppState> {
    Router::new().route("/pay/{out_trade_no}", get(pay_page))
}

#[derive(Template)]
#[template(path = "pay.html")]
struct PayPage<'a> {
    ctx: &'a Ctx,
    subject: String,
    money: String,
    out_trade_no: String,
    action: String,
    fields: Vec<(String, String)>,
}

async fn build<'a>(state: &AppState, ctx: &'a Ctx, out_trade_no: &str) -> Result<PayPage<'a>> {
    let order = orders::find(&state.db, out_trade_no).await?.ok_or(Error::NotFound("order"))?;
    let open = order.status == status::PENDING && order.expires_at > crate::foundation::clock::to_micros(state.now());
    if !open || order.pay_method != "credit" {
        return Err(Error::conflict(
            "order_not_payable",
            format!("order {} cannot be paid any more (status: {})", order.out_trade_no, order.status),
        ));
    }
    let settings = state.settings.get().await?;
    orders::ensure_payments_usable(&settings.credit)?;
    let (action, params) = gateway_form(&settings.credit, &state.config.public_url, &order);
    Ok(PayPage {
        ctx,
        subject: order.subject.clone(),
        money: order.amount().format_2dp(),
        out_trade_no: order.out_trade_no.clone(),
        action,
        fields: params.into_iter().collect(),
    })
}

async fn pay_page(
    State(state): State<AppState>,
    guest: Guest,
    axum::extract::Path(out_trade_no): axum::extract::Path<String>,
) -> Response {
    match build(&state, &guest.ctx, &out_trade_no).await {
        Ok(page) => render(&guest.ctx, StatusCode::OK, &page),
        Err(e) => error_page_for(&guest.ctx, &e),
    }
}
