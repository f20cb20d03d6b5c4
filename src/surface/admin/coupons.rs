//! Coupons: create, edit, switch on or off, delete.

use super::Actor;
use crate::domain::audit::{AuditedTx, Change};
use crate::domain::coupons::{self, Coupon, CouponInput};
use crate::foundation::clock::from_micros;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;
use crate::runtime::state::AppState;

fn target(id: i64) -> String {
    format!("coupon:{id}")
}

/// Creates a coupon.
pub async fn create(state: &AppState, actor: Actor, input: &CouponInput) -> Result<Coupon> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let now = tx.now();
    let coupon = coupons::create(tx.conn(), input, now).await?;
    tx.commit(Change::new("coupon.create", target(coupon.id)).after(&coupon.view(state.calendar()))).await?;
    Ok(coupon)
}

/// Replaces a coupon's settings; its use count stays.
pub async fn update(state: &AppState, actor: Actor, id: i64, input: &CouponInput) -> Result<Coupon> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let now = tx.now();
    let before = coupons::find_in(tx.conn(), id).await?.ok_or(Error::NotFound("coupon"))?;
    let after = coupons::update(tx.conn(), id, input, now).await?;
    let calendar = state.calendar();
    tx.commit(Change::new("coupon.update", target(id)).before(&before.view(calendar)).after(&after.view(calendar)))
        .await?;
    Ok(after)
}

/// Switches a coupon off (`Some(false)`, `coupon.disable`) or on (`Some(true)`,
/// `coupon.enable`); `None` switches it to the other state. Its uses stay.
pub async fn switch(state: &AppState, actor: Actor, id: i64, on: Option<bool>) -> Result<Coupon> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let now = tx.now();
    let before = coupons::find_in(tx.conn(), id).await?.ok_or(Error::NotFound("coupon"))?;
    let (after, action) = if on.unwrap_or(before.enabled == 0) {
        let input = CouponInput { enabled: true, ..input_of(&before) };
        (coupons::update(tx.conn(), id, &input, now).await?, "coupon.enable")
    } else {
        (coupons::disable(tx.conn(), id, now).await?, "coupon.disable")
    };
    let calendar = state.calendar();
    tx.commit(Change::new(action, target(id)).before(&before.view(calendar)).after(&after.view(calendar))).await?;
    Ok(after)
}

/// Deletes a coupon no order used (a used one is a conflict: disable it instead).
pub async fn delete(state: &AppState, actor: Actor, id: i64) -> Result<()> {
    let mut tx = AuditedTx::begin(&state.db, actor, state.now()).await?;
    let before = coupons::find_in(tx.conn(), id).await?.ok_or(Error::NotFound("coupon"))?;
    coupons::delete(tx.conn(), id).await?;
    tx.commit(Change::new("coupon.delete", target(id)).before(&before.view(state.calendar()))).await
}

/// A stored coupon as the input that would write it again.
fn input_of(c: &Coupon) -> CouponInput {
    CouponInput {
        code: c.code.clone(),
        percent_off: c.percent_off.map(Money::from_micros),
        amount_off: c.amount_off.map(Money::from_micros),
        package_ids: c.package_ids(),
        applies_to_topup: c.applies_to_topup != 0,
        valid_from: c.valid_from.map(from_micros),
        valid_until: c.valid_until.map(from_micros),
        max_uses: c.max_uses,
        max_uses_per_user: c.max_uses_per_user,
        enabled: c.enabled != 0,
    }
}
