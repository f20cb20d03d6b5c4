//! What a finished order did, said in the user's words: "queued until …", "balance
//! credited …", instead of one "your package is active" for every order (issue 20).
//! Read from the order's recorded fulfilment (`payment_orders.fulfilment`,
//! `credit_amount`, `user_package_id`), never guessed.

use chrono::{DateTime, Utc};

use super::ctx::Ctx;
use super::view;
use crate::domain::orders::fulfil::{OVER_LIMIT_CREDIT, SOLD_OUT_CREDIT};
use crate::domain::orders::{status, Order};
use crate::domain::packages::held::{self, UserPackage};
use crate::foundation::error::Result;
use crate::runtime::state::AppState;

/// The sentence for a fulfilled order, empty for any other state (the status box has
/// its own text for pending and expired orders).
pub async fn outcome(state: &AppState, ctx: &Ctx, order: &Order) -> Result<String> {
    if order.status != status::FULFILLED {
        return Ok(String::new());
    }
    let held = match order.user_package_id {
        Some(id) => {
            let mut conn = state.db.pool().acquire().await?;
            held::find_on(&mut conn, id).await?
        }
        None => None,
    };
    let balance =
        crate::domain::auth::users::find_by_id(&state.db, order.user_id).await?.map(|u| u.balance).unwrap_or(0);
    Ok(sentence(ctx, order, held.as_ref(), balance, state))
}

fn sentence(ctx: &Ctx, order: &Order, held: Option<&UserPackage>, balance: i64, state: &AppState) -> String {
    let calendar = state.calendar();
    let fill = |key: &str| {
        let mut text = ctx.t(key).replace("{credited}", &view::money(order.credit_amount));
        text = text.replace("{balance}", &view::money(balance));
        if let Some(p) = held {
            text = text
                .replace("{name}", &p.name)
                .replace("{starts}", &view::time(calendar, p.starts_at))
                .replace("{ends}", &view::time(calendar, p.ends_at));
        }
        text
    };
    match (order.fulfilment.as_deref(), held) {
        (Some("topup"), _) => fill("order.done_topup"),
        (Some(SOLD_OUT_CREDIT), _) => fill("order.done_sold_out"),
        (Some(OVER_LIMIT_CREDIT), _) => fill("order.done_over_limit"),
        (Some("queued"), Some(p)) if starts_later(p, state.now()) => fill("order.done_queued"),
        (Some("extended"), Some(_)) => fill("order.done_extended"),
        (Some("switched"), Some(_)) => fill("order.done_switched"),
        (_, Some(_)) => fill("order.done_started"),
        _ => ctx.t("order.fulfilled_msg").to_string(),
    }
}

fn starts_later(p: &UserPackage, now: DateTime<Utc>) -> bool {
    p.starts_at > crate::foundation::clock::to_micros(now)
}
