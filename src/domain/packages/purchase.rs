//! Buying a package: from the balance (one transaction: stock, debit, activation), or by
//! creating a gateway order that [`crate::domain::orders::fulfil`] completes when paid. Also
//! admin grants and admin ends.

use chrono::Duration;
use serde_json::json;

use super::activation::{self, Activation, Grant, SwitchMode, UserPackage};
use super::Package;
use crate::domain::audit::{self, AuditEvent};
use crate::domain::billing::Env;
use crate::domain::coupons::pricing::{self, Claim, Quote, Target};
use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::orders::fulfil::{mark_fulfilled, Fulfilment};
use crate::domain::orders::{self, kind, to_balance, NewOrder, Order};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Checks a package can be bought by this user now (enabled, in stock, under the per-user limit).
pub async fn ensure_buyable(env: Env<'_>, package: &Package, user_id: i64) -> Result<()> {
    if !package.is_enabled() {
        return Err(Error::NotFound("package"));
    }
    if package.stock == Some(0) {
        return Err(Error::conflict("sold_out", "this package is sold out"));
    }
    // A courtesy check, so a buyer over the limit is told before paying; the binding one
    // is `under_user_limit`, inside the purchase or fulfilment transaction.
    let mut conn = env.db.pool().acquire().await?;
    if !under_user_limit(&mut conn, package, user_id, None).await? {
        return Err(limit_reached(package));
    }
    Ok(())
}

fn limit_reached(package: &Package) -> Error {
    let limit = package.per_user_limit.unwrap_or_default();
    Error::conflict("purchase_limit_reached", format!("each user may buy this package {limit} time(s)"))
}

/// Whether the user may have one more of `package` beside the orders already paid
/// (`this_order` excluded: it is the one being decided). On a transaction, call it after
/// [`super::take_stock`] (packages are locked before users on every money path): it takes
/// the user's lock, so two purchases of one user cannot both count the same past.
pub async fn under_user_limit(
    conn: &mut sqlx::AnyConnection,
    package: &Package,
    user_id: i64,
    this_order: Option<i64>,
) -> Result<bool> {
    let Some(limit) = package.per_user_limit else { return Ok(true) };
    if this_order.is_some() {
        activation::lock_user(conn, user_id).await?;
    }
    let bought: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM payment_orders WHERE user_id = $1 AND package_id = $2 \
           AND status IN ('paid', 'fulfilled', 'refunding') AND id <> $3",
    )
    .bind(user_id)
    .bind(package.id)
    .bind(this_order.unwrap_or(0))
    .fetch_one(conn)
    .await?;
    Ok(bought < limit)
}

async fn buyable_package(env: Env<'_>, package_id: i64, user_id: i64) -> Result<Package> {
    let package = super::find(env.db, package_id).await?.ok_or(Error::NotFound("package"))?;
    ensure_buyable(env, &package, user_id).await?;
    Ok(package)
}

/// Buys a package from the balance: stock, conditional debit, activation and the order
/// record commit together or not at all.
pub async fn buy_with_balance(env: Env<'_>, user_id: i64, package_id: i64) -> Result<(Order, Activation)> {
    buy_with_balance_coupon(env, user_id, package_id, None).await
}

/// Prices a package for `user_id`, with a coupon if one is given (see [`crate::domain::coupons::pricing`]).
async fn priced(
    conn: &mut sqlx::AnyConnection,
    package: &Package,
    user_id: i64,
    coupon: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Money, Option<Quote>)> {
    match coupon {
        None => Ok((package.price(), None)),
        Some(code) => {
            let quote = pricing::quote(conn, code, user_id, Target::Package(package.id), package.price(), now).await?;
            Ok((quote.price, Some(quote)))
        }
    }
}

