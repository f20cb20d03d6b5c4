//! Package redemption codes: the bridge to [`crate::domain::packages::activation`].
//!
//! A redeemed package is activated like an admin grant: source `redeem`, nothing paid
//! (`paid_amount` 0, so no prorated credit can ever come from it), and it always queues
//! behind a current package instead of replacing something the user paid for. Codes may
//! name a package that is not on sale (disabled), so admins can hand out private plans.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use crate::domain::ledger::{self, EntryDetails, Overdraft};
use crate::domain::packages::activation::{self, Effect, SwitchMode};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// Who receives which package, and the ledger reference of the redemption.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub user_id: i64,
    pub package_id: i64,
    pub reference: &'a str,
}

/// What activating a redeemed package did.
#[derive(Debug, Clone)]
pub struct Activated {
    pub user_package_id: i64,
    pub package_name: String,
    pub effect: Effect,
}

/// Checks that a batch may grant `package_id` (it must exist).
pub async fn check_package(conn: &mut AnyConnection, package_id: i64) -> Result<()> {
    match crate::domain::packages::find_on(conn, package_id).await? {
        Some(_) => Ok(()),
        None => Err(Error::validation("package_id", "no such package")),
    }
}

/// Activates the package for the user (source `redeem`) and leaves a zero-amount
/// `redeem` ledger entry pointing at the user package, on the caller's transaction.
pub async fn activate(conn: &mut AnyConnection, grant: &Grant<'_>, now: DateTime<Utc>) -> Result<Activated> {
    let package = crate::domain::packages::find_on(conn, grant.package_id).await?.ok_or(Error::NotFound("package"))?;
    let package_grant = activation::Grant {
        user_id: grant.user_id,
        package: &package,
        order_id: None,
        paid_amount: Money::ZERO,
        source: "redeem",
        mode: SwitchMode::Queue,
    };
    let done = activation::activate(conn, &package_grant, now).await?;
    let details = EntryDetails {
        reference: Some(grant.reference),
        note: Some(&package.name),
        user_package_id: Some(done.user_package_id),
        ..Default::default()
    };
    ledger::change_balance(conn, grant.user_id, ledger::kind::REDEEM, Money::ZERO, Overdraft::Refuse, &details, now)
        .await?;
    Ok(Activated { user_package_id: done.user_package_id, package_name: package.name, effect: done.effect })
}
