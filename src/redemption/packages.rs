//! Package redemption codes: the bridge to the packages module.
//!
//! The packages module (branch `pay`) is not in this build yet, so package codes are
//! refused when a batch is created (422 on `package_id`) instead of pretending to work.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use crate::error::{Error, Result};

/// Who receives which package, and the ledger reference of the redemption.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub user_id: i64,
    pub package_id: i64,
    pub reference: &'a str,
}

/// Checks that a batch may grant `package_id`.
pub async fn check_package(_conn: &mut AnyConnection, _package_id: i64) -> Result<()> {
    Err(Error::validation("package_id", "package codes are not available yet: this build has no package activation"))
}

/// Activates the package for the user (source `redeem`); returns the user package id.
pub async fn activate(_conn: &mut AnyConnection, grant: &Grant<'_>, _now: DateTime<Utc>) -> Result<i64> {
    Err(Error::internal(format!("package code {} cannot be activated in this build", grant.reference)))
}