/// [`buy_with_balance`] with an optional coupon: the discounted price is debited and the
/// coupon use is counted in the same transaction (409 `coupon_used_up` if it ran out).
pub async fn buy_with_balance_coupon(
    env: Env<'_>,
    user_id: i64,
    package_id: i64,
    coupon: Option<&str>,
) -> Result<(Order, Activation)> {
    let package = buyable_package(env, package_id, user_id).await?;
    let settings = env.settings.get().await?;
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let (price, quote) = priced(tx.conn(), &package, user_id, coupon, now).await?;
    let value = to_balance(price, settings.credit.topup_rate);
    let new = NewOrder {
        user_id,
        kind: kind::PACKAGE,
        package_id: Some(package.id),
        amount: price,
        credit_amount: value,
        pay_method: "balance",
        pay_type: None,
        subject: &package.name,
        ttl: Duration::zero(),
    };
    let order = orders::insert(tx.conn(), &new, now).await?;
    if let Some(quote) = &quote {
        pricing::attach(tx.conn(), order.id, quote).await?;
    }
    if !super::take_stock(tx.conn(), package.id, now).await? {
        return Err(Error::conflict("sold_out", "this package is sold out"));
    }
    if !under_user_limit(tx.conn(), &package, user_id, Some(order.id)).await? {
        return Err(limit_reached(&package));
    }
    let details =
        EntryDetails { reference: Some(&order.out_trade_no), note: Some(&package.name), ..Default::default() };
    let debit = Money::ZERO.saturating_sub(value);
    ledger::change_balance(tx.conn(), user_id, ledger::kind::PACKAGE_PURCHASE, debit, Overdraft::Refuse, &details, now)
        .await?;
    let grant = Grant {
        user_id,
        package: &package,
        order_id: Some(order.id),
        paid_amount: value,
        source: "balance",
        mode: SwitchMode::from_setting(&settings.package_switch_mode),
    };
    let activation = activation::activate(tx.conn(), &grant, now).await?;
    let done = Fulfilment {
        effect: activation.effect.as_str(),
        user_package_id: Some(activation.user_package_id),
        credit_amount: value,
        flag: None,
        granted_days: Some(package.duration_days),
    };
    if pricing::claim(tx.conn(), order.id, now).await? == Claim::Exhausted {
        return Err(Error::conflict("coupon_used_up", "this coupon has just been used up"));
    }
    let order = mark_fulfilled(tx.conn(), order.id, &done, now).await?;
    tx.commit().await?;
    crate::domain::billing::user_changed(env, user_id).await;
    Ok((order, activation))
}

/// Creates a pending gateway order for a package (stock is taken only when it is paid).
pub async fn create_credit_order(env: Env<'_>, user_id: i64, package_id: i64) -> Result<Order> {
    create_credit_order_coupon(env, user_id, package_id, None).await
}

/// [`create_credit_order`] with an optional coupon: the order asks for the discounted
/// price; the coupon use is counted when the payment arrives.
pub async fn create_credit_order_coupon(
    env: Env<'_>,
    user_id: i64,
    package_id: i64,
    coupon: Option<&str>,
) -> Result<Order> {
    let settings = env.settings.get().await?;
    orders::ensure_payments_usable(&settings.credit)?;
    let package = buyable_package(env, package_id, user_id).await?;
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let (price, quote) = priced(tx.conn(), &package, user_id, coupon, now).await?;
    let new = NewOrder {
        user_id,
        kind: kind::PACKAGE,
        package_id: Some(package.id),
        amount: price,
        credit_amount: Money::ZERO,
        pay_method: "credit",
        pay_type: Some(&settings.credit.pay_type),
        subject: &package.name,
        ttl: Duration::minutes(settings.credit.order_ttl_minutes),
    };
    let order = orders::insert(tx.conn(), &new, now).await?;
    let order = match &quote {
        Some(quote) => {
            pricing::attach(tx.conn(), order.id, quote).await?;
            Order { list_amount: quote.list_price.micros(), ..order }
        }
        None => order,
    };
    tx.commit().await?;
    Ok(order)
}

/// Who grants or ends, for the ledger and audit trail.
#[derive(Debug, Clone)]
pub struct AdminAction {
    pub actor_id: i64,
    pub ip: Option<String>,
}

