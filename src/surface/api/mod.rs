//! The JSON API under `/api`: thin handlers over the domain modules, one file per area.
//! Errors leave as `{"error": {"code", "message"}}` through [`error::ApiError`].

pub mod accounts;
pub mod admin_users;
pub mod announcements;
pub mod audit;
pub mod billing;
pub mod coupons;
pub mod error;
pub mod extract;
pub mod keys;
pub mod packages;
pub mod pagination;
pub mod payments;
pub mod prices;
pub mod redemption;
pub mod settings;
pub mod upstreams;

use axum::Router;
use serde::{Deserialize, Deserializer};

use crate::foundation::error::Error;
use crate::runtime::state::AppState;

/// Every `/api` route, one area per line.
#[rustfmt::skip]
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(accounts::router())
        .merge(keys::router())
        .merge(admin_users::router())
        .merge(settings::router())
        .merge(billing::router())
        .merge(packages::router())
        .merge(payments::router())
        .merge(upstreams::router())
        .merge(prices::router())
        .merge(audit::router())
        .merge(redemption::router())
        .merge(announcements::router())
        .merge(coupons::router())
}

/// The JSON answer for an unknown `/api` path.
pub fn not_found() -> error::ApiError {
    error::ApiError(Error::NotFound("route"))
}

/// For PATCH bodies: absent field = `None`, explicit `null` = `Some(None)`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
