//! `/ledger`: the user's balance history (every ledger entry, newest first), with the
//! kinds and the stored notes in the page's language and every amount exact, the same
//! figures as `GET /api/user/ledger`. Filter: everything, money movements only (without
//! the per-request charges), or request charges only.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::ctx::{Ctx, Signed};
use super::i18n;
use super::view::{self, Pager};
use super::{error_page_for, render};
use crate::domain::ledger::{self, Entry};
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/ledger", get(ledger_page))
}

const PER_PAGE: i64 = 50;

/// The views of the filter: (value, label key).
const SHOWS: [(&str, &str); 3] = [("", "ledger.all"), ("-usage", "ledger.no_usage"), ("usage", "ledger.only_usage")];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LedgerQuery {
    show: String,
    page: Option<i64>,
}

/// One entry as the table shows it.
struct LedgerLine {
    time: String,
    kind: String,
    /// The raw kind, for the badge colour.
    raw_kind: String,
    /// Signed and exact: `+12.00`, `-0.004025`.
    amount: String,
    balance_after: String,
    package_amount: String,
    note: String,
    reference: String,
}

impl LedgerLine {
    fn new(ctx: &Ctx, e: &Entry, state: &AppState) -> Self {
        let amount = view::money(e.amount);
        LedgerLine {
            time: view::time(state.calendar(), e.created_at),
            kind: i18n::ledger_kind(ctx.lang, &e.kind),
            raw_kind: e.kind.clone(),
            amount: if e.amount > 0 { format!("+{amount}") } else { amount },
            balance_after: view::money(e.balance_after),
            package_amount: if e.package_amount == 0 { String::new() } else { view::money(e.package_amount) },
            note: e.note.as_deref().map(|n| i18n::stored_text(ctx.lang, n)).unwrap_or_default(),
            reference: e.reference.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "ledger.html")]
struct LedgerPage<'a> {
    ctx: &'a Ctx,
    balance: String,
    negative: bool,
    /// (value, label, selected).
    shows: Vec<(&'static str, &'static str, bool)>,
    lines: Vec<LedgerLine>,
    pager: Pager,
}

async fn ledger_page(State(state): State<AppState>, signed: Signed, Query(q): Query<LedgerQuery>) -> Response {
    let ctx = &signed.ctx;
    let page = view::page_number(q.page);
    let show = SHOWS.iter().find(|(v, _)| *v == q.show.trim()).map(|(v, _)| *v).unwrap_or("");
    let offset = view::page_offset(page, PER_PAGE);
    let loaded = match show {
        "" => ledger::list(&state.db, Some(signed.user.id), PER_PAGE, offset).await,
        kind => ledger::list_of_kind(&state.db, signed.user.id, kind, PER_PAGE, offset).await,
    };
    let (rows, total) = match loaded {
        Ok(found) => found,
        Err(e) => return error_page_for(ctx, &e),
    };
    let base = format!("/ledger?{}", serde_urlencoded::to_string([("show", show)]).unwrap_or_default());
    let page = LedgerPage {
        ctx,
        balance: view::money(signed.user.balance),
        negative: signed.user.balance < 0,
        shows: SHOWS.iter().map(|(v, label)| (*v, ctx.t(label), *v == show)).collect(),
        lines: rows.iter().map(|e| LedgerLine::new(ctx, e, &state)).collect(),
        pager: Pager::new(ctx, &base, page, PER_PAGE, total),
    };
    render(ctx, StatusCode::OK, &page)
}