/// Gives a package without payment. A grant queues behind a current package, or starts
/// beside it when packages stack (`package_switch_mode = "stack"`, as purchases do); it
/// never replaces something paid for and does not consume stock. It leaves a
/// zero-amount ledger entry and an audit record.
pub async fn grant(env: Env<'_>, by: &AdminAction, user_id: i64, package_id: i64) -> Result<UserPackage> {
    let package = super::find(env.db, package_id).await?.ok_or(Error::NotFound("package"))?;
    let settings = env.settings.get().await?;
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let grant = Grant {
        user_id,
        package: &package,
        order_id: None,
        paid_amount: Money::ZERO,
        source: "grant",
        mode: SwitchMode::for_gift(&settings.package_switch_mode),
    };
    let activation = activation::activate(tx.conn(), &grant, now).await?;
    let balance: i64 =
        sqlx::query_scalar("SELECT balance FROM users WHERE id = $1").bind(user_id).fetch_one(tx.conn()).await?;
    let reference = format!("package:{}", package.id);
    let details = EntryDetails {
        reference: Some(&reference),
        note: Some(&package.name),
        actor_id: Some(by.actor_id),
        user_package_id: Some(activation.user_package_id),
        ..Default::default()
    };
    ledger::record(
        tx.conn(),
        user_id,
        ledger::kind::PACKAGE_GRANT,
        Money::ZERO,
        Money::from_micros(balance),
        &details,
        now,
    )
    .await?;
    let row =
        activation::find_on(tx.conn(), activation.user_package_id).await?.ok_or(Error::NotFound("user package"))?;
    let event = AuditEvent {
        actor_id: Some(by.actor_id),
        action: "package.grant",
        target: Some(format!("user:{user_id}")),
        before: None,
        after: Some(json!({"package_id": package.id, "user_package_id": row.id, "effect": activation.effect})),
        ip: by.ip.clone(),
    };
    audit::record(tx.conn(), &event, now).await?;
    tx.commit().await?;
    Ok(row)
}

/// Ends a user's package now (no credit; adjust the balance separately if owed).
pub async fn end(env: Env<'_>, by: &AdminAction, user_id: i64, user_package_id: i64) -> Result<UserPackage> {
    let now = env.now();
    let mut tx = env.db.begin().await?;
    let row = activation::find_on(tx.conn(), user_package_id)
        .await?
        .filter(|r| r.user_id == user_id)
        .ok_or(Error::NotFound("user package"))?;
    let running = row.status == activation::status::ACTIVE || row.status == activation::status::QUEUED;
    if !running || !activation::terminate(tx.conn(), &row, activation::status::ENDED, now).await? {
        return Err(Error::conflict("package_not_running", format!("this package is already {}", row.status)));
    }
    // Every allowance change leaves a ledger row, also one that moves no money: the
    // user's history shows when and by whom the package stopped.
    let reference = format!("user_package:{}", row.id);
    let details = EntryDetails {
        reference: Some(&reference),
        note: Some(&row.name),
        actor_id: Some(by.actor_id),
        user_package_id: Some(row.id),
        ..Default::default()
    };
    ledger::change_balance(tx.conn(), user_id, ledger::kind::PACKAGE_END, Money::ZERO, Overdraft::Allow, &details, now)
        .await?;
    let event = AuditEvent {
        actor_id: Some(by.actor_id),
        action: "package.end",
        target: Some(format!("user:{user_id}")),
        before: Some(json!({"user_package_id": row.id, "status": row.status})),
        after: Some(json!({"status": activation::status::ENDED})),
        ip: by.ip.clone(),
    };
    audit::record(tx.conn(), &event, now).await?;
    let ended = activation::find_on(tx.conn(), user_package_id).await?.ok_or(Error::NotFound("user package"))?;
    tx.commit().await?;
    crate::domain::billing::user_changed(env, user_id).await;
    Ok(ended)
}
