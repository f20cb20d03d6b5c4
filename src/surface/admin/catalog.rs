//! What is sold and where it is served from: upstreams and model prices (each write
//! reloads the proxy's catalog at once) and packages. These stores commit on their own,
//! so each write is audited right after it (views carry no credential).

use super::Actor;
use crate::domain::audit::{self, Change};
use crate::domain::packages::{self, Package, PackageInput};
use crate::domain::proxy::pricing::{self, ModelPrice};
use crate::domain::proxy::upstreams::{self, Upstream, UpstreamInput};
use crate::foundation::error::{Error, Result};
use crate::runtime::state::AppState;

/// After a write to upstreams or prices: the catalog is reloaded and the change audited.
async fn catalog_changed(state: &AppState, actor: &Actor, change: Change<'_>) -> Result<()> {
    state.catalog.invalidate();
    audit::record_change(&state.db, actor, change, state.now()).await
}

/// Adds an upstream provider.
pub async fn create_upstream(state: &AppState, actor: &Actor, input: UpstreamInput) -> Result<Upstream> {
    let created = upstreams::create(&state.db, &state.secrets, input, state.now()).await?;
    let change =
        Change::new("upstream.create", format!("upstream:{}", created.id)).after(&created.view(state.calendar()));
    catalog_changed(state, actor, change).await?;
    Ok(created)
}

/// Replaces the settings of upstream `current` (as the caller read it) with `input`.
pub async fn update_upstream(
    state: &AppState,
    actor: &Actor,
    current: &Upstream,
    input: UpstreamInput,
) -> Result<Upstream> {
    let calendar = state.calendar();
    let before = current.view(calendar);
    let updated = upstreams::update(&state.db, &state.secrets, current.id, input, state.now()).await?;
    let change = Change::new("upstream.update", format!("upstream:{}", current.id))
        .before(&before)
        .after(&updated.view(calendar));
    catalog_changed(state, actor, change).await?;
    Ok(updated)
}

/// Deletes an upstream provider.
pub async fn delete_upstream(state: &AppState, actor: &Actor, id: i64) -> Result<()> {
    let before = upstreams::find(&state.db, &state.secrets, id).await?.view(state.calendar());
    upstreams::delete(&state.db, id).await?;
    catalog_changed(state, actor, Change::new("upstream.delete", format!("upstream:{id}")).before(&before)).await
}

/// Writes a model's price: `price.update` over `current`, or `price.create` when the
/// model had none (a creation has no before, not a JSON null).
pub async fn save_price(
    state: &AppState,
    actor: &Actor,
    current: Option<&ModelPrice>,
    price: &ModelPrice,
) -> Result<()> {
    let action = match current {
        Some(_) => pricing::update(&state.db, price, state.now()).await.map(|()| "price.update")?,
        None => pricing::create(&state.db, price, state.now()).await.map(|()| "price.create")?,
    };
    let change = Change {
        before: current.and_then(audit::snapshot),
        ..Change::new(action, format!("price:{}", price.model)).after(price)
    };
    catalog_changed(state, actor, change).await
}

/// Deletes a model's price.
pub async fn delete_price(state: &AppState, actor: &Actor, model: &str) -> Result<()> {
    let current = pricing::find(&state.db, model).await?.ok_or(Error::NotFound("price"))?;
    pricing::delete(&state.db, model).await?;
    catalog_changed(state, actor, Change::new("price.delete", format!("price:{model}")).before(&current)).await
}

/// Audits a write to a package (`None` before for a creation).
async fn package_changed(
    state: &AppState,
    actor: &Actor,
    action: &str,
    before: Option<&Package>,
    after: &Package,
) -> Result<()> {
    let calendar = state.calendar();
    let change = Change {
        before: before.and_then(|b| audit::snapshot(&b.view(calendar))),
        ..Change::new(action, format!("package:{}", after.id)).after(&after.view(calendar))
    };
    audit::record_change(&state.db, actor, change, state.now()).await
}

/// Adds a package to the catalog.
pub async fn create_package(state: &AppState, actor: &Actor, input: &PackageInput) -> Result<Package> {
    let package = packages::create(&state.db, input, state.now()).await?;
    package_changed(state, actor, "package.create", None, &package).await?;
    Ok(package)
}

/// Replaces the settings of package `before` (as the caller read it) with `input`.
pub async fn update_package(
    state: &AppState,
    actor: &Actor,
    before: &Package,
    input: &PackageInput,
) -> Result<Package> {
    let after = packages::update(&state.db, before.id, input, state.now()).await?;
    package_changed(state, actor, "package.update", Some(before), &after).await?;
    Ok(after)
}

/// Takes package `before` off sale (holders keep what they bought).
pub async fn disable_package(state: &AppState, actor: &Actor, before: &Package) -> Result<Package> {
    let after = packages::disable(&state.db, before.id, state.now()).await?;
    package_changed(state, actor, "package.disable", Some(before), &after).await?;
    Ok(after)
}
